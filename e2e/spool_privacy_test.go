package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/testutil"
	"github.com/deadlabour/deadlabour/schema"
	"github.com/deadlabour/deadlabour/sink"
)

// TestSpoolHoldsNoSecrets: prompts, completions, API keys and the admin
// token sent through the proxy and the event API reach no byte of the
// spool directory and no log line. The daemon runs without InfluxDB, so
// that every record stays in the spool file (a node whose InfluxDB is
// down keeps them there for days); the search is first shown to find
// what is stored: each request's id and model, in the raw bytes.
func TestSpoolHoldsNoSecrets(t *testing.T) {
	fake, err := fakeupstream.Start(context.Background(), fakeupstream.Options{DefaultMaxTokens: 12})
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	dir := t.TempDir()
	spool := filepath.Join(dir, "spool")
	tokenFile := filepath.Join(dir, "admin.token")
	os.WriteFile(tokenFile, []byte(adminToken+"\n"), 0o600)
	cfg := daemonConfig("", "deadlabour/autogen", spool, fake.URL(),
		"admin:\n  listen: 127.0.0.1:0\n  token_file: "+tokenFile+"\n")
	// daemonConfig's admin section is replaced by the one with the token.
	cfg = strings.Replace(cfg, "admin:\n  listen: 127.0.0.1:0\n", "", 1)
	d := startDaemon(t, cfg, "h100:1")

	key := "sk-spool-privacy-" + fmt.Sprint(time.Now().UnixNano())
	secrets := []string{key, adminToken}
	var stored []string // what must be found in the spool's bytes
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	for i, stream := range []bool{false, true, false} {
		id := fmt.Sprintf("spool-privacy-%d", i)
		model := fmt.Sprintf("model-marker-%d", i)
		prompt := fmt.Sprintf("PROMPT-SECRET-%d-%d tell me about the harbour", i, time.Now().UnixNano())
		secrets = append(secrets, prompt)
		stored = append(stored, id, model)
		body, _ := json.Marshal(map[string]any{"model": model, "stream": stream,
			"messages": []map[string]string{{"role": "user", "content": prompt}}})
		req, _ := http.NewRequest(http.MethodPost, d.proxyURL("up")+"/v1/chat/completions", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("X-Request-Id", id)
		status, answer := testutil.Do(t, client, req)
		if status != http.StatusOK {
			t.Fatalf("%s: %d %s", id, status, answer)
		}
		completion := completionText(t, answer, stream)
		if len(strings.Fields(completion)) < 12 {
			t.Fatalf("%s: completion %q: want the 12 words asked for", id, completion)
		}
		secrets = append(secrets, completion)
	}

	postEvent := func(body string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, d.adminURL()+"/v1/requests", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+adminToken)
		if status, b := testutil.Do(t, client, req); status != http.StatusAccepted {
			t.Fatalf("event API: %d %s", status, b)
		}
	}
	ts := func(d time.Duration) string { return time.Now().Add(d).UTC().Format(time.RFC3339Nano) }
	postEvent(`{"type":"begin","id":"evt-spool-1","upstream":"up","model":"model-marker-evt","tenant":"` + key + `","start":"` + ts(-200*time.Millisecond) + `"}`)
	postEvent(`{"type":"end","id":"evt-spool-1","upstream":"up","end":"` + ts(0) + `","prompt_tokens":7,"completion_tokens":3}`)
	stored = append(stored, "evt-spool-1", "model-marker-evt")

	// Every record is in the spool before the daemon stops.
	testutil.WaitFor(t, "the four records in GET /v1/spool", 10*time.Second, func() bool {
		req, _ := http.NewRequest(http.MethodGet, d.adminURL()+"/v1/spool?measurement="+schema.MeasurementRequest, nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		_, b := testutil.Do(t, client, req)
		return strings.Count(string(b), schema.MeasurementRequest+",") == 4
	})
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	records := 0
	for line, err := range sink.ReadSpool(spool) {
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, schema.MeasurementRequest+",") {
			records++
		}
	}
	if records != 4 {
		t.Fatalf("%d records in the spool after the stop, want 4", records)
	}

	var spooled []byte
	files := 0
	if err := filepath.WalkDir(spool, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		spooled = append(spooled, b...)
		files++
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, s := range stored {
		if !strings.Contains(string(spooled), s) {
			t.Errorf("%q, which is stored, is not found in the %d bytes of %d spool files: the search sees nothing", s, len(spooled), files)
		}
	}
	logs := d.log.String()
	if !strings.Contains(logs, "no InfluxDB configured") {
		t.Errorf("the captured log lacks the daemon's start lines:\n%s", logs)
	}
	for _, s := range secrets {
		if strings.Contains(string(spooled), s) {
			t.Errorf("%q is in a spool file", s)
		}
		if strings.Contains(logs, s) {
			t.Errorf("%q is in a log line", s)
		}
	}
}

// completionText is the generated text of an OpenAI chat answer, whole or
// streamed.
func completionText(t *testing.T, answer []byte, stream bool) string {
	t.Helper()
	type choice struct {
		Message struct{ Content string } `json:"message"`
		Delta   struct{ Content string } `json:"delta"`
	}
	var out strings.Builder
	add := func(doc []byte) {
		var a struct{ Choices []choice }
		if err := json.Unmarshal(doc, &a); err != nil {
			t.Fatalf("answer %q: %v", doc, err)
		}
		for _, c := range a.Choices {
			out.WriteString(c.Message.Content + c.Delta.Content)
		}
	}
	if !stream {
		add(answer)
		return out.String()
	}
	sc := bufio.NewScanner(strings.NewReader(string(answer)))
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok && data != "[DONE]" {
			add([]byte(data))
		}
	}
	return out.String()
}

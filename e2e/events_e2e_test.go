package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/internal/testutil"
	"github.com/deadlabour/deadlabour/schema"
)

const adminToken = "admin-token-3f9a1c7e55d2b8e0"

// TestEventAPIAndPrivacy runs the daemon with a proxied upstream and the
// event API behind a bearer token, against a real InfluxDB: proxied
// requests of every native dialect and event-API requests become records
// with the right tokens; then every log line, every record and every file
// in the spool directory is searched for the prompts, completions and keys
// used: none may appear.
func TestEventAPIAndPrivacy(t *testing.T) {
	influx := influxtest.Start(t)
	fake, err := fakeupstream.Start(context.Background(), fakeupstream.Options{DefaultMaxTokens: 6, TokenDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	dir := t.TempDir()
	spool := filepath.Join(dir, "spool")
	tokenFile := filepath.Join(dir, "admin.token")
	os.WriteFile(tokenFile, []byte(adminToken+"\n"), 0o600)
	yaml := fmt.Sprintf(`node: events
gpu:
  interval: 50ms
  report_interval: 1s
admin:
  listen: 127.0.0.1:0
  token_file: %s
influx:
  url: %s
  bucket: %s
  flush_interval: 100ms
spool:
  dir: %s
upstreams:
  - name: svc
    listen: 127.0.0.1:0
    target: %s
    gpus: [0]
`, tokenFile, influx.URL(), influx.Bucket(), spool, fake.URL())
	d := startDaemon(t, yaml, "h100:2")
	proxy := d.proxyURL("svc")
	admin := "http://" + d.AdminAddr()

	var secrets []string
	key := "sk-privacy-key-" + fmt.Sprint(time.Now().UnixNano())
	secrets = append(secrets, key, adminToken)
	type call struct{ path, body string }
	calls := []call{
		{"/v1/chat/completions", `{"model":"m","stream":true,"messages":[{"role":"user","content":"SECRET-PROMPT-chat tell me everything"}]}`},
		{"/v1/completions", `{"model":"m","prompt":"SECRET-PROMPT-text once upon a time"}`},
		{"/v1/embeddings", `{"model":"m","input":"SECRET-PROMPT-embed some words"}`},
		{"/api/chat", `{"model":"m","messages":[{"role":"user","content":"SECRET-PROMPT-ollama why is the sky"}]}`},
		{"/api/generate", `{"model":"m","stream":false,"prompt":"SECRET-PROMPT-ollama-generate hello"}`},
		{"/generate", `{"inputs":"SECRET-PROMPT-tgi what is","parameters":{"details":true}}`},
		{"/generate_stream", `{"inputs":"SECRET-PROMPT-tgi-stream what is"}`},
		{"/completion", `{"prompt":"SECRET-PROMPT-llamacpp building a website","stream":true}`},
	}
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	for i, c := range calls {
		secrets = append(secrets, c.body[strings.Index(c.body, "SECRET"):strings.Index(c.body, "SECRET")+24])
		req, _ := http.NewRequest("POST", proxy+c.path, strings.NewReader(c.body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("X-Request-Id", fmt.Sprintf("proxied-%d", i))
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("%s: %d %s", c.path, res.StatusCode, body)
		}
		// The whole generated text of the fake's answer (6 words).
		for _, line := range strings.Split(string(body), "\n") {
			if i := strings.Index(line, `" `); i >= 0 && len(line) > i+20 {
				secrets = append(secrets, line[i+1:i+20])
			}
		}
	}

	// The event API: a token is required, except on the probes.
	postEvents := func(body, token string) (int, string) {
		req, _ := http.NewRequest("POST", admin+"/v1/requests", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	now := func() string { return time.Now().UTC().Format(time.RFC3339Nano) }
	begin := `{"type":"begin","id":"evt-1","upstream":"svc","model":"tgi-native","start":"` + now() + `"}`
	if status, body := postEvents(begin, ""); status != 401 || !strings.Contains(body, `"param":"Authorization"`) {
		t.Errorf("no token: %d %s, want 401 naming Authorization", status, body)
	}
	if status, body := postEvents(begin, "wrong-token-wrong-token"); status != 401 {
		t.Errorf("wrong token: %d %s", status, body)
	}
	if res, err := client.Get(admin + "/healthz"); err != nil || res.StatusCode != 200 {
		t.Errorf("healthz without a token: %v %v", res, err)
	} else {
		res.Body.Close()
	}
	if status, body := postEvents(begin, adminToken); status != 202 {
		t.Fatalf("begin: %d %s", status, body)
	}
	// The request runs while the simulated GPUs are metered: two polls
	// after the begin, one whole poll interval lies inside it.
	polls := d.gathered(t)["deadlabour_engine_poll_duration_seconds_count"]
	testutil.WaitFor(t, "two polls while evt-1 runs", 10*time.Second, func() bool {
		return d.gathered(t)["deadlabour_engine_poll_duration_seconds_count"] >= polls+2
	})
	end := `{"type":"end","id":"evt-1","upstream":"svc","end":"` + now() + `","prompt_tokens":40,"completion_tokens":8}`
	if status, body := postEvents(end, adminToken); status != 202 {
		t.Fatalf("end: %d %s", status, body)
	}
	start := time.Now().Add(-100 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	span := `[{"id":"evt-2","upstream":"batchjob","gpus":[1],"start":"` + start + `","end":"` + now() + `","completion_tokens":3,"usage_source":"estimated"}]`
	if status, body := postEvents(span, adminToken); status != 202 {
		t.Fatalf("span: %d %s", status, body)
	}
	if status, body := postEvents(`{"id":"evt-3","upstream":"batchjob","start":"`+start+`","end":"`+now()+`"}`, adminToken); status != 422 ||
		!strings.Contains(body, `"param":"gpus"`) {
		t.Errorf("unconfigured upstream without gpus: %d %s", status, body)
	}
	influx.WaitCount(t, schema.MeasurementRequest, "", len(calls)+2, 15*time.Second) // settled and delivered
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}

	rows := influx.Rows(t, `SELECT * FROM deadlabour_request`)
	if len(rows) != len(calls)+2 {
		t.Fatalf("%d records, want %d", len(rows), len(calls)+2)
	}
	byID := map[string]influxtest.Row{}
	for _, r := range rows {
		id, _ := r.String("request_id")
		byID[id] = r
	}
	for i := range calls {
		r := byID[fmt.Sprintf("proxied-%d", i)]
		want := "reported" // include_usage added, or the dialect's own counts
		if calls[i].path == "/generate_stream" {
			want = "estimated" // no details asked for: counted from the stream
		}
		if src, _ := r.String("usage_source"); src != want {
			t.Errorf("%s: usage_source %q, want %s", calls[i].path, src, want)
		}
	}
	e1 := byID["evt-1"]
	if p, _ := e1.Int("prompt_tokens"); p != 40 {
		t.Errorf("evt-1: prompt_tokens %d, want 40", p)
	}
	if g, _ := e1.Float("gpu_energy_j"); g <= 0 {
		t.Errorf("evt-1: begun before it ran, yet no GPU energy (%v)", g)
	}
	if tr, _ := e1.Bool("history_truncated"); tr {
		t.Error("evt-1 is history_truncated, though begun on time")
	}
	if gpus, _ := byID["evt-2"].String("gpus"); gpus != "1" {
		t.Errorf("evt-2 ran on GPUs %q, want 1", gpus)
	}

	// Privacy: logs, records of every measurement, and spool files.
	var written bytes.Buffer
	written.WriteString(d.log.String())
	for _, m := range []string{"deadlabour_request", "deadlabour_idle", "deadlabour_gpu", "deadlabour_health"} {
		for _, s := range influx.Query(t, "SELECT * FROM "+m) {
			b, _ := json.Marshal(s)
			written.Write(b)
		}
	}
	files := 0
	filepath.WalkDir(spool, func(path string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			b, _ := os.ReadFile(path)
			written.Write(b)
			files++
		}
		return nil
	})
	if files == 0 || !strings.Contains(written.String(), "evt-1") {
		t.Fatalf("searched %d spool files and %d bytes: too little to search", files, written.Len())
	}
	if len(secrets) < 10 {
		t.Fatalf("only %d secrets to search for", len(secrets))
	}
	for _, s := range secrets {
		if strings.Contains(written.String(), s) {
			t.Errorf("%q appears in a log line, a record or a spool file", s)
		}
	}
}

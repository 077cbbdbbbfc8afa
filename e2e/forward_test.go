package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/influxtest"
)

// TestForwardingSidecar runs a node daemon (simulated GPUs, the ledger,
// InfluxDB) and, in front of an inference server, a sidecar daemon in
// forwarding mode that names its pod's GPU from the environment: requests
// through the sidecar become the node daemon's records, with the tokens the
// server reported and energy of the GPU named; the sidecar writes nothing.
func TestForwardingSidecar(t *testing.T) {
	influx := influxtest.Start(t)
	fake, err := fakeupstream.Start(context.Background(), fakeupstream.Options{DefaultMaxTokens: 6, TokenDelay: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "admin.token")
	secretFile := filepath.Join(dir, "tenant.key")
	os.WriteFile(tokenFile, []byte(adminToken+"\n"), 0o600)
	os.WriteFile(secretFile, []byte("0123456789abcdef0123456789abcdef"), 0o600)
	node := startDaemon(t, fmt.Sprintf(`node: gpu-node
gpu:
  interval: 50ms
  report_interval: 1s
attribution:
  tenant_secret_file: %s
admin:
  listen: 127.0.0.1:0
  token_file: %s
  event_tenant_raw: true
influx:
  url: %s
  bucket: %s
  flush_interval: 100ms
spool:
  dir: %s
`, secretFile, tokenFile, influx.URL(), influx.Bucket(), filepath.Join(dir, "node")), "h100:2")
	gpu := node.GPUs()[1]
	t.Setenv("DEADLABOUR_TEST_VISIBLE_DEVICES", gpu.UUID)

	sidecar := startDaemon(t, fmt.Sprintf(`node: vllm-pod
attribution:
  tenant_secret_file: %s
admin:
  listen: 127.0.0.1:0
spool:
  dir: %s
upstreams:
  - name: vllm
    listen: 127.0.0.1:0
    target: %s
    gpus: ["env:DEADLABOUR_TEST_VISIBLE_DEVICES"]
forward:
  url: http://%s
  token_file: %s
  flush_interval: 50ms
`, secretFile, filepath.Join(dir, "sidecar"), fake.URL(), node.AdminAddr(), tokenFile), "")

	want := map[string][2]float64{} // request id -> prompt, completion tokens as answered
	for i := range 4 {
		id := fmt.Sprintf("fwd-%d", i)
		status, body := call(t, sidecar.proxyURL("vllm"), []byte(`{"model":"m","messages":[{"role":"user","content":"hello there `+strings.Repeat("word ", i)+`"}]}`), id)
		if status != http.StatusOK {
			t.Fatalf("%s: %d %s", id, status, body)
		}
		var answer struct {
			Usage struct {
				Prompt     float64 `json:"prompt_tokens"`
				Completion float64 `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(body, &answer); err != nil {
			t.Fatal(err)
		}
		want[id] = [2]float64{answer.Usage.Prompt, answer.Usage.Completion}
	}
	// The sidecar flushes its queue as it stops, the node daemon settles
	// and writes.
	if err := sidecar.stop(); err != nil {
		t.Fatal(err)
	}
	if err := node.stop(); err != nil {
		t.Fatal(err)
	}
	rows := influx.Rows(t, `SELECT request_id, prompt_tokens, completion_tokens, gpu_energy_j, gpus, host FROM deadlabour_request`)
	if len(rows) != len(want) {
		t.Fatalf("%d records, want %d: %v", len(rows), len(want), rows)
	}
	for _, r := range rows {
		id, _ := r.String("request_id")
		w, ok := want[id]
		p, _ := r.Float("prompt_tokens")
		c, _ := r.Float("completion_tokens")
		e, _ := r.Float("gpu_energy_j")
		gpus, _ := r.String("gpus")
		host, _ := r.String("host")
		switch {
		case !ok:
			t.Errorf("unexpected record %v", r)
		case w[0] <= 0 || p != w[0] || c != w[1]:
			t.Errorf("%s: tokens %v/%v, want %v/%v", id, p, c, w[0], w[1])
		case e <= 0:
			t.Errorf("%s: no GPU energy", id)
		case gpus != gpu.ID:
			t.Errorf("%s: gpus %q, want %q (the GPU named by the sidecar)", id, gpus, gpu.ID)
		case host != "gpu-node":
			t.Errorf("%s: host %q, want the node daemon's", id, host)
		}
	}
	if !strings.Contains(sidecar.log.String(), "forwarding mode") {
		t.Error("the sidecar did not log its forwarding mode")
	}
}

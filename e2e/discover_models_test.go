package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/internal/testutil"
)

// With no models[] at all, the models the upstream lists are tags in
// InfluxDB (discover_models, on by default); a model it does not list is
// tagged other, its name in model_raw, and logged once however often it
// is asked for.
func TestDiscoverModelsEndToEnd(t *testing.T) {
	influx := influxtest.Start(t)
	fake, err := fakeupstream.Start(context.Background(), fakeupstream.Options{Models: []string{"listed-model"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	d := startDaemon(t, fmt.Sprintf(`node: e2e
gpu:
  interval: 50ms
admin:
  listen: ""
influx:
  url: %s
  bucket: %s
  flush_interval: 100ms
spool:
  dir: %s
upstreams:
  - name: up
    listen: 127.0.0.1:0
    target: %s
    gpus: [0]
`, influx.URL(), influx.Bucket(), t.TempDir(), fake.URL()), "h100:1")
	testutil.WaitFor(t, "the upstream's models", 10*time.Second, func() bool {
		return strings.Contains(d.log.String(), "models the upstream lists are tagged as named")
	})
	for i, model := range []string{"listed-model", "unlisted-model", "listed-model", "unlisted-model"} {
		body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}],"max_tokens":4}`, model)
		if status, got := call(t, d.proxyURL("up"), []byte(body), fmt.Sprintf("dm-%d", i)); status != 200 {
			t.Fatalf("%s: %d %s", model, status, got)
		}
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, r := range influx.Rows(t, `SELECT count(request_id) AS n FROM deadlabour_request GROUP BY model`) {
		model, _ := r.String("model")
		got[model], _ = r.Int("n")
	}
	if got["listed-model"] != 2 || got["other"] != 2 || len(got) != 2 {
		t.Errorf("records by model tag: %v, want listed-model 2, other 2", got)
	}
	raw := influx.Rows(t, `SELECT model_raw FROM deadlabour_request WHERE model = 'other'`)
	for _, r := range raw {
		if m, _ := r.String("model_raw"); m != "unlisted-model" {
			t.Errorf("model_raw %q", m)
		}
	}
	if n := strings.Count(d.log.String(), "model=unlisted-model"); n != 1 {
		t.Errorf("%d log lines name unlisted-model, want 1:\n%s", n, d.log.String())
	}
}

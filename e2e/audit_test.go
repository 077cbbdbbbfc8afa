package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/admin"
	"github.com/deadlabour/deadlabour/cmd/deadlabourd/cli"
	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/internal/testutil"
)

// End to end: records of a running daemon are served by the admin
// listener, equal to what InfluxDB got, and `deadlabourd audit` explains
// them.
// explainResponse is one record's answer of GET /v1/requests/{id}.
type explainResponse struct {
	Record  map[string]any    `json:"record"`
	Explain admin.Explanation `json:"explain"`
	SameID  int               `json:"same_id_records"` // the one-record answer's
}

func TestAuditEndToEnd(t *testing.T) {
	influx := influxtest.Start(t)
	fake, err := fakeupstream.Start(context.Background(), fakeupstream.Options{TokenDelay: 2 * time.Millisecond, DefaultMaxTokens: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	yaml := fmt.Sprintf(`node: audit-e2e
gpu:
  interval: 50ms
  report_interval: 1s
admin:
  listen: 127.0.0.1:0
attribution:
  weighting: tokens
  settle_delay: 100ms
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
    gpus: [0, 1]
`, influx.URL(), influx.Bucket(), t.TempDir(), fake.URL())
	d := startDaemon(t, yaml, "h100:2")
	admin := d.AdminAddr()
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		ids[i] = fmt.Sprintf("audit-%02d", i)
		body := fmt.Sprintf(`{"model":"m","stream":%v,"messages":[{"role":"user","content":"%s"}]}`, i%2 == 0, strings.Repeat("hello ", i+1))
		wg.Go(func() {
			if code, _ := call(t, d.proxyURL("up"), []byte(body), ids[i]); code != http.StatusOK {
				t.Errorf("%s: status %d", ids[i], code)
			}
		})
	}
	wg.Wait()
	answers := map[string][]byte{}
	for _, id := range ids {
		testutil.WaitFor(t, id+"'s admin.Explanation", 15*time.Second, func() bool {
			resp, err := http.Get("http://" + admin + "/v1/requests/" + id + "?explain=1")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return false
			}
			answers[id] = b
			return true
		})
	}
	var out, errb bytes.Buffer
	if code := cli.Run(context.Background(), []string{"audit", "--admin", admin, ids[0]}, &out, &errb); code != 0 {
		t.Fatalf("audit: exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"request audit-00", "weighting tokens", "device 0:", "device 1:", "device host:", "matches the record", "facility.pue",
		"PROMPT WEIGHT", "0.1 default", "attribution.prompt_token_weight (auto)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("audit output lacks %q:\n%s", want, out.String())
		}
	}
	if code := cli.Run(context.Background(), []string{"audit", "--admin", admin, "no-such-request"}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "not among") {
		t.Errorf("unknown id: exit %d, %s", code, errb.String())
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		var resp explainResponse
		if err := json.Unmarshal(answers[id], &resp); err != nil {
			t.Fatal(err)
		}
		if !resp.Explain.Matches {
			t.Errorf("%s: the recomputation does not match: %s", id, resp.Explain.Note)
		}
		rows := influx.Rows(t, fmt.Sprintf(`SELECT gpu_energy_j, loaded_it_energy_j, dead_labour_cost, weighting FROM deadlabour_request WHERE request_id = %s`, influxtest.QuoteString(id)))
		if len(rows) != 1 {
			t.Fatalf("%s: %d rows in InfluxDB", id, len(rows))
		}
		for _, k := range []string{"gpu_energy_j", "loaded_it_energy_j", "dead_labour_cost"} {
			v, _ := rows[0].Float(k)
			if resp.Record[k] != v {
				t.Errorf("%s: %s = %v from the admin API, %v in InfluxDB", id, k, resp.Record[k], v)
			}
		}
		if w, _ := rows[0].String("weighting"); w != "tokens" {
			t.Errorf("%s: weighting %q in InfluxDB", id, w)
		}
	}
}

package e2e

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/internal/testutil"
)

// TestBodyBudgetMetrics: a request whose body is still arriving holds the
// node's body budget (it declared a body of max_body_bytes, the whole
// 16 MiB budget); /metrics shows the bytes held,
// and a second request, finding no room within the wait, is answered 503
// and counted in deadlabour_proxy_body_budget_refused_total.
func TestBodyBudgetMetrics(t *testing.T) {
	influx := influxtest.Start(t)
	fake := startFake(t)
	d := startDaemon(t, daemonConfig(influx.URL(), influx.Bucket(), t.TempDir(), fake.URL(), "proxy:\n  max_buffered_bytes: 16MiB\n  budget_wait: 300ms\n"), "h100:2")
	if got := testutil.Scrape(t, d.adminURL())["deadlabour_proxy_body_budget_refused_total"]; got != 0 {
		t.Fatalf("refused at start = %v, want 0", got)
	}

	pr, pw := io.Pipe()
	first := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, d.proxyURL("up")+"/v1/chat/completions", pr)
		req.ContentLength = 16 << 20
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
		}
		first <- err
	}()
	pw.Write([]byte(`{"model":"m",`))
	testutil.WaitFor(t, "the first body to hold the budget", 10*time.Second, func() bool {
		return testutil.Scrape(t, d.adminURL())["deadlabour_proxy_body_budget_bytes"] == 16<<20
	})

	sent := time.Now()
	res, err := http.Post(d.proxyURL("up")+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"m","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	waited := time.Since(sent)
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("second request: %d, want 503", res.StatusCode)
	}
	// proxy.budget_wait reached the proxy: the 503 came after the
	// configured 300 ms, not the default 5 s.
	if waited < 300*time.Millisecond || waited >= 5*time.Second {
		t.Errorf("503 after %s, want after budget_wait 300ms and well before the default 5s", waited)
	}
	if got := testutil.Scrape(t, d.adminURL())["deadlabour_proxy_body_budget_refused_total"]; got != 1 {
		t.Errorf("refused = %v, want 1", got)
	}

	pw.CloseWithError(errors.New("the client gives up"))
	<-first
	testutil.WaitFor(t, "the budget to come back", 10*time.Second, func() bool {
		return testutil.Scrape(t, d.adminURL())["deadlabour_proxy_body_budget_bytes"] == 0
	})
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
}

// TestSlowBodyNotTruncated: a request whose body arrives after a pause
// longer than attribution.settle_delay (100 ms here) starts when its body
// is read and it is forwarded, not when it arrived: it is charged, and not
// flagged history_truncated.
func TestSlowBodyNotTruncated(t *testing.T) {
	influx := influxtest.Start(t)
	// 4 tokens 50 ms apart: the answer spans a few GPU intervals (50 ms).
	fake, err := fakeupstream.Start(t.Context(), fakeupstream.Options{DefaultMaxTokens: 4, TokenDelay: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	d := startDaemon(t, daemonConfig(influx.URL(), influx.Bucket(), t.TempDir(), fake.URL(), ""), "h100:1")
	body := `{"model":"m","max_tokens":4,"messages":[{"role":"user","content":"hello there"}]}`
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, d.proxyURL("up")+"/v1/chat/completions", pr)
	req.ContentLength = int64(len(body))
	req.Header.Set("X-Request-Id", "slow-body")
	go func() {
		pw.Write([]byte(body[:10]))
		time.Sleep(600 * time.Millisecond) // past the settle delay
		pw.Write([]byte(body[10:]))
		pw.Close()
	}()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", res.StatusCode)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	rows := influx.Rows(t, `SELECT "request_id", "status", "gpu_energy_j", "history_truncated", "duration_s" FROM "deadlabour_request"`)
	if len(rows) != 1 {
		t.Fatalf("%d records, want 1: %v", len(rows), rows)
	}
	r := rows[0]
	if r["request_id"] != "slow-body" || r["status"] != "200" {
		t.Errorf("record %v, want slow-body, 200", r)
	}
	if tr, _ := r.Bool("history_truncated"); tr {
		t.Errorf("history_truncated: the request was begun at its arrival, not when its body was read (record %v)", r)
	}
	if j, _ := r.Float("gpu_energy_j"); j <= 0 {
		t.Errorf("gpu_energy_j = %v, want a charge", r["gpu_energy_j"])
	}
	if s, _ := r.Float("duration_s"); s >= 0.6+0.15 {
		t.Errorf("duration_s = %v: it counts the body's upload", s)
	}
}

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/internal/testutil"
	"github.com/deadlabour/deadlabour/schema"
	"github.com/deadlabour/deadlabour/sink"
)

// daemonConfig is a small daemon config for the sink and admin tests: one
// upstream on GPU 0, fast polls, the admin API on a free port, backoff
// capped at 500 ms. influxURL "" means spool only; spoolKeys are more keys
// of the spool section (indented), which comes last.
func daemonConfig(influxURL, bucket, spoolDir, upstream, spoolKeys string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "node: chaos\ngpu:\n  interval: 50ms\n  report_interval: 1s\n")
	fmt.Fprintf(&b, "attribution:\n  settle_delay: 100ms\nadmin:\n  listen: 127.0.0.1:0\n")
	fmt.Fprintf(&b, "influx:\n  url: %q\n  bucket: %s\n  flush_interval: 100ms\n  backoff_max: 500ms\n  timeout: 2s\n", influxURL, bucket)
	fmt.Fprintf(&b, "upstreams:\n  - name: up\n    listen: 127.0.0.1:0\n    target: %s\n    gpus: [0]\n", upstream)
	fmt.Fprintf(&b, "spool:\n  dir: %s\n", spoolDir)
	b.WriteString(spoolKeys)
	return b.String()
}

func startFake(t testing.TB) *fakeupstream.Server {
	t.Helper()
	f, err := fakeupstream.Start(context.Background(), fakeupstream.Options{DefaultMaxTokens: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func (d *testDaemon) adminURL() string { return "http://" + d.AdminAddr() }

// complete sends one chat completion with request id id and reads the whole
// answer; nil once the client has it all (the request finished).
func complete(url, id string) error {
	body := `{"model":"m","max_tokens":4,"messages":[{"role":"user","content":"hello there"}]}`
	req, err := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", id, resp.Status)
	}
	return nil
}

// gathered is what /metrics would say, read in-process (after the admin
// listener closed).
func (d *testDaemon) gathered(t *testing.T) map[string]float64 {
	rec := httptest.NewRecorder()
	mux := http.NewServeMux()
	d.Observer().Register(mux)
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return testutil.ParseMetrics(t, rec.Body)
}

// TestAdminObservability: /metrics has the per-GPU power, energy and
// utilisation, the requests by upstream and status, the sink's counters and
// the collectors' health; /healthz and /readyz answer in JSON with reasons;
// a deadlabour_health point reaches InfluxDB with the agreed fields.
func TestAdminObservability(t *testing.T) {
	influx := influxtest.Start(t)
	fake := startFake(t)
	d := startDaemon(t, daemonConfig(influx.URL(), influx.Bucket(), t.TempDir(), fake.URL(), ""), "h100:2")
	for i := range 5 {
		if err := complete(d.proxyURL("up"), fmt.Sprintf("obs-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	influx.WaitCount(t, "deadlabour_request", "", 5, 10*time.Second)
	testutil.WaitFor(t, "the sink's counters", 10*time.Second, func() bool {
		return testutil.Scrape(t, d.adminURL())["deadlabour_sink_points_sent_total"] >= 5
	})

	m := testutil.Scrape(t, d.adminURL())
	for _, want := range []string{
		"deadlabour_gpu_power_watts{gpu=0}", "deadlabour_gpu_power_watts{gpu=1}",
		"deadlabour_gpu_utilization_ratio{gpu=0}", "deadlabour_gpu_memory_utilization_ratio{gpu=1}",
		"deadlabour_energy_joules_total{device=0,method=counter}", "deadlabour_energy_joules_total{device=host,method=modelled}",
		"deadlabour_requests_total{status=200,upstream=up}",
		"deadlabour_sink_spool_points{kind=cost}", "deadlabour_sink_spool_points{kind=telemetry}", "deadlabour_sink_spool_bytes",
		"deadlabour_sink_oldest_undelivered_seconds", "deadlabour_sink_points_sent_total",
		"deadlabour_sink_points_dropped_total{kind=telemetry,reason=spool_full}", "deadlabour_sink_points_dead_lettered_total{kind=cost}",
		"deadlabour_sink_write_duration_seconds_count{outcome=delivered}", "deadlabour_sink_delivery_latency_seconds_count",
		"deadlabour_sink_state{state=ok}", "deadlabour_collector_up{collector=gpu}", "deadlabour_collector_up{collector=host}",
		"deadlabour_gpus", "deadlabour_gpus_unhealthy", "deadlabour_engine_poll_duration_seconds_count", "go_goroutines",
	} {
		if _, ok := m[want]; !ok {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if got := m["deadlabour_requests_total{status=200,upstream=up}"]; got != 5 {
		t.Errorf("requests_total = %v, want 5", got)
	}
	if m["deadlabour_energy_joules_total{device=0,method=counter}"] <= 0 || m["deadlabour_gpu_power_watts{gpu=0}"] <= 0 {
		t.Errorf("GPU 0 energy %v J, power %v W: want both positive", m["deadlabour_energy_joules_total{device=0,method=counter}"], m["deadlabour_gpu_power_watts{gpu=0}"])
	}
	if m["deadlabour_sink_state{state=ok}"] != 1 || m["deadlabour_gpus"] != 2 || m["deadlabour_collector_up{collector=gpu}"] != 1 {
		t.Errorf("state ok %v, gpus %v, gpu up %v: want 1, 2, 1", m["deadlabour_sink_state{state=ok}"], m["deadlabour_gpus"], m["deadlabour_collector_up{collector=gpu}"])
	}

	code, body := testutil.GetJSON(t, d.adminURL()+"/healthz")
	if code != http.StatusOK || body["status"] != "alive" {
		t.Errorf("/healthz = %d %v", code, body)
	}
	code, body = testutil.GetJSON(t, d.adminURL()+"/readyz")
	sinkState, _ := body["sink"].(map[string]any)
	if code != http.StatusOK || body["status"] != "ready" || sinkState["state"] != "ok" || len(body["reasons"].([]any)) != 0 {
		t.Errorf("/readyz = %d %v", code, body)
	}

	testutil.WaitFor(t, "a deadlabour_health point", 5*time.Second, func() bool { return influx.Count(t, schema.MeasurementHealth, "") >= 1 })
	rows := influx.Rows(t, "SELECT * FROM "+schema.MeasurementHealth+" LIMIT 1")
	for _, f := range []string{"host", "gpus_total", "gpus_unhealthy", "host_meter", "spool_points", "spool_bytes",
		"oldest_undelivered_s", "points_sent", "points_dropped", "points_dead_lettered", "sink_state", "simulated"} {
		if _, ok := rows[0][f]; !ok {
			t.Errorf("deadlabour_health lacks %s: %v", f, rows[0])
		}
	}
	if g, _ := rows[0].Int("gpus_total"); g != 2 {
		t.Errorf("gpus_total = %d, want 2", g)
	}
	if s, _ := rows[0].String("sink_state"); s != "ok" {
		t.Errorf("sink_state = %q, want ok", s)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
}

// TestSpoolOnly: with no influx.url the daemon runs, keeps every record in
// the spool, says so in /readyz, serves them on GET /v1/spool while it
// runs, and sink.ReadSpool reads the same records once it stopped.
func TestSpoolOnly(t *testing.T) {
	fake := startFake(t)
	dir := t.TempDir()
	d := startDaemon(t, daemonConfig("", "deadlabour/autogen", dir, fake.URL(), ""), "h100:1")
	const n = 12
	for i := range n {
		if err := complete(d.proxyURL("up"), fmt.Sprintf("spool-%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(r io.Reader) []string {
		var out []string
		sc := bufio.NewScanner(r)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if i := strings.Index(sc.Text(), `request_id="`); i >= 0 {
				out = append(out, sc.Text()[i+12:i+20])
			}
		}
		sort.Strings(out)
		return out
	}
	var served []string
	testutil.WaitFor(t, "the records in GET /v1/spool", 10*time.Second, func() bool {
		resp, err := http.Get(d.adminURL() + "/v1/spool?measurement=deadlabour_request")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		served = ids(resp.Body)
		return len(served) == n
	})
	// Only the lines of the measurement asked for, and only ours.
	for m, want := range map[string]int{"deadlabour_idle": http.StatusOK, "deadlabour_requests": http.StatusBadRequest} {
		resp, err := http.Get(d.adminURL() + "/v1/spool?measurement=" + m)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || (want == http.StatusOK && strings.Contains(string(b), "deadlabour_request,")) {
			t.Errorf("GET /v1/spool?measurement=%s: %d, want %d, and no request records:\n%.300s", m, resp.StatusCode, want, b)
		}
	}
	code, body := testutil.GetJSON(t, d.adminURL()+"/readyz")
	sinkState, _ := body["sink"].(map[string]any)
	if code != http.StatusOK || sinkState["state"] != "disabled" || !strings.Contains(fmt.Sprint(sinkState["reason"]), "influx.url is empty") {
		t.Errorf("/readyz = %d %v; want 200 with the sink disabled and why", code, body)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	var lines bytes.Buffer
	for line, err := range sink.ReadSpool(dir) {
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, schema.MeasurementRequest+",") {
			lines.WriteString(line + "\n")
		}
	}
	if got := ids(&lines); fmt.Sprint(got) != fmt.Sprint(served) {
		t.Errorf("ReadSpool records %v, GET /v1/spool served %v", got, served)
	}
}

// The admin routes answer concurrently with the engine without races
// (run with -race): a scrape storm during load.
func TestScrapeDuringLoad(t *testing.T) {
	influx := influxtest.Start(t)
	fake := startFake(t)
	d := startDaemon(t, daemonConfig(influx.URL(), influx.Bucket(), t.TempDir(), fake.URL(), ""), "h100:1")
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Go(func() {
			for i := range 10 {
				if err := complete(d.proxyURL("up"), fmt.Sprintf("scr-%d-%d", g, i)); err != nil {
					t.Error(err)
				}
				for _, p := range []string{"/metrics", "/readyz", "/healthz", "/v1/spool"} {
					resp, err := http.Get(d.adminURL() + p)
					if err != nil {
						t.Error(err)
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	wg.Wait()
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	if n := influx.Count(t, "deadlabour_request", ""); n != 30 {
		t.Errorf("%d records, want 30", n)
	}
}

// TestReportFromSpool: with no InfluxDB, `report` totals the records in the
// spool: through the running daemon's GET /v1/spool while it holds the
// spool, in place (sink.ReadSpool) once it stopped; the same either way.
func TestReportFromSpool(t *testing.T) {
	fake := startFake(t)
	dir := t.TempDir()
	cfg := daemonConfig("", "deadlabour/autogen", dir, fake.URL(), "")
	d := startDaemon(t, cfg, "h100:1")
	// report finds the daemon at admin.listen: the port it was given.
	cfg = strings.Replace(cfg, "listen: 127.0.0.1:0\ninflux", "listen: "+d.AdminAddr()+"\ninflux", 1)
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	const n = 9
	for i := range n {
		if err := complete(d.proxyURL("up"), fmt.Sprintf("rep-%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	requests := func() string {
		doc := reportJSONOf(t, "--config", cfgPath, "--simulated", "--by", "upstream")
		return fmt.Sprint(doc.Total["requests"], " ", doc.Total["gpu_energy_j"])
	}
	var running string
	testutil.WaitFor(t, "the records in the report", 10*time.Second, func() bool {
		running = requests()
		return strings.HasPrefix(running, fmt.Sprint(n, " "))
	})
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	if stopped := requests(); stopped != running {
		t.Errorf("report from the stopped daemon's spool = %s, from the running daemon = %s", stopped, running)
	}
}

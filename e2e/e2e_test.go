package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/daemon"
	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/internal/testlog"
	"github.com/deadlabour/deadlabour/internal/testutil"
)

// testDaemon runs a daemon in-process until stop is called.
type testDaemon struct {
	*daemon.Daemon
	log  *testlog.Buffer
	stop func() error
	// exited is closed when run returned (by itself, or after stop);
	// runErr is its error then.
	exited chan struct{}
	runErr error
}

func startDaemon(t testing.TB, yaml, simulate string) *testDaemon {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(yaml), -1)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(logs, testutil.LogWriter(t)), &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	d, err := daemon.New(ctx, cfg, simulate, log)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	td := &testDaemon{Daemon: d, log: logs, exited: make(chan struct{})}
	go func() {
		defer close(td.exited)
		td.runErr = d.Run(ctx)
	}()
	var once sync.Once
	var stopErr error
	td.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case <-td.exited:
				stopErr = td.runErr
			case <-time.After(60 * time.Second):
				stopErr = fmt.Errorf("daemon did not stop within 60 s")
			}
		})
		return stopErr
	}
	t.Cleanup(func() { td.stop() })
	return td
}

func (d *testDaemon) proxyURL(name string) string {
	if ln := d.ProxyListener(name); ln != nil {
		return "http://" + ln.Addr().String()
	}
	return ""
}

func call(t *testing.T, url string, body []byte, id string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", id)
	req.Header.Set("Authorization", "Bearer sk-test-secret-key-"+id[:3])
	return testutil.Do(t, http.DefaultClient, req)
}

type upstreamCase struct {
	name, model string
	gpus        []int
	delay       time.Duration
	proxied     *fakeupstream.Server // behind the daemon
	direct      *fakeupstream.Server // an identical twin called directly
}

// The spine, end to end: a fake upstream behind the daemon on simulated
// H100s, a real InfluxDB. N requests in, N records out; the client's bytes
// identical to a direct call; tokens as the upstream reported; and every
// joule the simulated counters advanced is in a record or the idle ledger.
func TestEndToEnd(t *testing.T) {
	influx := influxtest.Start(t)
	ctx := context.Background()
	ups := []*upstreamCase{
		{name: "big", model: "llama-70b", gpus: []int{0, 1}, delay: 3 * time.Millisecond},
		{name: "small", model: "llama-8b", gpus: []int{2}, delay: time.Millisecond},
		{name: "medium", model: "mistral-7b", gpus: []int{3}, delay: 2 * time.Millisecond},
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "node: e2e\ngpu:\n  interval: 50ms\n  report_interval: 1s\nadmin:\n  listen: \"\"\n")
	fmt.Fprintf(&cfg, "influx:\n  url: %s\n  bucket: %s\n  flush_interval: 100ms\nspool:\n  dir: %s\n", influx.URL(), influx.Bucket(), t.TempDir())
	// Every model served is listed (the model tag holds only these); one
	// has training figures.
	fmt.Fprintf(&cfg, "models:\n  - name: llama-70b\n    training_cost: 2.0e7\n    lifetime_tokens: 1.0e13\n  - name: llama-8b\n  - name: mistral-7b\nupstreams:\n")
	for _, u := range ups {
		var err error
		opts := fakeupstream.Options{TokenDelay: u.delay, DefaultMaxTokens: 32}
		if u.proxied, err = fakeupstream.Start(ctx, opts); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { u.proxied.Close() })
		if u.direct, err = fakeupstream.Start(ctx, opts); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { u.direct.Close() })
		gpus, _ := json.Marshal(u.gpus)
		fmt.Fprintf(&cfg, "  - name: %s\n    listen: 127.0.0.1:0\n    target: %s\n    gpus: %s\n", u.name, u.proxied.URL(), gpus)
	}
	d := startDaemon(t, cfg.String(), "h100:8")

	const n = 60
	var wg sync.WaitGroup
	sem := make(chan struct{}, 6)
	for i := 0; i < n; i++ {
		u := ups[i%len(ups)]
		req := map[string]any{
			"model":      u.model,
			"messages":   []map[string]string{{"role": "user", "content": strings.Repeat("word ", 1+i*7%90)}},
			"max_tokens": 4 + i*13%50,
		}
		if i%2 == 0 {
			req["stream"] = true
			req["stream_options"] = map[string]any{"include_usage": true}
		}
		body, _ := json.Marshal(req)
		id := fmt.Sprintf("e2e-%03d", i)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			gotStatus, got := call(t, d.proxyURL(u.name), body, id)
			wantStatus, want := call(t, u.direct.URL(), body, id)
			if gotStatus != wantStatus || !bytes.Equal(got, want) {
				t.Errorf("%s: through the proxy %d %q, direct %d %q", id, gotStatus, got, wantStatus, want)
			}
		}()
	}
	wg.Wait()
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}

	// Exactly N records, one per request id.
	if got := influx.Count(t, "deadlabour_request", ""); got != n {
		t.Fatalf("%d request records in InfluxDB, want %d", got, n)
	}
	ids := influx.Rows(t, `SELECT request_id, gpu_energy_j FROM deadlabour_request`)
	seen := map[string]bool{}
	for _, r := range ids {
		id, _ := r.String("request_id")
		if seen[id] {
			t.Errorf("request %s has two records", id)
		}
		seen[id] = true
		if e, _ := r.Float("gpu_energy_j"); e <= 0 {
			t.Errorf("request %s has no GPU energy", id)
		}
	}

	// Tokens as the upstream reported them, per model.
	for _, u := range ups {
		sent := u.proxied.Sent()[u.model]
		rows := influx.Rows(t, fmt.Sprintf(`SELECT sum(prompt_tokens) AS p, sum(completion_tokens) AS c, count(request_id) AS n FROM deadlabour_request WHERE model = %s`, influxtest.QuoteString(u.model)))
		if len(rows) != 1 {
			t.Fatalf("%s: no records", u.model)
		}
		p, _ := rows[0].Int("p")
		c, _ := rows[0].Int("c")
		k, _ := rows[0].Int("n")
		if p != sent.PromptTokens || c != sent.CompletionTokens || k != sent.Requests {
			t.Errorf("%s: records say %d requests, %d prompt + %d completion tokens; upstream sent %d, %d + %d",
				u.model, k, p, c, sent.Requests, sent.PromptTokens, sent.CompletionTokens)
		}
	}

	// Conservation: per group of GPUs an upstream runs on, records + idle
	// = what the simulated counters advanced; GPUs no upstream used are all idle.
	measured := make([]float64, 8)
	for i := range measured {
		first, last, reads := d.Simulation().Device(i).CounterReads()
		if reads < 10 {
			t.Fatalf("GPU %d read only %d times", i, reads)
		}
		measured[i] = float64(last-first) / 1000
	}
	idle := map[string]float64{}
	for _, r := range influx.Rows(t, `SELECT sum(energy_j) AS e FROM deadlabour_idle GROUP BY device`) {
		dev, _ := r.String("device")
		idle[dev], _ = r.Float("e")
	}
	used := map[int]bool{}
	for _, u := range ups {
		rows := influx.Rows(t, fmt.Sprintf(`SELECT sum(gpu_energy_j) AS e FROM deadlabour_request WHERE upstream = %s`, influxtest.QuoteString(u.name)))
		attributed, _ := rows[0].Float("e")
		want := 0.0
		for _, g := range u.gpus {
			used[g] = true
			attributed += idle[fmt.Sprint(g)]
			want += measured[g]
		}
		if math.Abs(attributed-want) > 1e-9*want {
			t.Errorf("upstream %s (GPUs %v): records + idle = %.12g J, counters advanced %.12g J", u.name, u.gpus, attributed, want)
		}
	}
	for g := range measured {
		if !used[g] && math.Abs(idle[fmt.Sprint(g)]-measured[g]) > 1e-9*measured[g] {
			t.Errorf("idle GPU %d: idle ledger %.12g J, counter advanced %.12g J", g, idle[fmt.Sprint(g)], measured[g])
		}
	}
	// The loaded figures add up too: records' loaded energy + the idle no
	// record absorbed = what the counters advanced.
	unabsorbed := map[string]float64{}
	for _, r := range influx.Rows(t, `SELECT sum(energy_j) AS e FROM deadlabour_idle WHERE share != 'absorbed' GROUP BY device`) {
		dev, _ := r.String("device")
		unabsorbed[dev], _ = r.Float("e")
	}
	for _, u := range ups {
		rows := influx.Rows(t, fmt.Sprintf(`SELECT sum(loaded_gpu_energy_j) AS e FROM deadlabour_request WHERE upstream = %s`, influxtest.QuoteString(u.name)))
		loaded, _ := rows[0].Float("e")
		want := 0.0
		for _, g := range u.gpus {
			loaded += unabsorbed[fmt.Sprint(g)]
			want += measured[g]
		}
		if math.Abs(loaded-want) > 1e-9*want {
			t.Errorf("upstream %s (GPUs %v): loaded + unabsorbed idle = %.12g J, counters advanced %.12g J", u.name, u.gpus, loaded, want)
		}
	}
	// No carbon, water or price configured: the daemon says so, and every
	// record says where its factors came from.
	for _, want := range []string{"no region and no carbon_g_per_kwh", "using the world average"} {
		if !strings.Contains(d.log.String(), want) {
			t.Errorf("no warning %q about the default carbon intensity in the log", want)
		}
	}
	for _, r := range influx.Rows(t, `SELECT factors FROM deadlabour_request LIMIT 5`) {
		if f, _ := r.String("factors"); !strings.Contains(f, "carbon=default:world") || !strings.Contains(f, "price=default") {
			t.Errorf("record factors %q, want the world-average carbon and the default price marked", f)
		}
	}
	if strings.Contains(d.log.String(), "sk-test-secret-key") {
		t.Error("an API key appears in the log")
	}
}

// Without a driver the daemon says why in one line and keeps metering:
// records carry host energy and no GPU energy.
func TestNoDriverKeepsServing(t *testing.T) {
	influx := influxtest.Start(t)
	fake, err := fakeupstream.Start(context.Background(), fakeupstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	yaml := fmt.Sprintf(`node: nodriver
gpu:
  interval: 50ms
  library_path: /nonexistent/libnvidia-ml.so.1
admin:
  listen: ""
influx:
  url: %s
  bucket: %s
  flush_interval: 100ms
spool:
  dir: %s
upstreams:
  - name: cpu
    listen: 127.0.0.1:0
    target: %s
    gpus: [0]
`, influx.URL(), influx.Bucket(), t.TempDir(), fake.URL())
	d := startDaemon(t, yaml, "")
	status, _ := call(t, d.proxyURL("cpu"), []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`), "nodriver-1")
	if status != http.StatusOK {
		t.Fatalf("status %d through the proxy", status)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	logs := d.log.String()
	if n := strings.Count(logs, "no NVIDIA driver"); n != 1 || !strings.Contains(logs, "ERROR_LIBRARY_NOT_FOUND") {
		t.Errorf("want one line saying no driver, with the nvml.Init result; log:\n%s", logs)
	}
	rows := influx.Rows(t, `SELECT gpu_energy_j, host_energy_j, static_energy_j, host_meter FROM deadlabour_request`)
	if len(rows) != 1 {
		t.Fatalf("%d records, want 1", len(rows))
	}
	g, _ := rows[0].Float("gpu_energy_j")
	h, _ := rows[0].Float("host_energy_j")
	s, _ := rows[0].Float("static_energy_j")
	if g != 0 || h <= 0 || s <= 0 {
		t.Errorf("gpu %v, host %v, static %v J: want no GPU energy, some host and static energy", g, h, s)
	}
}

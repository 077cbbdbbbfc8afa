package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/schema"
)

var t0 = time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// auditFixture runs a small ledger (one GPU and the host, time-of-use
// price, market carbon) and keeps its output in an audit store.
func auditFixture(t *testing.T, weighting string, maxRecords int, window time.Duration) (*auditStore, []estimator.Record) {
	t.Helper()
	yaml := fmt.Sprintf(`node: audit-test
facility:
  carbon_market_g_per_kwh: 90
  price_schedule:
    - from: "10:00"
      to: "10:01"
      price_per_kwh: 0.3
attribution:
  weighting: %s
  settle_delay: 0s
  idle_window: 1m
models:
  - name: m
    training_cost: 1.0e6
    training_co2e_kg: 5.0e5
    lifetime_tokens: 1.0e12
    human_labour_hours: 1000
`, weighting)
	cfg, err := config.Parse("audit.yaml", []byte(yaml), -1)
	if err != nil {
		t.Fatal(err)
	}
	l, sources := h100Ledger(t, cfg)
	store := newAuditStore(l.Params(), sources, maxRecords, window)
	var recs []estimator.Record
	take := func(out estimator.Output) {
		for _, r := range out.Records {
			store.addRecord(r)
		}
		store.addSettled(out.Settled)
		recs = append(recs, out.Records...)
	}
	var spans []estimator.Span
	for i := 0; i < 12; i++ {
		start := 0.35 * float64(i)
		spans = append(spans, estimator.Span{ID: fmt.Sprintf("req-%02d", i), Model: "m", Start: at(start), FirstToken: at(start + 0.1),
			End: at(start + 0.4 + 0.3*float64(i%4)), Status: "200", Served: i != 5, PromptTokens: int64(100 * (i + 1)),
			CompletionTokens: int64(20 + i), Devices: []string{"0"}, UsageSource: estimator.UsageReported})
	}
	for k := 0; k < 80; k++ {
		prev, now := at(float64(k)/10), at(float64(k+1)/10)
		for _, s := range spans {
			if !s.Start.Before(prev) && s.Start.Before(now) {
				l.Begin(s)
			}
			if !s.End.Before(prev) && s.End.Before(now) {
				l.End(s)
			}
		}
		for _, dev := range []string{"0", estimator.HostDevice} {
			if err := l.AddInterval(estimator.Interval{Device: dev, Start: prev, End: now, Joules: 30 + float64(k%7),
				Method: estimator.MethodCounter}); err != nil {
				t.Fatal(err)
			}
		}
		take(l.Settle(now))
	}
	take(l.Close())
	return store, recs
}

// h100Ledger is the ledger the daemon would build from cfg on a node with
// one H100 (GPU 0) and the host meter.
func h100Ledger(t *testing.T, cfg *config.Config) (*estimator.Ledger, []paramSource) {
	t.Helper()
	p, sources, err := buildParams(cfg, []gpu.DeviceInfo{{ID: "0", Name: "NVIDIA H100 80GB HBM3"}}, false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	l, err := estimator.New(p)
	if err != nil {
		t.Fatal(err)
	}
	return l, sources
}

func httpGet(t *testing.T, h http.Handler, path string) (int, []byte) {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(requestPattern, h)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.Bytes()
}

type explainResponse struct {
	Record  map[string]any `json:"record"`
	Explain explanation    `json:"explain"`
	SameID  int            `json:"same_id_records"` // the one-record answer's
}

// GET /v1/requests/{id} answers the record as InfluxDB has it; with
// ?explain=1 the intervals, weights and parameters, and a recomputation
// that matches, in every weighting.
func TestRequestExplain(t *testing.T) {
	for _, mode := range []string{"time", "tokens", "marginal"} {
		t.Run(mode, func(t *testing.T) {
			store, recs := auditFixture(t, mode, 100, time.Hour)
			h := http.HandlerFunc(store.serveRequest)
			if len(recs) != 12 {
				t.Fatalf("%d records, want 12", len(recs))
			}
			for _, r := range recs {
				code, body := httpGet(t, h, "/v1/requests/"+r.ID+"?explain=1")
				if code != http.StatusOK {
					t.Fatalf("%s: %d %s", r.ID, code, body)
				}
				var resp explainResponse
				if err := json.Unmarshal(body, &resp); err != nil {
					t.Fatal(err)
				}
				// The record's fields are the InfluxDB point's.
				p, _ := schema.RequestPoint(r)
				for _, f := range p.Fields {
					got := resp.Record[f.Key]
					want, _ := json.Marshal(f.Value)
					if g, _ := json.Marshal(got); !bytes.Equal(g, want) {
						t.Errorf("%s: %s = %s, the point has %s", r.ID, f.Key, g, want)
					}
				}
				if resp.SameID != 1 {
					t.Errorf("%s: same_id_records %d in a one-record answer, want 1", r.ID, resp.SameID)
				}
				if !resp.Explain.Matches || resp.Explain.Weighting != mode {
					t.Errorf("%s: recomputation matches %v (%v), weighting %q", r.ID, resp.Explain.Matches, resp.Explain.MaxRelDiff, resp.Explain.Weighting)
				}
				charged := 0.0
				for _, d := range resp.Explain.Devices {
					for _, c := range d.Intervals {
						if d.Device == "0" {
							charged += c.Charged
						}
						// prompt_token_weight auto, the default: 8 s of
						// history is too little to fit, so the fallback;
						// the host is never fitted.
						wantSrc := map[string]string{"tokens": "default"}[mode]
						if mode == "tokens" && d.Device == estimator.HostDevice {
							wantSrc = "host"
						}
						if c.PromptWeightSource != wantSrc ||
							(mode == "tokens") != (c.PromptWeight == config.DefaultPromptTokenWeight) {
							t.Errorf("%s: prompt token weight %v (%q), want %q", r.ID, c.PromptWeight, c.PromptWeightSource, wantSrc)
						}
					}
				}
				if r.Served && (len(resp.Explain.Devices) != 2 || !near(charged, r.GPUEnergyJ)) {
					t.Errorf("%s: the intervals shown charge %v J on GPU 0, the record %v J", r.ID, charged, r.GPUEnergyJ)
				}
				// A second answer is byte-identical.
				if _, again := httpGet(t, h, "/v1/requests/"+r.ID+"?explain=1"); !bytes.Equal(body, again) {
					t.Errorf("%s: two answers differ", r.ID)
				}
			}
			code, body := httpGet(t, h, "/v1/requests/req-03")
			if code != http.StatusOK || bytes.Contains(body, []byte(`"explain"`)) {
				t.Errorf("without explain: %d %s", code, body)
			}
			_, body = httpGet(t, h, "/v1/requests/req-03?explain=1")
			var resp explainResponse
			json.Unmarshal(body, &resp)
			sources := map[string]string{}
			for _, ps := range resp.Explain.Parameters {
				sources[ps.Name] = ps.Source
			}
			if !strings.HasPrefix(sources["facility.carbon_market_g_per_kwh"], "config line 3") ||
				!strings.HasPrefix(sources["facility.pue"], "default") || !strings.Contains(sources["gpu 0"], `"H100" from the catalogue`) ||
				!strings.Contains(sources["facility.price_schedule[0]"], "config line 5") {
				t.Errorf("parameter sources %v", sources)
			}
			if code, body := httpGet(t, h, "/v1/requests/nope"); code != http.StatusNotFound || !bytes.Contains(body, []byte("most recent")) {
				t.Errorf("unknown id: %d %s", code, body)
			}
		})
	}
}

// The store keeps the newest records, and settlements of the window only;
// a record whose intervals are gone says so instead of matching.
func TestAuditStoreBounded(t *testing.T) {
	store, recs := auditFixture(t, "time", 5, 2*time.Second)
	if len(store.records) != 5 || store.order.len() != 5 {
		t.Fatalf("%d records kept, want 5", len(store.records))
	}
	newest := recs[len(recs)-1]
	if kept, n := store.lookup(newest.ID, auditShowMax); len(kept) != 1 || n != 1 {
		t.Errorf("newest record %s not kept", newest.ID)
	}
	for dev, lg := range store.settled {
		live := lg.entries.live()
		if span := time.Duration(live[len(live)-1].end - live[0].end); span > 2*time.Second {
			t.Errorf("device %s keeps %v of settlements, want <= 2s", dev, span)
		}
	}
	var first estimator.Record
	for _, id := range store.order.live() {
		if r := store.records[id].front(); r.Served && (first.ID == "" || r.Start.Before(first.Start)) {
			first = r
		}
	}
	_, body := httpGet(t, http.HandlerFunc(store.serveRequest), "/v1/requests/"+first.ID+"?explain=1")
	var resp explainResponse
	json.Unmarshal(body, &resp)
	if first.Start.Before(at(6)) && (resp.Explain.Matches || !strings.Contains(resp.Explain.Note, "no longer kept")) {
		t.Errorf("%s (from %v) with intervals dropped: matches %v, note %q", first.ID, first.Start, resp.Explain.Matches, resp.Explain.Note)
	}
}

// Two records may share a request id (the same X-Request-Id sent twice, an
// event-API request recorded again after a restart): both are kept and
// shown, each with its own explanation that matches, and eviction goes by
// the order records came in, so the newer of them outlives older records
// of other ids.
func TestAuditSameID(t *testing.T) {
	const max = 5
	store, recs := auditFixture(t, "tokens", max, time.Hour)
	// A fresh store of the same parameters, the fixture's settlements.
	store2 := newAuditStore(store.params, store.sources, max, time.Hour)
	store2.settled = store.settled
	store = store2
	var served []estimator.Record
	for _, r := range recs {
		if r.Served {
			served = append(served, r)
		}
	}
	first, second := served[1], served[6] // different charges, made one id below
	second.ID = first.ID
	add := func(rs ...estimator.Record) {
		for _, r := range rs {
			store.addRecord(r)
		}
	}
	// first, two others, the second of first's id, three more: first and
	// the next are the oldest and go; the second of first's id stays.
	add(first, served[2], served[3], second, served[4], served[5], served[0])
	h := http.HandlerFunc(store.serveRequest)
	code, body := httpGet(t, h, "/v1/requests/"+first.ID+"?explain=1")
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	var one explainResponse
	if err := json.Unmarshal(body, &one); err != nil {
		t.Fatal(err)
	}
	if one.Record["time"] != second.Time.UTC().Format(time.RFC3339Nano) || !bytes.Contains(body, []byte(`"same_id_records":1`)) ||
		bytes.Contains(body, []byte(`"records"`)) {
		t.Errorf("after eviction: want the second record of %s alone, got %s", first.ID, body)
	}
	// Once more with both kept.
	add(served[7], first, served[8], second)
	code, body = httpGet(t, h, "/v1/requests/"+first.ID+"?explain=1")
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	var several struct {
		RequestID string            `json:"request_id"`
		SameID    int               `json:"same_id_records"`
		Record    map[string]any    `json:"record"`
		Records   []explainResponse `json:"records"`
	}
	if err := json.Unmarshal(body, &several); err != nil {
		t.Fatal(err)
	}
	if several.RequestID != first.ID || several.SameID != 2 || len(several.Records) != 2 || several.Record != nil {
		t.Fatalf("two records of one id: %s", body)
	}
	for i, want := range []estimator.Record{first, second} {
		got := several.Records[i]
		if got.Record["time"] != want.Time.UTC().Format(time.RFC3339Nano) || got.Record["gpu_energy_j"] != want.GPUEnergyJ {
			t.Errorf("record %d: time %v, gpu_energy_j %v; want %v, %v", i, got.Record["time"], got.Record["gpu_energy_j"], want.Time, want.GPUEnergyJ)
		}
		if !got.Explain.Matches || len(got.Explain.Devices) == 0 {
			t.Errorf("record %d: explanation matches %v (%v): %s", i, got.Explain.Matches, got.Explain.MaxRelDiff, got.Explain.Note)
		}
	}
	if several.Records[0].Record["gpu_energy_j"] == several.Records[1].Record["gpu_energy_j"] {
		t.Errorf("the fixture's two records charge the same: the test cannot tell them apart")
	}
	// Without explain: the records alone.
	if _, body := httpGet(t, h, "/v1/requests/"+first.ID); bytes.Contains(body, []byte(`"explain"`)) || !bytes.Contains(body, []byte(`"same_id_records":2`)) {
		t.Errorf("without explain: %s", body)
	}
	if store.order.len() != max {
		t.Errorf("%d records kept, want %d", store.order.len(), max)
	}

	// deadlabourd audit prints both.
	srv := httptest.NewServer(func() http.Handler {
		mux := http.NewServeMux()
		mux.HandleFunc(requestPattern, store.serveRequest)
		return mux
	}())
	defer srv.Close()
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"audit", "--admin", strings.TrimPrefix(srv.URL, "http://"), first.ID}, &out, &errb); code != 0 {
		t.Fatalf("audit: exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"2 records share request id " + first.ID, "record 1 of 2", "record 2 of 2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("audit output lacks %q:\n%s", want, out.String())
		}
	}
	if c := strings.Count(out.String(), "matches the record"); c != 2 {
		t.Errorf("audit output: %d records match, want 2:\n%s", c, out.String())
	}
}

// End to end: records of a running daemon are served by the admin
// listener, equal to what InfluxDB got, and `deadlabourd audit` explains
// them.
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
	admin := d.adminLn.Addr().String()
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
		waitUntil(t, id+"'s explanation", 15*time.Second, func() bool {
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
	if code := run(context.Background(), []string{"audit", "--admin", admin, ids[0]}, &out, &errb); code != 0 {
		t.Fatalf("audit: exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"request audit-00", "weighting tokens", "device 0:", "device 1:", "device host:", "matches the record", "facility.pue",
		"PROMPT WEIGHT", "0.1 default", "attribution.prompt_token_weight (auto)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("audit output lacks %q:\n%s", want, out.String())
		}
	}
	if code := run(context.Background(), []string{"audit", "--admin", admin, "no-such-request"}, &out, &errb); code != 1 ||
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

// audit reads the admin address and token from the config.
func TestAuditUsesConfig(t *testing.T) {
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "request \"x\" is not among the 3 most recent records kept"})
	}))
	defer srv.Close()
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("s3cret-0123456789abcdef\n"), 0o600)
	cfgPath := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("admin:\n  listen: %s\n  token_file: %s\n", strings.TrimPrefix(srv.URL, "http://"), tok)), 0o600)
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"audit", "--config", cfgPath, "x"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "not among the 3") {
		t.Errorf("exit %d, %q", code, errb.String())
	}
	if got.Get("Authorization") != "Bearer s3cret-0123456789abcdef" {
		t.Errorf("Authorization %q, want the token file's", got.Get("Authorization"))
	}
	if code := run(context.Background(), []string{"audit"}, &out, &errb); code != 2 {
		t.Errorf("no id: exit %d, want 2", code)
	}
}

func near(a, b float64) bool {
	d := a - b
	if d < 0 {
		d = -d
	}
	return d <= 1e-9*max(1, a, b, -a, -b)
}

// Request ids may hold '/' (X-Request-Id and the event API take any
// visible ASCII): GET /v1/requests/{id} finds them sent as they are and
// escaped, and the path `deadlabourd audit` asks for (requestPath) finds
// every id, even those the router would otherwise clean ("a//b").
func TestRequestLookupIDWithSlashes(t *testing.T) {
	store, recs := auditFixture(t, "time", 100, time.Hour)
	ids := []string{"tenant/a/42", "a//b", "a/../b", "./x", "x%2Fy", "q?x#y", "trailing/"}
	for _, id := range ids {
		r := recs[0]
		r.ID = id
		store.addRecord(r)
	}
	mux := http.NewServeMux()
	mux.HandleFunc(requestPattern, store.serveRequest)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(u *url.URL) (int, string) {
		t.Helper()
		resp, err := srv.Client().Get(u.String())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Record  map[string]any `json:"record"`
			Explain *explanation   `json:"explain"`
		}
		json.NewDecoder(resp.Body).Decode(&body)
		id, _ := body.Record["request_id"].(string)
		if u.RawQuery == "explain=1" && resp.StatusCode == http.StatusOK && body.Explain == nil {
			t.Errorf("%s: no explanation", u)
		}
		return resp.StatusCode, id
	}
	base, _ := url.Parse(srv.URL)
	for _, id := range ids {
		u := *base
		u.Path, u.RawPath = requestPath(id)
		u.RawQuery = "explain=1"
		if code, got := get(&u); code != http.StatusOK || got != id {
			t.Errorf("%q escaped as %s: %d, record %q", id, u.String(), code, got)
		}
	}
	// Sent with its slashes as they are, as a person would type it.
	u := *base
	u.Path = "/v1/requests/tenant/a/42"
	for _, q := range []string{"", "explain=1"} {
		u.RawQuery = q
		if code, got := get(&u); code != http.StatusOK || got != "tenant/a/42" {
			t.Errorf("%s: %d, record %q", u.String(), code, got)
		}
	}
}

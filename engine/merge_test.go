package engine

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/testutil"
)

var mBase = time.Unix(1_772_366_400, 0)

func mAt(s float64) time.Time { return mBase.Add(time.Duration(s * float64(time.Second))) }

func proxySpan(id string, start, end float64) estimator.Span {
	return estimator.Span{ID: id, Key: "k-" + id, Upstream: "up", Tenant: "team", Model: "m", Start: mAt(start), End: mAt(end),
		Status: "200", PromptTokens: 10, CompletionTokens: 5, UsageSource: estimator.UsageReported, Devices: []string{"0"}, Served: true}
}

func traceSpan(id string, start, end float64) estimator.Span {
	return estimator.Span{ID: id, Upstream: "up", Model: "m", Start: mAt(start), Scheduled: mAt(start + 0.2), FirstToken: mAt(start + 0.4), End: mAt(end),
		PromptTokens: 100, CompletionTokens: 50, CachedTokens: -1, ReasoningTokens: -1, UsageSource: estimator.UsageTrace,
		Devices: []string{"0"}, Served: true}
}

func TestMergerOneRecordPerRequest(t *testing.T) {
	m := NewMerger(map[string]bool{"up": true}, 10*time.Second)
	// The proxy ends first; the trace comes 5 s later and merges.
	p := proxySpan("a", 0, 2)
	m.Begin(p)
	if out := m.End(p, nil); len(out) != 0 {
		t.Fatalf("a proxy end of a traced upstream went on at once: %v", out)
	}
	out := m.Trace(traceSpan("a", 0.1, 1.9), mAt(7), nil)
	if len(out) != 1 {
		t.Fatalf("merged %v, want one", out)
	}
	got := out[0]
	if got.Key != p.Key || got.Status != "200" || got.Tenant != "team" || got.PromptTokens != 100 || got.CompletionTokens != 50 ||
		got.UsageSource != estimator.UsageTrace || !got.Scheduled.Equal(mAt(0.3)) || !got.Start.Equal(mAt(0)) {
		t.Errorf("merged %+v", got)
	}
	// The same trace again (an exporter's retry): dropped.
	if out := m.Trace(traceSpan("a", 0.1, 1.9), mAt(8), nil); len(out) != 0 || m.Dropped.Load() != 1 {
		t.Errorf("a second trace of a recorded request: %v", out)
	}

	// The trace comes while the proxied request is still open: it waits.
	b := proxySpan("b", 10, 12)
	m.Begin(b)
	if out := m.Trace(traceSpan("b", 10.1, 11.9), mAt(12), nil); len(out) != 0 {
		t.Fatalf("a trace of an open proxied request went on: %v", out)
	}
	if out := m.End(b, nil); len(out) != 1 || out[0].PromptTokens != 100 || out[0].Key != b.Key {
		t.Errorf("proxy end after its trace: %v", out)
	}

	// Matched by trace id when the ids differ.
	c := proxySpan("c", 20, 22)
	c.TraceID = "0af7651916cd43dd8448eb211c80319c"
	m.Begin(c)
	m.End(c, nil)
	tc := traceSpan("other-id", 20.1, 21.9)
	tc.TraceID = c.TraceID
	if out := m.Trace(tc, mAt(23), nil); len(out) != 1 || out[0].ID != "c" || out[0].UsageSource != estimator.UsageTrace {
		t.Errorf("trace-id match: %v", out)
	}

	// A proxy end whose trace never comes goes alone at its deadline.
	d := proxySpan("d", 30, 31)
	m.Begin(d)
	m.End(d, nil)
	if out := m.Expire(mAt(40.9), nil); len(out) != 0 {
		t.Errorf("released before the deadline: %v", out)
	}
	if out := m.Expire(mAt(41), nil); len(out) != 1 || out[0].UsageSource != estimator.UsageReported || m.Alone.Load() != 1 {
		t.Errorf("at the deadline: %v", out)
	}
	// Its trace, later still, is dropped: the request is recorded.
	if out := m.Trace(traceSpan("d", 30, 31), mAt(45), nil); len(out) != 0 {
		t.Errorf("a trace after its proxy end went alone: %v", out)
	}

	// A trace nothing proxied goes on at once; other upstreams pass.
	if out := m.Trace(traceSpan("e", 50, 51), mAt(52), nil); len(out) != 1 {
		t.Errorf("trace alone: %v", out)
	}
	o := proxySpan("f", 50, 51)
	o.Upstream = "untraced"
	m.Begin(o)
	if out := m.End(o, nil); len(out) != 1 {
		t.Errorf("untraced upstream: %v", out)
	}
	// An unserved proxied request goes at once: no trace comes.
	g := proxySpan("g", 60, 61)
	g.Served = false
	if out := m.End(g, nil); len(out) != 1 {
		t.Errorf("unserved: %v", out)
	}
	if m.Waiting() != 0 || m.Merged.Load() != 3 {
		t.Errorf("waiting %d, merged %d", m.Waiting(), m.Merged.Load())
	}
	// Flush at shutdown.
	h := proxySpan("h", 70, 71)
	m.Begin(h)
	m.End(h, nil)
	if out := m.Flush(nil); len(out) != 1 {
		t.Errorf("flush: %v", out)
	}
}

// Spans delivered 0-30 s after their requests ended, out of order: those
// within max_delay are attributed exactly (not truncated), later ones are
// flagged history_truncated; tokens and energy are conserved, and a
// request both proxied and traced is one record.
func TestLateTracesAttributedWithinMaxDelay(t *testing.T) {
	const maxDelay = 10 * time.Second
	ledger, err := estimator.New(estimator.Params{Node: "n", Weighting: estimator.WeightTokens, PUE: 1, History: time.Minute,
		SettleDelay: maxDelay, Devices: map[string]estimator.DeviceParams{"0": {}}})
	if err != nil {
		t.Fatal(err)
	}
	telemetry, err := NewGPUAggregator(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var records []estimator.Record
	clock := mBase
	traces := &TraceQueue{Upstreams: map[string]bool{"up": true}, MaxDelay: maxDelay}
	out := &collectSink{}
	e := New(Options{Log: slog.New(slog.DiscardHandler), Interval: time.Second, ReportInterval: 10 * time.Second, Now: func() time.Time { return clock },
		GPU: &scriptedGPU{ivs: everySecond(mBase, 120, 100)}, Queue: NewSpanQueue(1), Ledger: ledger, Telemetry: telemetry,
		Out: out, Node: "n", OnRecord: func(r estimator.Record) { records = append(records, r) }, Traces: traces})

	// Trace-only requests k: [2k, 2k+1.5] s, delivered after delays[k].
	delays := []float64{0, 3, 9, 5, 1, 15, 30, 7, 2, 20, 8, 0.5}
	type delivery struct {
		at float64
		s  estimator.Span
	}
	var deliveries []delivery
	var wantTokens int64
	for k, d := range delays {
		s := traceSpan(string(rune('a'+k)), float64(2*k), float64(2*k)+1.5)
		wantTokens += s.Tokens()
		deliveries = append(deliveries, delivery{float64(2*k) + 1.5 + d, s})
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })
	// One proxied request (30-33 s), its trace 6 s late.
	p := proxySpan("proxied", 30, 33)
	tp := traceSpan("proxied", 30.1, 32.9)
	wantTokens += tp.Tokens()
	deliveries = append(deliveries, delivery{39, tp})

	for sec := 0; sec <= 120; sec++ {
		now := mAt(float64(sec))
		for _, d := range deliveries {
			if d.at > float64(sec-1) && d.at <= float64(sec) {
				traces.Add([]estimator.Span{d.s})
			}
		}
		if sec == 30 {
			e.Queue.Begin(p)
		}
		if sec == 33 {
			e.Queue.End(p)
		}
		clock = now
		e.Tick(context.Background(), now)
	}
	clock = mAt(120)
	e.final(context.Background())

	var gotTokens int64
	var energy float64
	byID := map[string]estimator.Record{}
	for _, r := range records {
		if _, dup := byID[r.ID]; dup {
			t.Errorf("two records of %s", r.ID)
		}
		byID[r.ID] = r
		gotTokens += r.Tokens()
		energy += r.GPUEnergyJ
	}
	for _, pt := range out.points {
		if pt.Measurement == "deadlabour_idle" {
			for _, f := range pt.Fields {
				if f.Key == "energy_j" {
					energy += f.Value.(float64)
				}
			}
		}
	}
	if gotTokens != wantTokens {
		t.Errorf("tokens %d, want %d", gotTokens, wantTokens)
	}
	if !testutil.CloseTo(energy, 120*100) {
		t.Errorf("records + idle = %v J, want the 12000 J measured", energy)
	}
	for k, d := range delays {
		r, ok := byID[string(rune('a'+k))]
		if !ok {
			t.Errorf("no record of request %d", k)
			continue
		}
		if late := time.Duration(d * float64(time.Second)); r.HistoryTruncated != (late > maxDelay) {
			t.Errorf("request %d, %v late: history_truncated %v", k, late, r.HistoryTruncated)
		}
	}
	if r := byID["proxied"]; r.UsageSource != estimator.UsageTrace || r.Tenant != "team" || r.PromptTokens != 100 || r.HistoryTruncated || r.GPUEnergyJ <= 0 {
		t.Errorf("proxied + traced record %+v", r)
	}
}

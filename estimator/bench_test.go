package estimator

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// benchLedger is a ledger with n requests active on GPU 0 (and the host,
// when host is set) for as long as the benchmark runs: every interval
// settled is split among all of them.
func benchLedger(b *testing.B, mode string, n int, host bool) *Ledger {
	b.Helper()
	devs := []string{"0"}
	if host {
		devs = append(devs, HostDevice)
	}
	p := testParams(devs...)
	p.Weighting = mode
	if mode == tokensFitted {
		p.Weighting, p.FitPromptTokenWeight = WeightTokens, true
	}
	p.SettleDelay, p.History = 0, 0
	p.Marginal = MarginalParams{PromptJPerToken: 0.02, DecodeJPerToken: 0.15}
	l, err := New(p)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i++ {
		s := Span{ID: fmt.Sprintf("r%06d", i), Model: "m", Start: at(-float64(i%100) / 100), FirstToken: at(-0.001),
			End: at(1e6), Status: "200", Served: true, PromptTokens: 500, CompletionTokens: 200, Devices: []string{"0"}}
		if p.Weighting == WeightTime {
			l.Begin(s) // still running: charged as intervals settle
		} else {
			l.End(s) // ends far ahead: charged for every interval
		}
	}
	return l
}

// tokensFitted is tokens weighting with its prompt token weight fitted
// (prompt_token_weight: auto, the default), a benchmark name only.
const tokensFitted = "tokens-fitted"

// BenchmarkAttribution settles one 100 ms interval per Settle call, as the
// daemon does per poll, with n requests active: the cost per (request,
// interval) attribution, Settle's overhead included.
//
//	go test ./estimator -run '^$' -bench 'Attribution|BaselineFMA' -benchtime 2s
func BenchmarkAttribution(b *testing.B) {
	for _, mode := range append(modes[:len(modes):len(modes)], tokensFitted) {
		for _, n := range []int{16, 256, 10000} {
			b.Run(fmt.Sprintf("%s/active=%d", mode, n), func(b *testing.B) {
				l := benchLedger(b, mode, n, false)
				t := at(0)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					next := t.Add(100 * time.Millisecond)
					if err := l.AddInterval(Interval{Device: "0", Start: t, End: next, Joules: 40, Method: MethodCounter}); err != nil {
						b.Fatal(err)
					}
					l.Settle(next)
					t = next
				}
				b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "attributions/s")
			})
		}
	}
}

// BenchmarkBaselineFMA is the floor the attribution is measured against,
// in the same run: for each of n accumulators, the multiply-adds (seven active, seven loaded)
// that charge one request its share of one interval, and nothing else.
func BenchmarkBaselineFMA(b *testing.B) {
	for _, n := range []int{16, 256, 10000} {
		b.Run(fmt.Sprintf("active=%d", n), func(b *testing.B) {
			acc := make([]share, n)
			w := make([]float64, n)
			for i := range w {
				w[i] = float64(i%7) + 1
			}
			u := unit{joules: 1e-3, static: 2e-3, co2: 3e-3, co2m: 4e-3, cost: 5e-3, depreciation: 6e-3, embodied: 7e-3}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for k := range acc {
					acc[k].add(&u, w[k], w[k], 0.5)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "attributions/s")
		})
	}
}

// BenchmarkMemory reports the ledger's heap per 10,000 active requests
// (each on one GPU and the host) and per 10,000 intervals kept while
// requests run (tokens and marginal weighting hold them), against the
// baseline of the Span values alone.
func BenchmarkMemory(b *testing.B) {
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	const n = 10000
	for i := 0; i < b.N; i++ {
		before := heap()
		spans := make([]Span, n)
		for k := range spans {
			spans[k] = Span{ID: fmt.Sprintf("r%06d", k), Model: "m", Start: at(float64(k) / 1000), End: at(1e6), Served: true,
				PromptTokens: 500, CompletionTokens: 200, Devices: []string{"0"}}
		}
		spanBytes := heap() - before

		p := testParams("0", HostDevice)
		p.Weighting = WeightTokens
		p.SettleDelay, p.History = 0, time.Hour
		before = heap()
		l, err := New(p)
		if err != nil {
			b.Fatal(err)
		}
		for k := range spans {
			l.Begin(spans[k])
		}
		ledgerBytes := heap() - before

		before = heap()
		t := at(0)
		for k := 0; k < n; k++ {
			next := t.Add(100 * time.Millisecond)
			if err := l.AddInterval(Interval{Device: "0", Start: t, End: next, Joules: 40, Method: MethodCounter}); err != nil {
				b.Fatal(err)
			}
			t = next
		}
		intervalBytes := heap() - before
		runtime.KeepAlive(spans)
		runtime.KeepAlive(l)
		b.ReportMetric(float64(ledgerBytes), "ledger-B/10k-requests")
		b.ReportMetric(float64(spanBytes), "spans-B/10k-requests")
		b.ReportMetric(float64(ledgerBytes)/float64(spanBytes), "ledger/spans")
		b.ReportMetric(float64(intervalBytes), "B/10k-intervals")
	}
}

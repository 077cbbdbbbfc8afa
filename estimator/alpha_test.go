package estimator

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// The fitted prompt token weight makes the tokens split charge each request
// its own tokens at the fitted coefficients plus the fixed part (what the
// tokens do not explain) by its share of the completion tokens.
func TestFittedAlphaSplit(t *testing.T) {
	c := coefficients{prompt: 0.02, decode: 0.15, source: "fitted"}
	type req struct{ p, d float64 }
	reqs := []req{{900, 0}, {300, 4}, {0, 10}, {0, 7}}
	var P, D float64
	for _, r := range reqs {
		P, D = P+r.p, D+r.d
	}
	activeJ := 40.0 // the tokens explain 27.15 J of it
	alpha, ok := c.fittedAlpha(activeJ, P, D)
	if !ok {
		t.Fatal("no α from a fit with completion tokens")
	}
	fixed := activeJ - c.prompt*P - c.decode*D
	sumW := 0.0
	for _, r := range reqs {
		sumW += tokenWeight(alpha, r.p, r.d)
	}
	for i, r := range reqs {
		got := activeJ * tokenWeight(alpha, r.p, r.d) / sumW
		want := c.prompt*r.p + c.decode*r.d + fixed*r.d/D
		if !near(got, want) {
			t.Errorf("request %d (%v prompt, %v completion): charged %v J, want %v", i, r.p, r.d, got, want)
		}
	}
	for name, tc := range map[string]struct {
		c       coefficients
		p, d, e float64
	}{
		"warming":                       {coefficients{prompt: 0.02, decode: 0.15, source: "warming"}, 100, 10, 5},
		"no decode tokens":              {c, 100, 0, 5},
		"no per-token cost":             {coefficients{source: "fitted"}, 100, 10, 5},
		"nothing fixed, no decode cost": {coefficients{prompt: 0.05, source: "fitted"}, 100, 10, 5},
	} {
		if a, ok := tc.c.fittedAlpha(tc.e, tc.p, tc.d); ok {
			t.Errorf("%s: α %v, want the fallback", name, a)
		}
	}
	// Tokens claiming more than was measured: nothing fixed, α = c_p / c_d.
	if a, _ := c.fittedAlpha(1, 100, 10); !near(a, c.prompt/c.decode) {
		t.Errorf("over-claimed interval: α %v, want %v", a, c.prompt/c.decode)
	}
}

// Tokens weighting with a fitted α over a long simulated run: the fit
// warms up (the configured fallback, source default), then every interval
// with completion tokens gets a fitted α; the host meter is never fitted
// and keeps the fallback (source host); energy is conserved, every record
// recomputes exactly from its intervals, and two runs are byte-identical.
func TestFittedAlphaRun(t *testing.T) {
	m := defaultSim()
	m.DurationS, m.Rates = 150, []float64{4, 8}
	m.run(rand.New(rand.NewPCG(11, 12)))
	p := testParams("0", HostDevice)
	p.Weighting, p.PromptTokenWeight, p.FitPromptTokenWeight = WeightTokens, 0.1, true
	p.SettleDelay, p.History = 500*time.Millisecond, 15*time.Minute
	var host []Interval // the host meter follows the GPU's load, as a model would
	for _, iv := range m.intervals {
		iv.Device, iv.Joules, iv.Method = HostDevice, 0.3*iv.Joules, MethodModelled
		host = append(host, iv)
	}
	w := workload{devices: []string{"0", HostDevice}, intervals: map[string][]Interval{"0": m.intervals, HostDevice: host}, spans: m.spans,
		beginLess: map[string]bool{}, horizon: m.intervals[len(m.intervals)-1].End.Sub(at(0)).Seconds()}
	mk := func() feed { return feed{ticks: rand.New(rand.NewPCG(1, 2))} }
	res := w.run(t, p, mk())

	sources := map[string]int{}
	for _, st := range res.settled["0"] {
		sources[st.TokenWeight]++
		if st.TokenWeight == alphaFitted && (st.Coefficients != "fitted" || !(st.PromptTokenWeight > 0 && st.PromptTokenWeight < 1)) {
			t.Fatalf("interval at %v: fitted α %v from coefficients %q", st.Start, st.PromptTokenWeight, st.Coefficients)
		}
		if st.TokenWeight == alphaDefault && st.PromptTokenWeight != 0.1 {
			t.Fatalf("interval at %v: default α %v, want the configured 0.1", st.Start, st.PromptTokenWeight)
		}
	}
	if sources[alphaDefault] == 0 || sources[alphaFitted] < sources[alphaDefault] || len(sources) != 2 {
		t.Errorf("α sources %v: want the default while warming, then mostly fitted", sources)
	}
	hostShared := 0
	for _, st := range res.settled[HostDevice] {
		if st.SumWeight > 0 {
			hostShared++
			if st.TokenWeight != alphaHost || st.PromptTokenWeight != 0.1 || st.Coefficients != "" {
				t.Fatalf("host interval at %v: α %v (%q), coefficients %q; want the fallback 0.1 (host), unfitted",
					st.Start, st.PromptTokenWeight, st.TokenWeight, st.Coefficients)
			}
		}
	}
	if hostShared == 0 {
		t.Error("no host interval was shared")
	}
	if l := mustLedger(t, p); l.devs[HostDevice].fit != nil || l.devs["0"].fit == nil {
		t.Errorf("fitters: host %v, GPU %v; want the GPU's only", l.devs[HostDevice].fit != nil, l.devs["0"].fit != nil)
	}

	var charged, idle, metered float64
	for _, r := range res.records {
		charged += r.GPUEnergyJ
		if ex := Explain(p, r, res.settled); !ex.Matches {
			t.Errorf("%s: recomputed from its intervals differs by %v relative", r.ID, ex.MaxRelDiff)
		}
	}
	for _, s := range res.idle {
		if s.Device == "0" {
			idle += s.Joules
		}
	}
	metered = sumJ(m.intervals)
	if len(res.records) != len(m.spans) || math.Abs(charged+idle-metered) > 1e-9*metered {
		t.Errorf("%d records of %d spans; %v J charged + %v J idle, %v J metered", len(res.records), len(m.spans), charged, idle, metered)
	}
	again := w.run(t, p, mk())
	if !bytes.Equal(jsonOf(t, res.records), jsonOf(t, again.records)) {
		t.Error("two runs of the same input differ")
	}
}

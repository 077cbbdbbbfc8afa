package estimator

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

func testParams(devices ...string) Params {
	p := Params{
		Node: "n1", Weighting: WeightTime, PromptTokenWeight: 0.1,
		SettleDelay: 0, History: time.Hour,
		PUE: 1.5, CarbonGPerKWh: 400, WUEOnsiteLPerKWh: 0.5, WaterOffsiteLPerKWh: 4, PricePerKWh: 0.2,
		Devices: map[string]DeviceParams{},
		Models:  map[string]ModelParams{"m": {TrainingCostPerToken: 1e-6}},
	}
	for _, d := range devices {
		p.Devices[d] = DeviceParams{DepreciationPerSecond: 0.001, EmbodiedGPerSecond: 0.01}
	}
	return p
}

func mustLedger(t *testing.T, p Params) *Ledger {
	t.Helper()
	l, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func near(a, b float64) bool {
	return math.Abs(a-b) <= 1e-9*math.Max(1, math.Max(math.Abs(a), math.Abs(b)))
}

func mkSpan(id string, start, end float64, devices ...string) Span {
	return Span{ID: id, Model: "m", Start: at(start), End: at(end), Status: "200", Served: true,
		PromptTokens: 100, CompletionTokens: 50, Devices: devices}
}

func byID(recs []Record) map[string]Record {
	m := map[string]Record{}
	for _, r := range recs {
		m[r.ID] = r
	}
	return m
}

// Two requests overlapping one interval split it by overlap; the part of the
// interval no request covered is idle.
func TestTimeSplitByHand(t *testing.T) {
	tests := []struct {
		name     string
		spans    []Span
		want     map[string]float64
		wantIdle float64
	}{
		{"two overlapping", []Span{mkSpan("a", 0, 0.5, "0"), mkSpan("b", 0.25, 1, "0")},
			map[string]float64{"a": 40, "b": 60}, 0},
		{"one partial", []Span{mkSpan("a", 0, 0.3, "0")}, map[string]float64{"a": 30}, 70},
		{"gap between", []Span{mkSpan("a", 0, 0.2, "0"), mkSpan("b", 0.6, 1, "0")},
			map[string]float64{"a": 20, "b": 40}, 40},
		{"none", nil, map[string]float64{}, 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := mustLedger(t, testParams("0"))
			for _, s := range tc.spans {
				l.Begin(s.ID, s.Start, s.Devices)
			}
			if err := l.AddInterval(Interval{Device: "0", Start: at(0), End: at(1), Joules: 100, Method: MethodCounter}); err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.spans {
				l.End(s)
			}
			out := l.Settle(at(2))
			got := byID(out.Records)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d records, want %d", len(got), len(tc.want))
			}
			for id, want := range tc.want {
				if !near(got[id].GPUEnergyJ, want) {
					t.Errorf("%s: gpu energy = %v, want %v", id, got[id].GPUEnergyJ, want)
				}
				if got[id].GPUMeter != MethodCounter {
					t.Errorf("%s: meter = %q, want counter", id, got[id].GPUMeter)
				}
			}
			idle := 0.0
			for _, s := range out.Idle {
				idle += s.Joules
			}
			if !near(idle, tc.wantIdle) {
				t.Errorf("idle = %v, want %v", idle, tc.wantIdle)
			}
		})
	}
}

// The facility, carbon, water and money figures follow from the energy and
// the parameters, as docs/methodology.md states them.
func TestDerivedFigures(t *testing.T) {
	p := testParams("0")
	l := mustLedger(t, p)
	s := mkSpan("a", 0, 10, "0")
	l.Begin(s.ID, s.Start, s.Devices)
	if err := l.AddInterval(Interval{Device: "0", Start: at(0), End: at(10), Joules: 3.6e6, Method: MethodCounter}); err != nil {
		t.Fatal(err)
	}
	l.End(s)
	r := l.Settle(at(20)).Records[0]
	checks := []struct {
		name      string
		got, want float64
	}{
		{"it", r.ITEnergyJ, 3.6e6},
		{"facility", r.FacilityEnergyJ, 5.4e6},
		{"co2e", r.CO2eG, 1.5 * 400},
		{"water", r.WaterL, 1*0.5 + 1.5*4},
		{"energy cost", r.EnergyCost, 1.5 * 0.2},
		{"depreciation", r.DepreciationCost, 0.01},
		{"embodied", r.EmbodiedCO2eG, 0.1},
		{"training", r.TrainingCost, 150e-6},
		{"dead labour", r.DeadLabourCost, 0.01 + 0.3 + 150e-6},
	}
	for _, c := range checks {
		if !near(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if r.MethodVersion != MethodVersion || r.ParamsHash != p.Hash() || r.Node != "n1" {
		t.Errorf("provenance = %q %q %q", r.MethodVersion, r.ParamsHash, r.Node)
	}
}

// Host energy and static chassis power are split among all requests on the
// node, whatever GPU they ran on.
func TestHostAndStatic(t *testing.T) {
	p := testParams("0", "1", HostDevice)
	p.StaticWatts = 100
	l := mustLedger(t, p)
	a, b := mkSpan("a", 0, 1, "0"), mkSpan("b", 0, 1, "1")
	l.Begin("a", a.Start, a.Devices)
	l.Begin("b", b.Start, b.Devices)
	for _, iv := range []Interval{
		{Device: "0", Start: at(0), End: at(1), Joules: 300, Method: MethodCounter},
		{Device: "1", Start: at(0), End: at(1), Joules: 500, Method: MethodCounter},
		{Device: HostDevice, Start: at(0), End: at(1), Joules: 80, Method: MethodModelled},
	} {
		if err := l.AddInterval(iv); err != nil {
			t.Fatal(err)
		}
	}
	l.End(a)
	l.End(b)
	got := byID(l.Settle(at(2)).Records)
	if !near(got["a"].GPUEnergyJ, 300) || !near(got["b"].GPUEnergyJ, 500) {
		t.Errorf("gpu = %v, %v; want 300, 500", got["a"].GPUEnergyJ, got["b"].GPUEnergyJ)
	}
	for _, id := range []string{"a", "b"} {
		r := got[id]
		if !near(r.HostEnergyJ, 40) || !near(r.StaticEnergyJ, 50) || r.HostMeter != MethodModelled {
			t.Errorf("%s host = %v static = %v meter %q; want 40, 50, modelled", id, r.HostEnergyJ, r.StaticEnergyJ, r.HostMeter)
		}
	}
}

// A request the upstream never served gets a record but no share, even if it
// was charged while in flight.
func TestUnservedTakesNothing(t *testing.T) {
	l := mustLedger(t, testParams("0"))
	l.Begin("a", at(0), []string{"0"})
	if err := l.AddInterval(Interval{Device: "0", Start: at(0), End: at(1), Joules: 100, Method: MethodCounter}); err != nil {
		t.Fatal(err)
	}
	first := l.Settle(at(1)) // charged a, still open
	s := mkSpan("a", 0, 1.5, "0")
	s.Served, s.Status = false, "502"
	l.End(s)
	out := l.Settle(at(3))
	if len(out.Records) != 1 || out.Records[0].GPUEnergyJ != 0 || out.Records[0].Status != "502" {
		t.Fatalf("records = %+v, want one with no energy", out.Records)
	}
	idle := 0.0
	for _, o := range append(first.Idle, out.Idle...) {
		idle += o.Joules
	}
	if !near(idle, 100) {
		t.Errorf("idle = %v, want all 100 J back", idle)
	}
}

// Tokens mode weighs overlap by the span's token rate.
func TestTokensByHand(t *testing.T) {
	p := testParams("0")
	p.Weighting, p.PromptTokenWeight = WeightTokens, 0.5
	l := mustLedger(t, p)
	a, b := mkSpan("a", 0, 1, "0"), mkSpan("b", 0, 1, "0")
	a.PromptTokens, a.CompletionTokens = 100, 50  // 0.5*100+50 = 100 per second
	b.PromptTokens, b.CompletionTokens = 200, 200 // 300 per second
	l.Begin("a", a.Start, a.Devices)
	l.Begin("b", b.Start, b.Devices)
	if err := l.AddInterval(Interval{Device: "0", Start: at(0), End: at(1), Joules: 100, Method: MethodCounter}); err != nil {
		t.Fatal(err)
	}
	if recs := l.Settle(at(1)).Records; len(recs) != 0 {
		t.Fatalf("open spans must hold tokens-mode settlement, got %d records", len(recs))
	}
	l.End(a)
	l.End(b)
	got := byID(l.Settle(at(2)).Records)
	if !near(got["a"].GPUEnergyJ, 25) || !near(got["b"].GPUEnergyJ, 75) {
		t.Errorf("a = %v, b = %v; want 25, 75", got["a"].GPUEnergyJ, got["b"].GPUEnergyJ)
	}
}

// A request reported only after its intervals settled is charged what was
// left and flagged.
func TestLateSpanTruncated(t *testing.T) {
	l := mustLedger(t, testParams("0"))
	for i := 0; i < 3; i++ {
		if err := l.AddInterval(Interval{Device: "0", Start: at(float64(i)), End: at(float64(i + 1)), Joules: 10, Method: MethodCounter}); err != nil {
			t.Fatal(err)
		}
	}
	l.Settle(at(2)) // settles [0,1) and [1,2)
	l.End(mkSpan("a", 0.5, 3, "0"))
	r := l.Settle(at(4)).Records[0]
	if !r.HistoryTruncated || !near(r.GPUEnergyJ, 10) {
		t.Errorf("truncated = %v, energy = %v; want true, 10", r.HistoryTruncated, r.GPUEnergyJ)
	}
}

func TestBadIntervals(t *testing.T) {
	l := mustLedger(t, testParams("0"))
	if err := l.AddInterval(Interval{Device: "0", Start: at(0), End: at(1), Joules: 1}); err != nil {
		t.Fatal(err)
	}
	for name, iv := range map[string]Interval{
		"unknown device": {Device: "9", Start: at(1), End: at(2)},
		"overlap":        {Device: "0", Start: at(0.5), End: at(2)},
		"empty":          {Device: "0", Start: at(2), End: at(2)},
		"negative":       {Device: "0", Start: at(2), End: at(3), Joules: -1},
		"nan":            {Device: "0", Start: at(2), End: at(3), Joules: math.NaN()},
	} {
		if err := l.AddInterval(iv); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// workload is a random run: intervals of irregular length on several
// devices, spans on one or more GPUs, some unserved, settled at random times.
type workload struct {
	devices   []string
	intervals []Interval
	spans     []Span
	measured  map[string]Measured
}

// Measured is the ground truth of one device over a run.
type Measured struct{ joules, depreciation, embodied float64 }

func randomWorkload(rng *rand.Rand, p Params) workload {
	w := workload{measured: map[string]Measured{}}
	for id := range p.Devices {
		w.devices = append(w.devices, id)
	}
	gpus := []string{}
	for _, d := range w.devices {
		if d != HostDevice {
			gpus = append(gpus, d)
		}
	}
	horizon := 20.0
	for _, d := range w.devices {
		t := 0.0
		for t < horizon {
			dt := 0.02 + rng.Float64()*0.2
			if rng.IntN(10) == 0 {
				t += dt // a gap: nobody measured it
				continue
			}
			j := rng.Float64() * 500 * dt
			w.intervals = append(w.intervals, Interval{Device: d, Start: at(t), End: at(t + dt), Joules: j, Method: MethodCounter})
			m := w.measured[d]
			m.joules += j
			m.depreciation += p.Devices[d].DepreciationPerSecond * dt
			m.embodied += p.Devices[d].EmbodiedGPerSecond * dt
			if d == HostDevice {
				m.joules += p.StaticWatts * dt
			}
			w.measured[d] = m
			t += dt
		}
	}
	n := 5 + rng.IntN(60)
	for i := 0; i < n; i++ {
		start := rng.Float64() * (horizon - 1)
		end := start + 0.001 + rng.Float64()*min(5, horizon-start-0.01)
		k := 1 + rng.IntN(len(gpus))
		perm := rng.Perm(len(gpus))[:k]
		var devs []string
		for _, j := range perm {
			devs = append(devs, gpus[j])
		}
		s := mkSpan(fmt.Sprintf("r%03d", i), start, end, devs...)
		s.PromptTokens, s.CompletionTokens = int64(rng.IntN(2000)), int64(rng.IntN(500))
		s.Served = rng.IntN(15) != 0
		w.spans = append(w.spans, s)
	}
	return w
}

// run feeds a workload the way the daemon does: at each tick the intervals
// that closed, the spans that began or ended, then Settle.
func (w workload) run(t *testing.T, p Params, rng *rand.Rand) ([]Record, []IdleShare) {
	t.Helper()
	l := mustLedger(t, p)
	var recs []Record
	var idle []IdleShare
	tick := 0.1 + rng.Float64()*0.3
	next := map[string]int{}
	for now := 0.0; now < 30; now += tick {
		for _, d := range w.devices {
			for i := next[d]; i < len(w.intervals); i++ {
				iv := w.intervals[i]
				if iv.Device != d {
					continue
				}
				if iv.End.After(at(now)) {
					break
				}
				if err := l.AddInterval(iv); err != nil {
					t.Fatal(err)
				}
				next[d] = i + 1
			}
		}
		var events []func()
		for _, s := range w.spans {
			s := s
			if !s.Start.After(at(now)) && s.Start.After(at(now-tick)) {
				events = append(events, func() { l.Begin(s.ID, s.Start, s.Devices) })
			}
			if !s.End.After(at(now)) && s.End.After(at(now-tick)) {
				events = append(events, func() { l.End(s) })
			}
		}
		// Arrival order within a tick must not matter.
		rng.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
		for _, e := range events {
			e()
		}
		out := l.Settle(at(now))
		recs = append(recs, out.Records...)
		idle = append(idle, out.Idle...)
	}
	out := l.Close()
	return append(recs, out.Records...), append(idle, out.Idle...)
}

func TestPropertyConservation(t *testing.T) {
	for seed := uint64(1); seed <= 60; seed++ {
		for _, mode := range []string{WeightTime, WeightTokens} {
			t.Run(fmt.Sprintf("%s/seed%d", mode, seed), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 7))
				p := testParams("0", "1", "2", "3", HostDevice)
				p.Weighting = mode
				p.StaticWatts = 120
				p.SettleDelay = time.Duration(rng.IntN(500)) * time.Millisecond
				w := randomWorkload(rng, p)
				recs, idle := w.run(t, p, rng)

				if len(recs) != len(w.spans) {
					t.Fatalf("%d records for %d spans", len(recs), len(w.spans))
				}
				got := map[string]Measured{}
				seen := map[string]bool{}
				for _, r := range recs {
					if seen[r.ID] {
						t.Fatalf("record %s twice", r.ID)
					}
					seen[r.ID] = true
					devs := map[string]bool{}
					for _, s := range r.PerDevice {
						if devs[s.Device] {
							t.Fatalf("%s charged twice on %s", r.ID, s.Device)
						}
						devs[s.Device] = true
						m := got[s.Device]
						m.joules += s.Joules + s.StaticJoules
						m.depreciation += s.DepreciationCost
						m.embodied += s.EmbodiedCO2eG
						got[s.Device] = m
					}
					if !r.Served && r.ITEnergyJ != 0 {
						t.Errorf("unserved %s charged %v J", r.ID, r.ITEnergyJ)
					}
				}
				for _, s := range idle {
					m := got[s.Device]
					m.joules += s.Joules + s.StaticJoules
					m.depreciation += s.DepreciationCost
					m.embodied += s.EmbodiedCO2eG
					got[s.Device] = m
				}
				for _, d := range w.devices {
					g, want := got[d], w.measured[d]
					if !near(g.joules, want.joules) || !near(g.depreciation, want.depreciation) || !near(g.embodied, want.embodied) {
						t.Errorf("device %s: attributed %+v, measured %+v", d, g, want)
					}
				}
			})
		}
	}
}

func TestPropertyDeterminism(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		p := testParams("0", "1", HostDevice)
		w := randomWorkload(rand.New(rand.NewPCG(seed, 1)), p)
		// Same inputs, different arrival order within ticks: identical records.
		a, ai := w.run(t, p, rand.New(rand.NewPCG(seed, 2)))
		b, bi := w.run(t, p, rand.New(rand.NewPCG(seed, 2)))
		if !reflect.DeepEqual(a, b) || !reflect.DeepEqual(ai, bi) {
			t.Fatalf("seed %d: two runs of the same input differ", seed)
		}
		c, _ := w.run(t, p, rand.New(rand.NewPCG(seed, 3)))
		if len(c) != len(a) {
			t.Fatalf("seed %d: %d vs %d records", seed, len(c), len(a))
		}
	}
}

func TestUniqueTimestamps(t *testing.T) {
	l := mustLedger(t, testParams("0"))
	for i := 0; i < 5; i++ {
		l.End(Span{ID: fmt.Sprint(i), Start: at(0), End: at(1), Served: false})
	}
	recs := l.Settle(at(2)).Records
	seen := map[int64]bool{}
	for _, r := range recs {
		ns := r.Time.UnixNano()
		if seen[ns] {
			t.Fatalf("timestamp %d used twice", ns)
		}
		seen[ns] = true
		if d := r.Time.Sub(r.End); d < 0 || d > 4 {
			t.Errorf("timestamp bumped by %v, want 0-4 ns", d)
		}
	}
}

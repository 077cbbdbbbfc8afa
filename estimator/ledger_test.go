package estimator

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/testutil/basic"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

func testParams(devices ...string) Params {
	p := Params{
		Node: "n1", Weighting: WeightTime, PromptTokenWeight: 0.1,
		SettleDelay: 0, History: time.Hour,
		PUE: 1.5, Carbon: Const(400), WUEOnsiteLPerKWh: 0.5, WaterOffsiteLPerKWh: 4, Price: Const(0.2),
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

// near is the tolerance the tests share (basic.Near).
var near = basic.Near

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
				l.Begin(s)
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
	l.Begin(s)
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
	if r.MethodVersion != MethodVersion || r.ParamsHash != l.Params().Hash() || r.Node != "n1" || r.Weighting != WeightTime {
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
	l.Begin(Span{ID: "a", Start: a.Start, Devices: a.Devices})
	l.Begin(Span{ID: "b", Start: b.Start, Devices: b.Devices})
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
	l.Begin(Span{ID: "a", Start: at(0), Devices: []string{"0"}})
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
	l.Begin(Span{ID: "a", Start: a.Start, Devices: a.Devices})
	l.Begin(Span{ID: "b", Start: b.Start, Devices: b.Devices})
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

func addIntervals(t *testing.T, l *Ledger, ivs ...Interval) {
	t.Helper()
	for _, iv := range ivs {
		if iv.Method == "" {
			iv.Method = MethodCounter
		}
		if err := l.AddInterval(iv); err != nil {
			t.Fatal(err)
		}
	}
}

// Tokens weighting spreads prompt tokens over the prefill phase and
// completion tokens over the decode phase when the first token's time is
// known, and both over the whole request when it is not.
func TestTokensPhases(t *testing.T) {
	p := testParams("0")
	p.Weighting, p.PromptTokenWeight = WeightTokens, 0.5
	l := mustLedger(t, p)
	a := mkSpan("a", 0, 1, "0") // streamed: prefill [0, 0.5), decode [0.5, 1)
	a.FirstToken, a.PromptTokens, a.CompletionTokens = at(0.5), 100, 100
	b := mkSpan("b", 0, 1, "0") // not streamed: even over [0, 1)
	b.PromptTokens, b.CompletionTokens = 0, 50
	addIntervals(t, l, Interval{Device: "0", Start: at(0), End: at(0.5), Joules: 100},
		Interval{Device: "0", Start: at(0.5), End: at(1), Joules: 100})
	l.End(a)
	l.End(b)
	got := byID(l.Settle(at(2)).Records)
	// [0, 0.5): a 0.5×100 prompt = 50, b 25 decode: a takes 2/3.
	// [0.5, 1): a 100 decode, b 25: a takes 4/5.
	if want := 100*2.0/3 + 100*4.0/5; !near(got["a"].GPUEnergyJ, want) || !near(got["b"].GPUEnergyJ, 200-want) {
		t.Errorf("a = %v, b = %v; want %v, %v", got["a"].GPUEnergyJ, got["b"].GPUEnergyJ, want, 200-want)
	}
}

// Marginal weighting: each request's token part is its own, the rest of the
// interval is fixed and shared by overlap; wear is all fixed. When the
// tokens claim more than the interval holds, they share it in proportion.
func TestMarginalByHand(t *testing.T) {
	for _, tc := range []struct {
		name       string
		joules     float64
		wantA      float64
		wantB      float64
		wantFixedJ float64
	}{
		// Token parts a = 0.1×100 + 1×20 = 30, b = 1×10 = 10; fixed 60 halved.
		{"fixed part", 100, 30 + 30, 10 + 30, 60},
		// Tokens claim 40 J of 20: 3:1.
		{"tokens exceed", 20, 15, 5, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testParams("0", HostDevice)
			p.Weighting = WeightMarginal
			p.Marginal = MarginalParams{PromptJPerToken: 0.1, DecodeJPerToken: 1}
			l := mustLedger(t, p)
			a, b := mkSpan("a", 0, 1, "0"), mkSpan("b", 0, 1, "0")
			a.PromptTokens, a.CompletionTokens = 100, 20
			b.PromptTokens, b.CompletionTokens = 0, 10
			addIntervals(t, l, Interval{Device: "0", Start: at(0), End: at(1), Joules: tc.joules},
				Interval{Device: HostDevice, Start: at(0), End: at(1), Joules: 30})
			l.End(a)
			l.End(b)
			out := l.Settle(at(2))
			got := byID(out.Records)
			if !near(got["a"].GPUEnergyJ, tc.wantA) || !near(got["b"].GPUEnergyJ, tc.wantB) {
				t.Errorf("gpu a = %v, b = %v; want %v, %v", got["a"].GPUEnergyJ, got["b"].GPUEnergyJ, tc.wantA, tc.wantB)
			}
			for _, id := range []string{"a", "b"} {
				if r := got[id]; !near(r.HostEnergyJ, 15) || !near(r.PerDevice[0].DepreciationCost, 0.0005) {
					t.Errorf("%s: host %v J, GPU depreciation %v; want 15 and 0.0005 (by overlap)", id, r.HostEnergyJ, r.PerDevice[0].DepreciationCost)
				}
			}
			for _, st := range out.Settled {
				if st.Device == "0" && (!near(st.FixedJ, tc.wantFixedJ) || st.Coefficients != "configured") {
					t.Errorf("settlement fixed %v J (%s), want %v (configured)", st.FixedJ, st.Coefficients, tc.wantFixedJ)
				}
			}
		})
	}
}

// The fit finds the coefficients of exact linear data, and clamps a
// coefficient the data say is negative to zero.
func TestFitterRecovers(t *testing.T) {
	for _, tc := range []struct {
		name string
		beta [fitVars]float64
		bias float64 // J per prompt token added to the data: negative, clamped
	}{
		{"all positive", [fitVars]float64{70, 350, 0.02, 0.15}, 0},
		{"no prompt cost", [fitVars]float64{60, 300, 0, 0.2}, 0},
		{"negative prompt cost", [fitVars]float64{60, 300, 0, 0.2}, -0.001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := fitter{}
			for i := 0; i < 400; i++ {
				busy := float64(i%10) / 10 * 0.1
				x := [fitVars]float64{0.1 - busy, busy, float64((i * 37) % 900), float64((i*11)%40) * busy * 10}
				y := 0.0
				for k := range x {
					y += tc.beta[k] * x[k]
				}
				f.add(0.1, [rawVars]float64{x[0], x[1], x[2], x[3]}, 0, y+tc.bias*x[2])
			}
			got, ok := f.solve()
			if !ok {
				t.Fatal("no fit")
			}
			for k := range got {
				if got[k] < 0 {
					t.Errorf("coefficient %d = %v, negative", k, got[k])
				}
				if tc.bias == 0 && abs(got[k]-tc.beta[k]) > 1e-6*max(tc.beta[k], 1) {
					t.Errorf("coefficient %d = %v, want %v", k, got[k], tc.beta[k])
				}
			}
			if tc.bias < 0 && got[2] != 0 {
				t.Errorf("prompt coefficient %v, want it clamped to 0", got[2])
			}
		})
	}
}

func abs(x float64) float64 { return math.Abs(x) }

// The loaded figures: each interval's idle goes to the requests active in
// it, in proportion to their share; an interval with no request is
// unabsorbed idle.
func TestLoadedByHand(t *testing.T) {
	p := testParams("0")
	l := mustLedger(t, p)
	for i := 0; i < 10; i++ {
		addIntervals(t, l, Interval{Device: "0", Start: at(float64(i)), End: at(float64(i + 1)), Joules: 100})
	}
	// a fills [0, 2); b runs in the first quarter of [9, 10).
	a, b := mkSpan("a", 0, 2, "0"), mkSpan("b", 9, 9.25, "0")
	l.End(a)
	l.End(b)
	out := l.Settle(at(20))
	got := byID(out.Records)
	ra, rb := got["a"], got["b"]
	if ra.IdleUplift != 0 || ra.LoadedGPUEnergyJ != ra.GPUEnergyJ || ra.LoadedDepreciationCost != ra.DepreciationCost {
		t.Errorf("a ran on a busy GPU: uplift %v, loaded %v of %v J", ra.IdleUplift, ra.LoadedGPUEnergyJ, ra.GPUEnergyJ)
	}
	// b: 25 J of its own, the interval's 75 J idle absorbed.
	checks := []struct {
		name      string
		got, want float64
	}{
		{"gpu", rb.GPUEnergyJ, 25},
		{"idle_uplift", rb.IdleUplift, 3},
		{"loaded gpu", rb.LoadedGPUEnergyJ, 100},
		{"loaded it", rb.LoadedITEnergyJ, 100},
		{"loaded facility", rb.LoadedFacilityEnergyJ, 150},
		{"loaded co2e", rb.LoadedCO2eG, rb.CO2eG * 4},
		{"loaded depreciation", rb.LoadedDepreciationCost, 0.001},
		{"loaded embodied", rb.LoadedEmbodiedCO2eG, 0.01},
		{"loaded energy cost", rb.LoadedEnergyCost, rb.EnergyCost * 4},
		{"loaded dead labour", rb.LoadedDeadLabourCost, 0.001 + rb.EnergyCost*4 + rb.TrainingCost},
	}
	for _, c := range checks {
		if !near(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	// Idle: 7 intervals with no request, unabsorbed; 75 J absorbed by b.
	var unabsorbed, absorbed float64
	for _, is := range out.Idle {
		if is.Unabsorbed {
			unabsorbed += is.Joules
		} else {
			absorbed += is.Joules
		}
	}
	if !near(unabsorbed, 700) || !near(absorbed, 75) {
		t.Errorf("idle: %v J unabsorbed, %v J absorbed; want 700 and 75", unabsorbed, absorbed)
	}
}

// Carbon intensity and price are taken at each interval's midpoint;
// market-based carbon, water, training and living labour per token.
func TestTimeVaryingFactors(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	p := testParams("0")
	p.PUE = 1.25
	p.Carbon = Rate{Value: 999, Steps: []Step{{at(-5), 100}, {at(1), 300}}}
	p.CarbonMarket = &Rate{Value: 50}
	// 2026-01-01 00:00 UTC is 01:00 in Berlin: a night tariff from 00:00 to 01:00:01 local.
	p.Price = Rate{Value: 0.2, Zone: berlin, ZoneName: "Europe/Berlin",
		Weekly: []Window{{Days: EveryDay, From: 0, To: time.Hour + time.Second, Value: 0.1}}}
	p.Models = map[string]ModelParams{"m": {TrainingCostPerToken: 1e-6, TrainingCO2eGPerToken: 0.01, TrainingEnergyJPerToken: 2, LivingLabourSPerToken: 0.001}}
	l := mustLedger(t, p)
	addIntervals(t, l, Interval{Device: "0", Start: at(0), End: at(1), Joules: 3.6e6},
		Interval{Device: "0", Start: at(1), End: at(2), Joules: 3.6e6})
	l.End(mkSpan("a", 0, 2, "0"))
	r := l.Settle(at(3)).Records[0]
	checks := []struct {
		name      string
		got, want float64
	}{
		{"co2e", r.CO2eG, 1.25*100 + 1.25*300},
		{"co2e market", r.CO2eMarketG, 2.5 * 50},
		{"energy cost", r.EnergyCost, 1.25*0.1 + 1.25*0.2},
		{"water onsite", r.WaterOnsiteL, 2 * 0.5},
		{"water offsite", r.WaterOffsiteL, 2.5 * 4},
		{"water", r.WaterL, 1 + 10},
		{"training co2e", r.TrainingCO2eG, 150 * 0.01},
		{"training energy", r.TrainingEnergyJ, 150 * 2},
		{"living labour", r.LivingLabourS, 150 * 0.001},
	}
	for _, c := range checks {
		if !near(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if !r.HasMarketCarbon || !r.HasTrainingCO2e || !r.HasTrainingEnergy || !r.HasLivingLabour {
		t.Errorf("flags %v %v %v %v, want all set", r.HasMarketCarbon, r.HasTrainingCO2e, r.HasTrainingEnergy, r.HasLivingLabour)
	}
}

func TestRateAt(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	weekdays := EveryDay &^ (1<<time.Saturday | 1<<time.Sunday)
	tou := Rate{Value: 0.2, Zone: berlin, Weekly: []Window{
		{Days: weekdays, From: 7 * time.Hour, To: 22 * time.Hour, Value: 0.3},
		{Days: 1 << time.Friday, From: 22 * time.Hour, To: 6 * time.Hour, Value: 0.05}, // Friday night into Saturday
	}}
	series := Rate{Value: 9, Steps: []Step{{at(0), 1}, {at(3600), 2}, {at(7200), 3}}}
	local := func(s string) time.Time {
		t, err := time.ParseInLocation("2006-01-02 15:04", s, berlin)
		if err != nil {
			panic(err)
		}
		return t
	}
	for _, tc := range []struct {
		name string
		r    Rate
		at   time.Time
		want float64
	}{
		{"const", Const(0.15), at(5), 0.15},
		{"before the first step", series, at(-10), 1},
		{"on a step", series, at(3600), 2},
		{"between steps", series, at(5000), 2},
		{"after the last step", series, at(1e6), 3},
		{"weekday peak", tou, local("2026-03-04 12:00"), 0.3}, // a Wednesday
		{"weekday evening", tou, local("2026-03-04 22:30"), 0.2},
		{"weekend day", tou, local("2026-03-07 12:00"), 0.2},
		{"friday night", tou, local("2026-03-06 23:00"), 0.05},
		{"saturday morning, friday's night", tou, local("2026-03-07 05:59"), 0.05},
		{"sunday morning", tou, local("2026-03-08 05:00"), 0.2},
		{"peak on the DST day, by the wall clock", tou, local("2026-03-30 07:30"), 0.3}, // Monday after the change
		{"DST change day 07:01", tou, time.Date(2026, 3, 27, 6, 1, 0, 0, time.UTC), 0.3},
	} {
		if got := tc.r.At(tc.at); got != tc.want {
			t.Errorf("%s: At(%v) = %v, want %v", tc.name, tc.at, got, tc.want)
		}
	}
}

// A request that ends after its device stopped reporting is charged what
// was seen, flagged, and its charge stops there: later intervals of the
// device go to others or idle, so nothing is lost.
func TestDeviceStopsReporting(t *testing.T) {
	p := testParams("0")
	p.History = 2 * time.Second
	l := mustLedger(t, p)
	addIntervals(t, l, Interval{Device: "0", Start: at(0), End: at(1), Joules: 100})
	l.End(mkSpan("a", 0, 3, "0"))
	out := l.Settle(at(6))
	if len(out.Records) != 1 || !out.Records[0].HistoryTruncated || !near(out.Records[0].GPUEnergyJ, 100) {
		t.Fatalf("records %+v, want one flagged with 100 J", out.Records)
	}
	if ct := out.Records[0].PerDevice[0].ChargedTo; !ct.Equal(at(1)) {
		t.Errorf("charged to %v, want %v", ct, at(1))
	}
	addIntervals(t, l, Interval{Device: "0", Start: at(1), End: at(5), Joules: 400})
	out = l.Settle(at(7))
	idle := 0.0
	for _, s := range out.Idle {
		idle += s.Joules
	}
	if !near(idle, 400) {
		t.Errorf("the late interval's idle = %v, want all 400 J", idle)
	}
}

// Explain lists the intervals and recomputes the record; without the
// intervals it says the figures do not match.
func TestExplainByHand(t *testing.T) {
	p := testParams("0")
	l := mustLedger(t, p)
	l.Begin(Span{ID: "b", Start: at(0), Devices: []string{"0"}})
	addIntervals(t, l, Interval{Device: "0", Start: at(0), End: at(1), Joules: 100},
		Interval{Device: "0", Start: at(1), End: at(2), Joules: 50})
	l.End(mkSpan("a", 0.5, 1.5, "0"))
	l.End(mkSpan("b", 0, 2, "0"))
	out := l.Settle(at(3))
	settled := map[string][]Settlement{}
	for _, st := range out.Settled {
		settled[st.Device] = append(settled[st.Device], st)
	}
	a := byID(out.Records)["a"]
	ex := Explain(l.Params(), a, settled)
	if !ex.Matches || len(ex.Devices) != 1 || len(ex.Devices[0].Intervals) != 2 {
		t.Fatalf("explanation %+v, want two intervals that recompute the record", ex)
	}
	c := ex.Devices[0].Intervals[0]
	if !near(c.OverlapS, 0.5) || !near(c.Share, 0.5/1.5) || !near(c.Joules, 100*0.5/1.5) || c.Method != MethodCounter {
		t.Errorf("first interval: overlap %v, share %v, %v J, %s; want 0.5, 1/3, 33.3, counter", c.OverlapS, c.Share, c.Joules, c.Method)
	}
	settled["0"] = settled["0"][1:] // the first interval no longer kept
	if ex := Explain(l.Params(), a, settled); ex.Matches || !ex.Devices[0].KeptFrom.Equal(at(1)) {
		t.Errorf("with an interval missing: matches %v, kept from %v; want false, %v", ex.Matches, ex.Devices[0].KeptFrom, at(1))
	}
}

// The covered fraction is the union of the requests' stretches, whatever
// order the phase model leaves them in: here b starts before a but entered
// the batch (its prefill began) after a ended.
func TestCoveredUnion(t *testing.T) {
	p := testParams("0")
	p.Weighting = WeightTokens
	l := mustLedger(t, p)
	a := mkSpan("a", 0.1, 0.3, "0") // not streamed: [0.1, 0.3)
	b := mkSpan("b", 0, 1, "0")     // queued until 0.6, prefill to 0.7, decoding to 1
	b.FirstToken, b.PromptTokens, b.CompletionTokens = at(0.7), 0, 4
	addIntervals(t, l, Interval{Device: "0", Start: at(0), End: at(1), Joules: 100})
	l.End(a)
	l.End(b)
	out := l.Settle(at(2))
	idle := 0.0
	for _, s := range out.Idle {
		idle += s.Joules
	}
	// b decodes 4 tokens in 0.3 s: a step of 0.1 s; its prefill of 0 prompt
	// tokens took one step, from 0.6. Covered: [0.1, 0.3) and [0.6, 1).
	if !near(idle, 40) {
		t.Errorf("idle = %v J, want 40 (covered 0.6 of the interval)", idle)
	}
}

// WindowStart aligns to the Unix epoch, also for lengths that do not
// divide a day and for times before 1970.
func TestWindowStart(t *testing.T) {
	for _, tt := range []struct {
		t    time.Time
		d    time.Duration
		want time.Time
	}{
		{time.Unix(20, 999), 7 * time.Second, time.Unix(14, 0)},
		{time.Unix(21, 0), 7 * time.Second, time.Unix(21, 0)},
		{time.Unix(1_772_366_407, 5), 11 * time.Second, time.Unix(1_772_366_407-1_772_366_407%11, 0)},
		{time.Unix(-3, 0), 10 * time.Second, time.Unix(-10, 0)},
		{time.Date(2026, 3, 1, 12, 0, 59, 0, time.UTC), time.Minute, time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
	} {
		if got := WindowStart(tt.t, tt.d); !got.Equal(tt.want) {
			t.Errorf("WindowStart(%v, %v) = %v, want %v", tt.t.UnixNano(), tt.d, got.UnixNano(), tt.want.UnixNano())
		}
	}
}

// A request the upstream did not serve gives its charge back to idle, and
// the idle it absorbed too: all of its loaded share becomes unabsorbed
// idle, so that loaded + unabsorbed still equals what was measured.
func TestRefundGivesBackLoadedShare(t *testing.T) {
	p := testParams("0")
	l := mustLedger(t, p)
	l.Begin(Span{ID: "refused", Start: at(0), Devices: []string{"0"}})
	l.Begin(Span{ID: "b", Start: at(0.5), Devices: []string{"0"}})
	var recs []Record
	var idle []IdleShare
	for k := 0; k < 30; k++ {
		if err := l.AddInterval(Interval{Device: "0", Start: at(float64(k)), End: at(float64(k + 1)), Joules: 100, Method: MethodCounter}); err != nil {
			t.Fatal(err)
		}
		switch k {
		case 20: // charged 0-20 s while in flight; it ended at 10 s, unserved
			s := mkSpan("refused", 0, 10, "0")
			s.Served, s.Status = false, "502"
			l.End(s)
		case 22:
			l.End(mkSpan("b", 0.5, 22, "0"))
		}
		out := l.Settle(at(float64(k + 1)))
		recs, idle = append(recs, out.Records...), append(idle, out.Idle...)
	}
	out := l.Close()
	recs, idle = append(recs, out.Records...), append(idle, out.Idle...)
	var loaded, active, unabsorbed, all float64
	for _, r := range recs {
		loaded += r.LoadedGPUEnergyJ
		active += r.GPUEnergyJ
		if r.ID == "refused" && (r.GPUEnergyJ != 0 || r.LoadedGPUEnergyJ != 0) {
			t.Errorf("refused: %v J, loaded %v J; want none", r.GPUEnergyJ, r.LoadedGPUEnergyJ)
		}
	}
	for _, is := range idle {
		all += is.Joules
		if is.Unabsorbed {
			unabsorbed += is.Joules
		}
	}
	if !near(loaded+unabsorbed, 3000) || !near(active+all, 3000) {
		t.Errorf("loaded %v + unabsorbed %v, active %v + idle %v; want 3000 J each", loaded, unabsorbed, active, all)
	}
	// b keeps what it was charged beside the refused request (by time: a
	// third of [0, 1), half of each of [1, 20)), and [20, 22) alone.
	if b, want := byID(recs)["b"], 100.0/3+19*50+200; !near(b.GPUEnergyJ, want) {
		t.Errorf("b: %v J, want %v", b.GPUEnergyJ, want)
	}
}

// A request still open at Close (an event-API begin with no end, at
// shutdown) is recorded with what it was charged: status abandoned,
// flagged truncated, ending where its devices' intervals end. Its energy
// was neither in a record nor in the idle ledger before.
func TestCloseRecordsOpenRequests(t *testing.T) {
	l := mustLedger(t, testParams("0"))
	l.Begin(Span{ID: "open", Start: at(2), Devices: []string{"0"}})
	var recs []Record
	idle := 0.0
	take := func(out Output) {
		recs = append(recs, out.Records...)
		for _, s := range out.Idle {
			idle += s.Joules
		}
	}
	for k := 0; k < 10; k++ {
		if err := l.AddInterval(Interval{Device: "0", Start: at(float64(k)), End: at(float64(k + 1)), Joules: 100, Method: MethodCounter}); err != nil {
			t.Fatal(err)
		}
		take(l.Settle(at(float64(k + 1))))
	}
	take(l.Close())
	if len(recs) != 1 {
		t.Fatalf("records %+v, want the open request's", recs)
	}
	r := recs[0]
	if r.ID != "open" || r.Status != StatusAbandoned || !r.HistoryTruncated || !r.Served || !r.End.Equal(at(10)) ||
		r.PromptTokens != -1 || r.CompletionTokens != -1 || r.UsageSource != UsageUnknown {
		t.Errorf("record %+v, want request open, abandoned, truncated, ending at 10 s with unknown tokens", r)
	}
	if !near(r.GPUEnergyJ, 800) || !near(r.GPUEnergyJ+idle, 1000) {
		t.Errorf("%v J in the record + %v J idle, want 800 + 200 of the 1000 J measured", r.GPUEnergyJ, idle)
	}
	if _, spans := l.Pending(); spans != 0 {
		t.Errorf("%d spans left after Close", spans)
	}
}

// The parameters must be finite: an infinite PUE, power or rate makes
// every record's figures infinite, and InfluxDB takes no such field.
func TestNewRejectsNonFiniteParams(t *testing.T) {
	inf, nan := math.Inf(1), math.NaN()
	for name, f := range map[string]func(*Params){
		"PUE":                    func(p *Params) { p.PUE = inf },
		"PUE NaN":                func(p *Params) { p.PUE = nan },
		"static watts":           func(p *Params) { p.StaticWatts = inf },
		"prompt token weight":    func(p *Params) { p.PromptTokenWeight = inf },
		"WUE":                    func(p *Params) { p.WUEOnsiteLPerKWh = inf },
		"off-site water":         func(p *Params) { p.WaterOffsiteLPerKWh = nan },
		"carbon":                 func(p *Params) { p.Carbon = Const(inf) },
		"carbon step":            func(p *Params) { p.Carbon.Steps = []Step{{at(0), nan}} },
		"market carbon":          func(p *Params) { p.CarbonMarket = &Rate{Value: inf} },
		"price window":           func(p *Params) { p.Price.Weekly = []Window{{Days: EveryDay, To: time.Hour, Value: inf}} },
		"marginal":               func(p *Params) { p.Marginal.DecodeJPerToken = inf },
		"depreciation":           func(p *Params) { p.Devices["0"] = DeviceParams{DepreciationPerSecond: inf} },
		"embodied":               func(p *Params) { p.Devices["0"] = DeviceParams{EmbodiedGPerSecond: nan} },
		"training cost":          func(p *Params) { p.Models["m"] = ModelParams{TrainingCostPerToken: inf} },
		"living labour":          func(p *Params) { p.Models["m"] = ModelParams{LivingLabourSPerToken: nan} },
		"negative static watts":  func(p *Params) { p.StaticWatts = -1 },
		"negative price":         func(p *Params) { p.Price = Const(-0.1) },
		"negative training cost": func(p *Params) { p.Models["m"] = ModelParams{TrainingCostPerToken: -1} },
	} {
		p := testParams("0")
		f(&p)
		if _, err := New(p); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	if _, err := New(testParams("0", HostDevice)); err != nil {
		t.Errorf("New(test params) = %v", err)
	}
}

// A record's meter method sums its devices': one GPU whose intervals came
// from the counter and from power samples is mixed, and so is the record.
func TestMethodOfMixedDevice(t *testing.T) {
	l := mustLedger(t, testParams("0"))
	l.Begin(Span{ID: "r", Start: at(0), Devices: []string{"0"}})
	for k, m := range []Method{MethodCounter, MethodPowerIntegral} {
		if err := l.AddInterval(Interval{Device: "0", Start: at(float64(k)), End: at(float64(k + 1)), Joules: 10, Method: m}); err != nil {
			t.Fatal(err)
		}
	}
	l.End(mkSpan("r", 0, 2, "0"))
	recs := l.Settle(at(3)).Records
	if len(recs) != 1 || recs[0].PerDevice[0].Method != MethodMixed || recs[0].GPUMeter != MethodMixed {
		t.Fatalf("records %+v, want one whose GPU 0 share and GPU meter are mixed", recs)
	}
	for _, m := range []Method{MethodCounter, MethodPowerIntegral, MethodModelled, MethodStatic, MethodMixed} {
		if got := methodBit(m).method(); got != m {
			t.Errorf("the method set of %s alone is %s", m, got)
		}
	}
	if got := (methodBit(MethodCounter) | methodBit(MethodModelled)).method(); got != MethodMixed {
		t.Errorf("counter + modelled = %s, want mixed", got)
	}
	if got := methodSet(0).method(); got != MethodNone {
		t.Errorf("no method = %s, want none", got)
	}
}

// A span whose scheduled time is known (a trace) is charged nothing while
// it queued, its prompt tokens over [scheduled, first token) and its
// completion tokens over [first token, end); time weighting charges the
// whole span; a scheduled time out of order is ignored.
func TestPhasesScheduled(t *testing.T) {
	s := mkSpan("a", 0, 10)
	s.PromptTokens, s.CompletionTokens = 400, 100
	s.FirstToken, s.Scheduled = at(6), at(4)
	ph := phasesOf(&s, true)
	if ph.in != at(4).UnixNano() || ph.ft != at(6).UnixNano() || ph.uniform {
		t.Fatalf("phases %+v: want in at 4 s, first token at 6 s", ph)
	}
	if p, d := ph.tokensIn(at(4).UnixNano(), at(6).UnixNano()); !near(p, 400) || d != 0 {
		t.Errorf("prefill: %v prompt, %v completion tokens; want 400, 0", p, d)
	}
	if p, d := ph.tokensIn(at(6).UnixNano(), at(10).UnixNano()); p != 0 || !near(d, 100) {
		t.Errorf("decode: %v prompt, %v completion tokens; want 0, 100", p, d)
	}
	if ph := phasesOf(&s, false); ph.in != at(0).UnixNano() {
		t.Errorf("time weighting: in at %v, want the start", ph.in)
	}
	// Known without a first token: both kinds evenly over [scheduled, end).
	ns := s
	ns.FirstToken = time.Time{}
	ph = phasesOf(&ns, true)
	if p, d := ph.tokensIn(at(4).UnixNano(), at(10).UnixNano()); ph.in != at(4).UnixNano() || !ph.uniform || !near(p, 400) || !near(d, 100) {
		t.Errorf("not streamed: in %v, %v prompt, %v completion tokens; want 4 s, 400, 100", ph.in, p, d)
	}
	// Out of order (at or after the first token, before the start): inferred as without.
	clean := s
	clean.Scheduled = time.Time{}
	want := phasesOf(&clean, true)
	for _, sc := range []float64{6, 7, -1} {
		bad := s
		bad.Scheduled = at(sc)
		if got := phasesOf(&bad, true); got != want {
			t.Errorf("scheduled at %v s: phases %+v, want %+v (ignored)", sc, got, want)
		}
	}
}

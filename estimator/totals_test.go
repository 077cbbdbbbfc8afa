package estimator

import (
	"fmt"
	"testing"
	"time"
)

// Idle hour, busy hour, idle hour, as the issue that redesigned the loaded
// figures replayed it: Σ loaded + unabsorbed idle is what was measured (the
// old trailing-window uplift summed to 1.86× the energy and 2.51× the
// wear), and no request carries more than the intervals it ran in — the
// first request after the idle hour used to carry about 70 Wh.
func TestLoadedIdleBusyIdle(t *testing.T) {
	p := testParams("0")
	l := mustLedger(t, p)
	const step = 1.0 // s, one interval
	var recs []Record
	var idle []IdleShare
	measuredJ, measuredDep := 0.0, 0.0
	n := 0
	for k := 0; k < 3*3600; k++ {
		s := float64(k) * step
		busy := k >= 3600 && k < 7200
		j := 60.0 // idle power
		if busy {
			j = 500
			if k%2 == 0 { // a 0.5 s request every other second
				sp := mkSpan(fmt.Sprintf("r%05d", n), s+0.25, s+0.75, "0")
				l.End(sp)
				n++
			}
		}
		addIntervals(t, l, Interval{Device: "0", Start: at(s), End: at(s + step), Joules: j})
		measuredJ += j
		measuredDep += 0.001 * step
		out := l.Settle(at(s + step))
		recs, idle = append(recs, out.Records...), append(idle, out.Idle...)
	}
	out := l.Close()
	recs, idle = append(recs, out.Records...), append(idle, out.Idle...)
	if len(recs) != n {
		t.Fatalf("%d records for %d requests", len(recs), n)
	}
	var loadedJ, loadedDep, unJ, unDep float64
	for _, r := range recs {
		loadedJ += r.LoadedGPUEnergyJ
		loadedDep += r.LoadedDepreciationCost
		// Its interval: 500 J, half of it its own.
		if r.LoadedGPUEnergyJ > 500*(1+1e-9) || !near(r.GPUEnergyJ, 250) {
			t.Fatalf("%s: %v J, loaded %v J; want 250 J, at most 500 J loaded", r.ID, r.GPUEnergyJ, r.LoadedGPUEnergyJ)
		}
	}
	for _, is := range idle {
		if is.Unabsorbed {
			unJ += is.Joules
			unDep += is.DepreciationCost
		}
	}
	if !near(loadedJ+unJ, measuredJ) || !near(loadedDep+unDep, measuredDep) {
		t.Errorf("loaded %v + unabsorbed %v J = %v, measured %v; depreciation %v + %v, measured %v",
			loadedJ, unJ, loadedJ+unJ, measuredJ, loadedDep, unDep, measuredDep)
	}
	if loadedJ > measuredJ*(1+1e-9) {
		t.Errorf("Σ loaded %v J is more than was measured (%v J)", loadedJ, measuredJ)
	}
	// The idle hours are overcapacity: unabsorbed, with every busy second
	// that ran no request.
	if want := 2*3600*60.0 + 1800*500; !near(unJ, want) {
		t.Errorf("unabsorbed %v J, want %v", unJ, want)
	}
}

// A device past its service life is charged no wear from then on, and the
// records and idle that ran past it say so.
func TestWearEndsWithServiceLife(t *testing.T) {
	p := testParams("0")
	dp := p.Devices["0"]
	dp.WearUntil = at(5)
	p.Devices["0"] = dp
	l := mustLedger(t, p)
	for i := 0; i < 10; i++ {
		addIntervals(t, l, Interval{Device: "0", Start: at(float64(i)), End: at(float64(i + 1)), Joules: 100})
	}
	l.End(mkSpan("before", 1, 2, "0"))
	l.End(mkSpan("across", 4.5, 5.5, "0"))
	l.End(mkSpan("after", 7, 8, "0"))
	out := l.Settle(at(20))
	got := byID(out.Records)
	for _, c := range []struct {
		id    string
		dep   float64
		ended bool
	}{{"before", 0.001, false}, {"across", 0.0005, true}, {"after", 0, true}} {
		r := got[c.id]
		if !near(r.DepreciationCost, c.dep) || !near(r.EmbodiedCO2eG, c.dep*10) || r.WearEnded != c.ended {
			t.Errorf("%s: depreciation %v, embodied %v, wear ended %v; want %v, %v, %v", c.id, r.DepreciationCost, r.EmbodiedCO2eG, r.WearEnded, c.dep, c.dep*10, c.ended)
		}
		if !near(r.GPUEnergyJ, 100) {
			t.Errorf("%s: %v J, want 100 (energy does not stop with the life)", c.id, r.GPUEnergyJ)
		}
	}
	dep := 0.0
	for _, r := range out.Records {
		dep += r.DepreciationCost
	}
	for _, is := range out.Idle {
		dep += is.DepreciationCost
	}
	if !near(dep, 0.005) {
		t.Errorf("total depreciation %v, want 5 s of it (0.005)", dep)
	}
}

// Time the daemon was down is charged to idle wear, unabsorbed and marked
// unmetered, with no energy; and none past a device's service life.
func TestUnmeteredDowntime(t *testing.T) {
	p := testParams("0", "1", HostDevice)
	dp := p.Devices["1"]
	dp.WearUntil = at(30)
	p.Devices["1"] = dp
	l := mustLedger(t, p)
	var got []IdleShare
	for _, id := range l.Devices() {
		is, ok := l.Unmetered(id, at(0), at(60))
		if !ok {
			t.Fatalf("no downtime share for %s", id)
		}
		got = append(got, is)
	}
	want := map[string]float64{"0": 0.06, "1": 0.03, HostDevice: 0.06}
	for _, is := range got {
		if !is.Unmetered || !is.Unabsorbed || is.Method != MethodUnmetered || is.Joules != 0 || is.CO2eG != 0 || is.EnergyCost != 0 {
			t.Errorf("%s: %+v, want unmetered, unabsorbed wear only", is.Device, is)
		}
		if !near(is.DepreciationCost, want[is.Device]) || !near(is.EmbodiedCO2eG, 10*want[is.Device]) {
			t.Errorf("%s: depreciation %v, embodied %v; want %v, %v", is.Device, is.DepreciationCost, is.EmbodiedCO2eG, want[is.Device], 10*want[is.Device])
		}
		if is.WearEnded != (is.Device == "1") {
			t.Errorf("%s: wear ended %v", is.Device, is.WearEnded)
		}
	}
	if _, ok := l.Unmetered("0", at(5), at(5)); ok {
		t.Error("an empty downtime gave an idle share")
	}
	if _, ok := l.Unmetered("7", at(0), at(5)); ok {
		t.Error("an unknown device gave an idle share")
	}
}

// Idle carries the whole ledger: carbon and cost at the interval's own
// intensity and price, facility energy and water from its energy.
func TestIdleCarriesEverything(t *testing.T) {
	p := testParams("0")
	p.Carbon = Rate{Value: 100, Steps: []Step{{at(0), 100}, {at(1), 300}}}
	p.CarbonMarket = &Rate{Value: 20}
	p.Price = Rate{Value: 0.1, Steps: nil, Weekly: []Window{{Days: EveryDay, From: 0, To: 24 * time.Hour, Value: 0.3}}}
	l := mustLedger(t, p)
	addIntervals(t, l, Interval{Device: "0", Start: at(0), End: at(1), Joules: 3.6e6},
		Interval{Device: "0", Start: at(1), End: at(2), Joules: 3.6e6})
	out := l.Settle(at(10))
	if len(out.Idle) != 2 {
		t.Fatalf("%d idle shares, want 2", len(out.Idle))
	}
	for i, want := range []float64{100, 300} {
		is := out.Idle[i]
		// 1 kWh IT, 1.5 kWh facility.
		if !near(is.FacilityEnergyJ, 1.5*3.6e6) || !near(is.CO2eG, 1.5*want) || !near(is.CO2eMarketG, 1.5*20) ||
			!near(is.EnergyCost, 1.5*0.3) || !near(is.WaterOnsiteL, 0.5) || !near(is.WaterOffsiteL, 1.5*4) {
			t.Errorf("idle %d: %+v", i, is)
		}
	}
}

// A request still open at Close is charged for the intervals it ran in,
// whatever the weighting: tokens and marginal charge a request only once
// it ended, so Close ends it (abandoned) before settling the last ones.
func TestCloseChargesOpenRequestsInEveryWeighting(t *testing.T) {
	for _, mode := range []string{WeightTime, WeightTokens, WeightMarginal} {
		t.Run(mode, func(t *testing.T) {
			p := testParams("0")
			p.Weighting = mode
			l := mustLedger(t, p)
			l.Begin(Span{ID: "open", Start: at(0), Devices: []string{"0"}})
			for i := 0; i < 5; i++ {
				addIntervals(t, l, Interval{Device: "0", Start: at(float64(i)), End: at(float64(i + 1)), Joules: 100})
				l.Settle(at(float64(i + 1)))
			}
			out := l.Close()
			r, ok := byID(out.Records)["open"]
			if !ok || r.Status != StatusAbandoned || !near(r.GPUEnergyJ, 500) || !r.HistoryTruncated {
				t.Errorf("open request at Close: %+v, want abandoned, charged the 500 J it ran in, truncated", r.Span)
			}
		})
	}
}

package params_test

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/testutil"
)

// TestGoogle2025Boundary reproduces the boundary of Google's 2025
// per-prompt study from docs/examples/google-2025.yaml: a node whose
// accelerator draws 501 W and whose host draws 216 W for each one-second
// prompt (the study's 0.139 Wh and 0.06 Wh), and idles 0.86 s between
// prompts at 70 W and 30 W (capacity kept for latency). The record of a
// prompt splits into the study's four parts: active accelerator, host, idle
// capacity, data-centre overhead, and its market-based carbon and water are
// the study's 0.03 g and 0.26 mL. Those two agree by construction: the
// example's carbon_market_g_per_kwh (125) and wue_onsite_l_per_kwh (1.18)
// were back-solved from the study's 0.03 g / 0.24 Wh and 0.26 mL / 0.22 Wh
// (docs/methodology.md); only the energy split is reproduced independently.
func TestGoogle2025Boundary(t *testing.T) {
	cfg, err := config.Load("../docs/examples/google-2025.yaml", 1)
	if err != nil {
		t.Fatal(err)
	}
	l, _ := testutil.H100Ledger(t, cfg)
	const (
		tick               = 20 * time.Millisecond
		busy, idle         = 50, 43 // ticks of a prompt, and of the idle gap after it
		gpuBusy, gpuIdle   = 501.0, 70.0
		hostBusy, hostIdle = 216.0, 30.0
	)
	start := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	var recs []estimator.Record
	n := int(65 * time.Minute / tick)
	for k := 0; k < n; k++ {
		t0, t1 := start.Add(time.Duration(k)*tick), start.Add(time.Duration(k+1)*tick)
		phase := k % (busy + idle)
		if phase == 0 {
			l.Begin(estimator.Span{ID: fmt.Sprintf("p%06d", k), Start: t0, Devices: []string{"0"}})
		}
		g, h := gpuIdle, hostIdle
		if phase < busy {
			g, h = gpuBusy, hostBusy
		}
		for dev, w := range map[string]float64{"0": g, estimator.HostDevice: h} {
			if err := l.AddInterval(estimator.Interval{Device: dev, Start: t0, End: t1, Joules: w * tick.Seconds(), Method: estimator.MethodCounter}); err != nil {
				t.Fatal(err)
			}
		}
		if phase == busy-1 {
			id := fmt.Sprintf("p%06d", k-busy+1)
			l.End(estimator.Span{ID: id, Model: "gemini", Start: t1.Add(-busy * tick), End: t1, Status: "200", Served: true,
				PromptTokens: 400, CompletionTokens: 300, Devices: []string{"0"}})
		}
		recs = append(recs, l.Settle(t1).Records...)
	}
	r := recs[len(recs)-1] // an hour in: a full idle window behind it
	wh := func(j float64) float64 { return j / 3600 }
	accel, host := wh(r.GPUEnergyJ), wh(r.HostEnergyJ+r.StaticEnergyJ)
	idleCap, overhead := wh(r.LoadedITEnergyJ-r.ITEnergyJ), wh(r.LoadedFacilityEnergyJ-r.LoadedITEnergyJ)
	total := wh(r.LoadedFacilityEnergyJ)
	t.Logf("\n| part | Google 2025 | deadlabour field | this record |\n|---|---|---|---|\n"+
		"| active accelerator | 0.14 Wh (58 %%) | `gpu_energy_j` | %.3f Wh (%.1f %%) |\n"+
		"| host CPU + DRAM | 0.06 Wh (25 %%) | `host_energy_j` + `static_energy_j` | %.3f Wh (%.1f %%) |\n"+
		"| idle capacity | 0.024 Wh (10 %%) | `loaded_it_energy_j` - `it_energy_j` | %.4f Wh (%.1f %%) |\n"+
		"| data-centre overhead | 0.019 Wh (8 %%) | `loaded_facility_energy_j` - `loaded_it_energy_j` | %.4f Wh (%.1f %%) |\n"+
		"| total | 0.24 Wh | `loaded_facility_energy_j` | %.3f Wh |\n"+
		"| market-based CO2e | 0.03 g | `loaded_co2e_market_g` | %.4f g |\n"+
		"| water | 0.26 mL | `loaded_water_l` | %.3f mL |\n"+
		"| narrow boundary (accelerator only) | 0.10 Wh, 2.4x less | `gpu_energy_j` | %.3f Wh, %.2fx less |\n"+
		"idle_uplift %.4f",
		accel, 100*accel/total, host, 100*host/total, idleCap, 100*idleCap/total, overhead, 100*overhead/total, total,
		r.LoadedCO2eMarketG, 1000*r.LoadedWaterL, accel, total/accel, r.IdleUplift)
	checks := []struct {
		name      string
		got, want float64
		tol       float64 // absolute, in the unit of want
	}{
		{"accelerator share %", 100 * accel / total, 58, 1.5},
		{"host share %", 100 * host / total, 25, 1.5},
		{"idle capacity share %", 100 * idleCap / total, 10, 1},
		{"overhead share %", 100 * overhead / total, 8, 1},
		{"total Wh", total, 0.24, 0.005},
		{"market CO2e g", r.LoadedCO2eMarketG, 0.03, 0.001},
		{"water mL", 1000 * r.LoadedWaterL, 0.26, 0.01},
	}
	for _, c := range checks {
		if math.Abs(c.got-c.want) > c.tol {
			t.Errorf("%s = %.4g, the study's %.4g (tolerance %.2g)", c.name, c.got, c.want, c.tol)
		}
	}
}

package estimator

import (
	"math"
	"time"
)

// Explanation is how a record was made: for each device, the intervals it
// was charged for, how each was split and what it took; and the record's
// figures recomputed from them with the same arithmetic as the ledger.
type Explanation struct {
	Weighting string
	Devices   []DeviceTrail
	// Recomputed is the record rebuilt from the trail.
	Recomputed Record
	// Matches: every figure recomputed equals the record's to 1e-9
	// relative. It fails when intervals the record was charged for are no
	// longer kept (see DeviceTrail.KeptFrom) or were produced under
	// other parameters.
	Matches    bool
	MaxRelDiff float64
}

// DeviceTrail is one device's part of an Explanation.
type DeviceTrail struct {
	Device string
	// KeptFrom is the start of the oldest interval the trail had for this
	// device; zero if it had none.
	KeptFrom  time.Time `json:",omitzero"`
	Intervals []Charge
}

// Charge is one interval and what the record took from it.
type Charge struct {
	Settlement
	OverlapS            float64
	PromptTokens        float64 // processed in the interval (the phase model's estimate)
	DecodeTokens        float64
	Weight              float64
	Share               float64 // Weight / SumWeight
	Joules              float64
	StaticJoules        float64
	Depreciation        float64
	EmbodiedG           float64
	CarbonGPerKWh       float64
	CarbonMarketGPerKWh float64 `json:",omitempty"`
	PricePerKWh         float64
}

// Explain recomputes record r from the settlements of the intervals it may
// have been charged for (per device, in time order; Output.Settled kept by
// the caller), under the parameters that made it.
func Explain(p Params, r Record, settled map[string][]Settlement) Explanation {
	if p.Weighting == "" {
		p.Weighting = WeightTokens
	}
	ex := Explanation{Weighting: p.Weighting, Recomputed: r}
	ph := phasesOf(&r.Span, p.Weighting != WeightTime)
	start, end := r.Start.UnixNano(), max(r.End.UnixNano(), r.Start.UnixNano())
	rec := &ex.Recomputed
	rec.PerDevice = make([]DeviceShare, len(r.PerDevice))
	for i, ds := range r.PerDevice {
		host := ds.Device == HostDevice
		dp := p.Devices[ds.Device]
		trail := DeviceTrail{Device: ds.Device}
		sts := settled[ds.Device]
		if len(sts) > 0 {
			trail.KeptFrom = sts[0].Start
		}
		var acc share
		from, to := start, end
		if !ds.ChargedFrom.IsZero() {
			from = max(from, ds.ChargedFrom.UnixNano())
		}
		if !ds.ChargedTo.IsZero() {
			to = ds.ChargedTo.UnixNano()
		}
		cut := !ds.ChargedTo.IsZero() && to < end
		for _, st := range sts {
			if !r.Served {
				break
			}
			t0, t1 := st.Start.UnixNano(), st.End.UnixNano()
			if t1 <= from || (cut && t1 > to) {
				continue
			}
			a, b := max(start, t0, ph.in), min(end, t1)
			if t1 <= to && t1 > end {
				b = t1 // charged to the interval's end while still open
			}
			if b <= a {
				continue
			}
			c := coefficients{prompt: st.PromptJPerToken, decode: st.DecodeJPerToken, source: st.Coefficients, alpha: st.PromptTokenWeight}
			w, o, pt, dt := p.claim(&ph, a, b, host, c)
			if p.Weighting == WeightMarginal && st.FixedJ > 0 {
				w += st.FixedJ * o / st.SumOverlapS
			}
			if st.ByOverlap {
				w = o
			}
			u := p.unitOf(&st, dp, host)
			wear := w
			if u.byOverlap {
				wear = o
			}
			var one share
			one.add(&u, w, wear, st.Covered)
			acc.add(&u, w, wear, st.Covered)
			acc.methods |= methodBit(st.Method)
			mid := midpoint(t0, t1)
			ch := Charge{Settlement: st, OverlapS: o, PromptTokens: pt, DecodeTokens: dt, Weight: w,
				Joules: one.joules, StaticJoules: one.static, Depreciation: one.depreciation, EmbodiedG: one.embodied,
				CarbonGPerKWh: p.Carbon.At(mid), PricePerKWh: p.Price.At(mid)}
			if st.SumWeight > 0 {
				ch.Share = w / st.SumWeight
			}
			if p.CarbonMarket != nil {
				ch.CarbonMarketGPerKWh = p.CarbonMarket.At(mid)
			}
			trail.Intervals = append(trail.Intervals, ch)
		}
		rds := p.deviceShare(ds.Device, &acc, start, end)
		rds.ChargedFrom, rds.ChargedTo = ds.ChargedFrom, ds.ChargedTo
		rec.PerDevice[i] = rds
		ex.Devices = append(ex.Devices, trail)
	}
	clearTotals(rec)
	p.finish(rec)
	ex.MaxRelDiff = maxRelDiff(&r, rec)
	ex.Matches = ex.MaxRelDiff <= 1e-9
	return ex
}

// clearTotals zeroes what finish sums, keeping the span and provenance.
func clearTotals(r *Record) {
	*r = Record{
		Span: r.Span, Node: r.Node, Time: r.Time, Weighting: r.Weighting, Simulated: r.Simulated,
		MethodVersion: r.MethodVersion, ParamsHash: r.ParamsHash, PerDevice: r.PerDevice,
		HistoryTruncated: r.HistoryTruncated, Factors: r.Factors,
	}
}

// figures lists the numbers of a record that Explain compares.
func figures(r *Record) []float64 {
	return []float64{
		r.GPUEnergyJ, r.HostEnergyJ, r.StaticEnergyJ, r.ITEnergyJ, r.FacilityEnergyJ,
		r.CO2eG, r.CO2eMarketG, r.EmbodiedCO2eG, r.WaterL, r.EnergyCost, r.DepreciationCost,
		r.TrainingCost, r.DeadLabourCost, r.TrainingCO2eG, r.LivingLabourS, r.IdleUplift,
		r.LoadedGPUEnergyJ, r.LoadedITEnergyJ, r.LoadedFacilityEnergyJ, r.LoadedCO2eG,
		r.LoadedDepreciationCost, r.LoadedEnergyCost, r.LoadedDeadLabourCost,
		r.LoadedCO2eMarketG, r.LoadedEmbodiedCO2eG, r.LoadedWaterL,
	}
}

func maxRelDiff(a, b *Record) float64 {
	fa, fb := figures(a), figures(b)
	worst := 0.0
	for i := range fa {
		d := math.Abs(fa[i] - fb[i])
		if d == 0 {
			continue
		}
		worst = max(worst, d/math.Max(math.Abs(fa[i]), math.Abs(fb[i])))
	}
	return worst
}

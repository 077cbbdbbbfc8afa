package estimator

import (
	"cmp"
	"slices"
	"time"
)

// Records: a request's shares summed into its final record.

func (l *Ledger) collect(now time.Time, all bool) Output {
	var out Output
	keep, done := l.waiting[:0], l.ready[:0]
	for _, sp := range l.waiting {
		if !all && !l.final(sp, now) {
			keep = append(keep, sp)
			continue
		}
		done = append(done, sp)
	}
	clear(l.waiting[len(keep):])
	l.waiting = keep
	// Records are large: allocated once, at their number (a slice grown
	// record by record cost more than making them).
	if len(done) > 0 {
		out.Records = make([]Record, 0, len(done))
	}
	for _, sp := range done {
		out.Records = append(out.Records, l.record(sp, all))
		delete(l.spans, sp.key)
	}
	clear(done)
	l.ready = done[:0]
	slices.SortFunc(out.Records, func(a, b Record) int {
		if c := a.End.Compare(b.End); c != 0 {
			return c
		}
		if c := cmp.Compare(a.ID, b.ID); c != 0 {
			return c
		}
		return cmp.Compare(a.Key, b.Key)
	})
	for i := range out.Records {
		out.Records[i].Time = l.uniqueTime(out.Records[i].End)
	}
	out.Idle, l.idle = l.idle, nil
	out.Settled, l.settled = l.settled, nil
	return out
}

// abandon ends an open span at Close: status abandoned, tokens unknown,
// ending where the latest of its devices' intervals ends (it is charged
// until then), flagged truncated.
func (l *Ledger) abandon(sp *span) {
	end := sp.start
	for _, id := range sp.devices {
		end = max(end, l.devs[id].lastEnd.UnixNano())
	}
	s := &sp.s
	s.End, s.Status, s.UsageSource = time.Unix(0, end).UTC(), StatusAbandoned, UsageUnknown
	s.PromptTokens, s.CompletionTokens, s.CachedTokens, s.ReasoningTokens = -1, -1, -1, -1
	sp.end, sp.ended, sp.truncated = end, true, true
	sp.ph = phasesOf(s, l.p.Weighting != WeightTime)
}

func (l *Ledger) final(sp *span, now time.Time) bool {
	if !sp.s.Served {
		return true
	}
	waiting := false
	for _, id := range sp.devices {
		d := l.devs[id]
		if !d.settledTo.Before(sp.s.End) {
			continue
		}
		if l.p.History <= 0 || now.Sub(sp.s.End) <= l.p.History || !d.lastEnd.Before(sp.s.End) {
			// Intervals up to its end are due (at the latest when History
			// forces them): wait.
			waiting = true
		}
	}
	if waiting {
		return false
	}
	// Final, unless a device stopped reporting: then give up waiting for
	// it, and charge what was seen.
	for i, id := range sp.devices {
		if d := l.devs[id]; d.settledTo.Before(sp.s.End) {
			l.cut(sp, i, d)
		}
	}
	return true
}

// cut ends the charging of span sp on device d (index i) where the device's
// settled intervals end: the rest of the request is not charged there.
func (l *Ledger) cut(sp *span, i int, d *device) {
	sp.truncated = true
	sp.acc[i].to, sp.acc[i].cut = max(d.settledTo.UnixNano(), sp.start), true
	for k, r := range d.spans {
		if r.sp == sp {
			d.spans = slices.Delete(d.spans, k, k+1)
			break
		}
	}
}

func (l *Ledger) record(sp *span, all bool) Record {
	r := Record{
		Span:             sp.s,
		Node:             l.p.Node,
		Weighting:        l.p.Weighting,
		Simulated:        l.p.Simulated,
		MethodVersion:    MethodVersion,
		ParamsHash:       l.hash,
		HistoryTruncated: sp.truncated,
	}
	if all && sp.s.Served {
		for i, id := range sp.devices {
			if d := l.devs[id]; d.settledTo.Before(sp.s.End) {
				l.cut(sp, i, d)
				r.HistoryTruncated = true
			}
		}
	}
	r.PerDevice = make([]DeviceShare, len(sp.devices))
	for i, id := range sp.devices {
		r.PerDevice[i] = l.p.deviceShare(id, &sp.acc[i], sp.start, sp.end)
	}
	l.p.finish(&r)
	return r
}

// deviceShare turns a span's accumulated share of one device into its part
// of the record.
func (p *Params) deviceShare(id string, a *share, start, end int64) DeviceShare {
	ds := DeviceShare{
		Device: id, Quantities: p.quantities(a.amounts),
		Method: a.methods.method(), Loaded: p.quantities(a.loaded), WearEnded: a.wearEnded,
	}
	if a.from > start {
		ds.ChargedFrom = time.Unix(0, a.from).UTC()
	}
	if a.to > end || a.cut {
		ds.ChargedTo = time.Unix(0, a.to).UTC()
	}
	return ds
}

// quantities converts summed amounts: carbon and cost of facility energy.
func (p *Params) quantities(a amounts) Quantities {
	q := Quantities{
		Joules: a.joules, StaticJoules: a.static, DepreciationCost: a.depreciation, EmbodiedCO2eG: a.embodied,
		CO2eG: a.co2 * p.PUE / 3.6e6, EnergyCost: a.cost * p.PUE / 3.6e6,
	}
	if p.CarbonMarket != nil {
		q.CO2eMarketG = a.co2m * p.PUE / 3.6e6
	}
	return q
}

// finish sums a record's totals from its PerDevice shares and derives the
// facility, carbon, water, money, training and loaded figures.
func (p *Params) finish(r *Record) {
	var gpuMethods, hostMethods methodSet
	var hostE, loadedHostE float64
	var lq Quantities
	for _, ds := range r.PerDevice {
		if ds.Device == HostDevice {
			r.HostEnergyJ += ds.Joules
			r.StaticEnergyJ += ds.StaticJoules
			hostMethods |= methodBit(ds.Method)
			hostE += ds.Joules + ds.StaticJoules
			loadedHostE += ds.Loaded.Joules + ds.Loaded.StaticJoules
		} else {
			r.GPUEnergyJ += ds.Joules
			gpuMethods |= methodBit(ds.Method)
			r.LoadedGPUEnergyJ += ds.Loaded.Joules
		}
		r.DepreciationCost += ds.DepreciationCost
		r.EmbodiedCO2eG += ds.EmbodiedCO2eG
		r.CO2eG += ds.CO2eG
		r.CO2eMarketG += ds.CO2eMarketG
		r.EnergyCost += ds.EnergyCost
		r.WearEnded = r.WearEnded || ds.WearEnded
		lq.Joules += ds.Loaded.Joules
		lq.StaticJoules += ds.Loaded.StaticJoules
		lq.DepreciationCost += ds.Loaded.DepreciationCost
		lq.EmbodiedCO2eG += ds.Loaded.EmbodiedCO2eG
		lq.CO2eG += ds.Loaded.CO2eG
		lq.CO2eMarketG += ds.Loaded.CO2eMarketG
		lq.EnergyCost += ds.Loaded.EnergyCost
	}
	r.GPUMeter, r.HostMeter = gpuMethods.method(), hostMethods.method()
	r.ITEnergyJ = r.GPUEnergyJ + r.HostEnergyJ + r.StaticEnergyJ
	r.FacilityEnergyJ = r.ITEnergyJ * p.PUE
	itKWh, facKWh := r.ITEnergyJ/3.6e6, r.FacilityEnergyJ/3.6e6
	r.HasMarketCarbon = p.CarbonMarket != nil
	r.WaterOnsiteL = itKWh * p.WUEOnsiteLPerKWh
	r.WaterOffsiteL = facKWh * p.WaterOffsiteLPerKWh
	r.WaterL = r.WaterOnsiteL + r.WaterOffsiteL
	r.Factors = p.Factors

	tokens := float64(r.Tokens())
	if m, ok := p.Models[r.Model]; ok {
		r.TrainingCost = tokens * m.TrainingCostPerToken
		r.TrainingCO2eG, r.HasTrainingCO2e = tokens*m.TrainingCO2eGPerToken, m.TrainingCO2eGPerToken > 0
		r.TrainingEnergyJ, r.HasTrainingEnergy = tokens*m.TrainingEnergyJPerToken, m.TrainingEnergyJPerToken > 0
		r.LivingLabourS, r.HasLivingLabour = tokens*m.LivingLabourSPerToken, m.LivingLabourSPerToken > 0
	}
	r.DeadLabourCost = r.DepreciationCost + r.EnergyCost + r.TrainingCost

	switch {
	case r.GPUEnergyJ > 0:
		r.IdleUplift = max(r.LoadedGPUEnergyJ/r.GPUEnergyJ-1, 0)
	case hostE > 0:
		r.IdleUplift = max(loadedHostE/hostE-1, 0)
	}
	r.LoadedITEnergyJ = lq.Joules + lq.StaticJoules
	r.LoadedFacilityEnergyJ = r.LoadedITEnergyJ * p.PUE
	r.LoadedCO2eG = lq.CO2eG
	r.LoadedCO2eMarketG = lq.CO2eMarketG
	r.LoadedEmbodiedCO2eG = lq.EmbodiedCO2eG
	r.LoadedWaterL = r.LoadedITEnergyJ/3.6e6*p.WUEOnsiteLPerKWh + r.LoadedFacilityEnergyJ/3.6e6*p.WaterOffsiteLPerKWh
	r.LoadedDepreciationCost = lq.DepreciationCost
	r.LoadedEnergyCost = lq.EnergyCost
	r.LoadedDeadLabourCost = lq.DepreciationCost + lq.EnergyCost + r.TrainingCost
}

// uniqueTime returns t in nanoseconds, bumped past any timestamp already
// given to a record, so that no two records share series and time.
func (l *Ledger) uniqueTime(t time.Time) time.Time {
	ts := t.UnixNano()
	for {
		if _, used := l.usedTS[ts]; !used {
			break
		}
		ts++
	}
	l.usedTS[ts] = struct{}{}
	l.maxTS = max(l.maxTS, ts)
	if len(l.usedTS) > max(l.pruneAt, 1<<14) {
		horizon := l.maxTS - int64(max(l.p.History, time.Minute))
		for k := range l.usedTS {
			if k < horizon {
				delete(l.usedTS, k)
			}
		}
		// Prune again only once the map has doubled: a busy node keeps
		// more than 1<<14 timestamps within the horizon, and scanning them
		// all at every record made each record cost O(records).
		l.pruneAt = 2 * len(l.usedTS)
	}
	return time.Unix(0, ts)
}

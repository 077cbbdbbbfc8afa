package estimator

import (
	"cmp"
	"slices"
	"time"
)

// Idle: what no request was charged, given back by unserved requests, and
// the wear of time no meter saw.

// refund is what an unserved request was charged on one device while in
// flight, going back to idle.
type refund struct {
	device     string
	start, end time.Time
	a          share
}

// refund returns what unserved requests were charged to idle, in an order
// that does not depend on the order their ends arrived in: all of their
// loaded share as unabsorbed idle, and the part of it that was absorbed
// idle taken back from the absorbed idle.
func (l *Ledger) refund() {
	slices.SortFunc(l.refunds, func(a, b refund) int {
		if c := a.end.Compare(b.end); c != 0 {
			return c
		}
		if c := a.start.Compare(b.start); c != 0 {
			return c
		}
		if c := cmp.Compare(a.device, b.device); c != 0 {
			return c
		}
		return cmp.Compare(a.a.joules, b.a.joules)
	})
	for _, r := range l.refunds {
		m := r.a.methods.method()
		un := l.p.idleOf(r.device, r.start, r.end, r.a.loaded, m)
		un.Unabsorbed, un.WearEnded = true, r.a.wearEnded
		l.idle = append(l.idle, un)
		back := r.a.amounts
		back.scale(-1)
		back.plus(r.a.loaded)
		if !back.isZero() {
			back.scale(-1)
			ab := l.p.idleOf(r.device, r.start, r.end, back, m)
			ab.WearEnded = r.a.wearEnded
			l.idle = append(l.idle, ab)
		}
	}
	l.refunds = l.refunds[:0]
}

func (a *amounts) scale(f float64) {
	a.joules *= f
	a.static *= f
	a.depreciation *= f
	a.embodied *= f
	a.co2 *= f
	a.co2m *= f
	a.cost *= f
}

func (a *amounts) plus(b amounts) {
	a.joules += b.joules
	a.static += b.static
	a.depreciation += b.depreciation
	a.embodied += b.embodied
	a.co2 += b.co2
	a.co2m += b.co2m
	a.cost += b.cost
}

// idleOf is an idle share of device id over [start, end) holding a (whose
// co2, co2m and cost are joules × rate, as a share sums them), with the
// facility energy, carbon, water and cost derived from it.
func (p *Params) idleOf(id string, start, end time.Time, a amounts, m Method) IdleShare {
	it := a.joules + a.static
	is := IdleShare{
		Device: id, Start: start, End: end, Joules: a.joules, StaticJoules: a.static,
		DepreciationCost: a.depreciation, EmbodiedCO2eG: a.embodied,
		FacilityEnergyJ: it * p.PUE,
		CO2eG:           a.co2 * p.PUE / 3.6e6,
		EnergyCost:      a.cost * p.PUE / 3.6e6,
		WaterOnsiteL:    it / 3.6e6 * p.WUEOnsiteLPerKWh,
		WaterOffsiteL:   it * p.PUE / 3.6e6 * p.WaterOffsiteLPerKWh,
		Method:          m,
	}
	if p.CarbonMarket != nil {
		is.CO2eMarketG = a.co2m * p.PUE / 3.6e6
	}
	return is
}

// Unmetered charges the wear of device id over [from, to), time no meter
// saw (the daemon was down), to idle: its depreciation and embodied carbon
// as unabsorbed idle, marked unmetered, with no energy. The hardware aged
// whether or not anyone measured it; nothing is known of its energy. ok is
// false for an unknown device or an empty span.
func (l *Ledger) Unmetered(id string, from, to time.Time) (IdleShare, bool) {
	d, known := l.devs[id]
	if !known || !to.After(from) {
		return IdleShare{}, false
	}
	dep, emb, ended := d.params.wear(from.UnixNano(), to.UnixNano())
	is := l.p.idleOf(id, from.UTC(), to.UTC(), amounts{depreciation: dep, embodied: emb}, MethodUnmetered)
	is.Unabsorbed, is.Unmetered, is.WearEnded = true, true, ended
	return is, true
}

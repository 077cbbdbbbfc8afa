package engine

import (
	"cmp"
	"slices"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/schema"
)

// idleAggregator sums the idle ledger into one share per device, per kind
// of share (absorbed, unabsorbed: schema.IdleShareKind) and per report
// window, written once the device has settled past the window's end.
type idleAggregator struct {
	w windows[estimator.IdleShare]
}

func newIdleAggregator(window time.Duration) *idleAggregator {
	return &idleAggregator{w: newWindows[estimator.IdleShare](window)}
}

func (a *idleAggregator) add(s estimator.IdleShare) {
	start := a.w.startOf(s.Start)
	if late, first := a.w.late(s.Device, start); late {
		// A share for a window already written (the refund of a request
		// the upstream did not serve, begun in that window) joins the
		// first window not yet written: it is counted once, a little
		// later.
		start = first
	}
	cur := a.w.get(s.Device, schema.IdleShareKind(s), start, func(from, to time.Time) *estimator.IdleShare {
		return &estimator.IdleShare{Device: s.Device, Start: from, End: to, Method: s.Method,
			Unabsorbed: s.Unabsorbed, Unmetered: s.Unmetered}
	})
	cur.Joules += s.Joules
	cur.StaticJoules += s.StaticJoules
	cur.DepreciationCost += s.DepreciationCost
	cur.EmbodiedCO2eG += s.EmbodiedCO2eG
	cur.FacilityEnergyJ += s.FacilityEnergyJ
	cur.CO2eG += s.CO2eG
	cur.CO2eMarketG += s.CO2eMarketG
	cur.WaterOnsiteL += s.WaterOnsiteL
	cur.WaterOffsiteL += s.WaterOffsiteL
	cur.EnergyCost += s.EnergyCost
	cur.WearEnded = cur.WearEnded || s.WearEnded
	if cur.Method != s.Method {
		cur.Method = estimator.MethodMixed
	}
}

// flush returns the windows whose device has settled past their end.
func (a *idleAggregator) flush(settledTo func(device string) time.Time) []estimator.IdleShare {
	return sortShares(a.w.take(func(k windowKey, end time.Time, _ *estimator.IdleShare) bool {
		return !settledTo(k.device).Before(end)
	}))
}

// flushAll returns every open window, at shutdown, each ending where its
// device's settled intervals end if that is inside it, so that a partial
// window never shares a timestamp with the next run's full one.
func (a *idleAggregator) flushAll(settledTo func(device string) time.Time) []estimator.IdleShare {
	return sortShares(a.w.take(func(k windowKey, _ time.Time, cur *estimator.IdleShare) bool {
		if last := settledTo(k.device); last.After(cur.Start) && last.Before(cur.End) {
			cur.End = last
		}
		return true
	}))
}

func sortShares(in []*estimator.IdleShare) []estimator.IdleShare {
	out := make([]estimator.IdleShare, len(in))
	for i, s := range in {
		out[i] = *s
	}
	slices.SortFunc(out, func(a, b estimator.IdleShare) int {
		return cmp.Or(a.End.Compare(b.End), cmp.Compare(a.Device, b.Device), cmp.Compare(schema.IdleShareKind(a), schema.IdleShareKind(b)))
	})
	return out
}

package engine

import (
	"sort"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
)

// idleAggregator sums the idle ledger into one share per device per report
// window, written once the device has settled past the window's end. A
// window is written once: InfluxDB keeps the last point of a series and
// time, so writing it again would replace the first point's energy.
type idleAggregator struct {
	window  time.Duration
	open    map[idleKey]*estimator.IdleShare
	flushed map[string]time.Time // by device: end of the last window written
}

type idleKey struct {
	device string
	start  int64 // Unix ns
}

func newIdleAggregator(window time.Duration) *idleAggregator {
	return &idleAggregator{window: window, open: map[idleKey]*estimator.IdleShare{}, flushed: map[string]time.Time{}}
}

func (a *idleAggregator) add(s estimator.IdleShare) {
	start := estimator.WindowStart(s.Start, a.window)
	if f := a.flushed[s.Device]; start.Before(f) {
		// A share for a window already written (the refund of a request
		// the upstream did not serve, begun in that window) joins the
		// first window not yet written: its energy is counted once, a
		// little later.
		start = f
	}
	k := idleKey{s.Device, start.UnixNano()}
	cur := a.open[k]
	if cur == nil {
		cur = &estimator.IdleShare{Device: s.Device, Start: start, End: start.Add(a.window), Method: s.Method}
		a.open[k] = cur
	}
	cur.Joules += s.Joules
	cur.StaticJoules += s.StaticJoules
	cur.DepreciationCost += s.DepreciationCost
	cur.EmbodiedCO2eG += s.EmbodiedCO2eG
	if cur.Method != s.Method {
		cur.Method = estimator.MethodMixed
	}
}

// flush returns the windows whose device has settled past their end.
func (a *idleAggregator) flush(settledTo func(device string) time.Time) []estimator.IdleShare {
	var out []estimator.IdleShare
	for k, cur := range a.open {
		if !settledTo(k.device).Before(cur.End) {
			out = append(out, a.take(k, cur))
		}
	}
	sortShares(out)
	return out
}

// flushAll returns every open window, at shutdown, each ending where its
// device's settled intervals end if that is inside it, so that a partial
// window never shares a timestamp with the next run's full one.
func (a *idleAggregator) flushAll(settledTo func(device string) time.Time) []estimator.IdleShare {
	var out []estimator.IdleShare
	for k, cur := range a.open {
		if last := settledTo(k.device); last.After(cur.Start) && last.Before(cur.End) {
			cur.End = last
		}
		out = append(out, a.take(k, cur))
	}
	sortShares(out)
	return out
}

func (a *idleAggregator) take(k idleKey, cur *estimator.IdleShare) estimator.IdleShare {
	delete(a.open, k)
	if cur.End.After(a.flushed[k.device]) {
		a.flushed[k.device] = cur.End
	}
	return *cur
}

func sortShares(s []estimator.IdleShare) {
	sort.Slice(s, func(i, j int) bool {
		if !s[i].End.Equal(s[j].End) {
			return s[i].End.Before(s[j].End)
		}
		return s[i].Device < s[j].Device
	})
}

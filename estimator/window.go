package estimator

import (
	"sort"
	"time"
)

// cumul is a device's running totals since the ledger started.
type cumul struct{ idleJ, activeJ, idleS, activeS float64 }

// plus is c + f·d.
func (c cumul) plus(d cumul, f float64) cumul {
	return cumul{c.idleJ + f*d.idleJ, c.activeJ + f*d.activeJ, c.idleS + f*d.idleS, c.activeS + f*d.activeS}
}

type mark struct {
	t int64
	c cumul
}

// trailing keeps what the loaded figures need of a device's past: its
// running totals, and their value at every bucket boundary (IdleWindow/60,
// aligned to the Unix epoch) for the last IdleWindow + History. Memory is
// fixed: a few kilobytes per device.
//
// The window of a request ending at e is [e − IdleWindow rounded down to a
// bucket boundary, e): the totals at e are interpolated inside the interval
// that holds e, so a window depends on the intervals and the request's end
// alone, not on when the ledger was asked to settle.
type trailing struct {
	bucket int64
	keep   int
	origin int64 // start of the first interval: the totals are zero there
	next   int64 // next boundary to mark
	cum    cumul // through the last interval added
	marks  []mark
	// dropped: marks older than keep boundaries were let go.
	dropped bool
}

func newTrailing(p *Params) trailing {
	b := p.bucket()
	keep := int((int64(p.IdleWindow)+int64(max(p.History, 0)))/b) + 4
	return trailing{bucket: b, keep: keep}
}

// advance adds the totals c of interval [t0, t1) and returns the totals before it.
func (w *trailing) advance(t0, t1 int64, c cumul) cumul {
	before := w.cum
	if w.next == 0 {
		w.origin = t0
		w.next = ceilTo(t0, w.bucket)
	}
	// After a long gap only the last keep boundaries matter.
	if skip := ceilTo(t1-int64(w.keep)*w.bucket, w.bucket); skip > w.next {
		w.next = skip
		w.marks = w.marks[:0]
		w.dropped = true
	}
	for ; w.next <= t1; w.next += w.bucket {
		f := 0.0
		if w.next > t0 {
			f = float64(w.next-t0) / float64(t1-t0)
		}
		if len(w.marks) == w.keep {
			copy(w.marks, w.marks[1:])
			w.marks = w.marks[:w.keep-1]
			w.dropped = true
		}
		w.marks = append(w.marks, mark{w.next, before.plus(c, f)})
	}
	w.cum = before.plus(c, 1)
	return before
}

// refund moves what a request was charged over [from, to) back to idle (a
// request that turned out not to be served): c is the correction of the
// totals, +idle and −active. The totals get all of it, and every kept mark
// the part charged before it, taken as spread evenly over [from, to), so
// that a window starting after the charge and before the refund sees
// neither.
func (w *trailing) refund(from, to int64, c cumul) {
	for i := range w.marks {
		m := &w.marks[i]
		switch {
		case m.t <= from:
		case m.t >= to:
			m.c = m.c.plus(c, 1)
		default:
			m.c = m.c.plus(c, float64(m.t-from)/float64(to-from))
		}
	}
	w.cum = w.cum.plus(c, 1)
}

// window is the trailing window of a request ending at end, given the
// totals at end.
func (w *trailing) window(idleWindow time.Duration, end int64, atEnd cumul) UpliftWindow {
	from := floorTo(end-int64(idleWindow), w.bucket)
	var start mark
	switch {
	case len(w.marks) == 0 || from < w.marks[0].t:
		start = mark{t: w.origin}
		if w.dropped {
			start = w.marks[0] // the oldest kept
		}
	default:
		i := sort.Search(len(w.marks), func(i int) bool { return w.marks[i].t > from })
		start = w.marks[i-1]
	}
	if start.t > end {
		start = mark{t: end, c: atEnd}
	}
	// Never below zero: a refund spread evenly over its time is exact
	// only where the request's charge was even.
	return UpliftWindow{
		Start:   time.Unix(0, start.t).UTC(),
		End:     time.Unix(0, end).UTC(),
		IdleJ:   max(atEnd.idleJ-start.c.idleJ, 0),
		ActiveJ: max(atEnd.activeJ-start.c.activeJ, 0),
		IdleS:   max(atEnd.idleS-start.c.idleS, 0),
		ActiveS: max(atEnd.activeS-start.c.activeS, 0),
	}
}

// WindowStart is the start of the window of length d that holds t, the
// windows aligned to the Unix epoch as InfluxQL's GROUP BY time() buckets
// are. Every report window (idle, GPU telemetry, health) and the trailing
// window's buckets use it. (time.Truncate aligns to year 1, which differs
// from the epoch for lengths that do not divide a day, such as 7 s.)
func WindowStart(t time.Time, d time.Duration) time.Time {
	return time.Unix(0, floorTo(t.UnixNano(), int64(d))).UTC()
}

// floorTo is t rounded down to a multiple of b (Unix ns), also before 1970.
func floorTo(t, b int64) int64 {
	r := t % b
	if r < 0 {
		r += b
	}
	return t - r
}

func ceilTo(t, b int64) int64 {
	f := floorTo(t, b)
	if f == t {
		return t
	}
	return f + b
}

// ratio is idle over active, 0 when nothing was active.
func ratio(idle, active float64) float64 {
	if active <= 0 {
		return 0
	}
	return max(idle, 0) / active
}

package engine

import (
	"time"

	"github.com/deadlabour/deadlabour/estimator"
)

// windows is the report windowing that GPU telemetry and the idle ledger
// share: one accumulator per device (and kind, where a device has several
// rows) per window of a fixed length aligned to the Unix epoch, as
// InfluxQL's GROUP BY time() buckets are. A window is written once — InfluxDB
// keeps the last point of a series and time, so writing it again would
// replace the first point — so each device remembers the end of the last
// window taken, and input for a window before it is late: the caller drops
// it or moves it on. It is a plain value for one goroutine.
type windows[V any] struct {
	length time.Duration
	open   map[windowKey]*V
	// taken is the end of the last window taken, by device (Unix ns).
	taken map[string]int64
}

type windowKey struct {
	device string
	kind   string // "" where a device has one row per window
	start  int64  // Unix ns
}

func newWindows[V any](length time.Duration) windows[V] {
	return windows[V]{length: length, open: map[windowKey]*V{}, taken: map[string]int64{}}
}

// startOf is the start of the window holding t, in Unix ns.
func (w *windows[V]) startOf(t time.Time) int64 {
	return estimator.WindowStart(t, w.length).UnixNano()
}

// late reports whether the window of device starting at start was taken
// already, and the end of the last window taken, the first still open.
func (w *windows[V]) late(device string, start int64) (bool, int64) {
	f, ok := w.taken[device]
	return ok && start < f, f
}

// get is the accumulator of a window, made by mk (given the window's
// start and end) when it is new.
func (w *windows[V]) get(device, kind string, start int64, mk func(start, end time.Time) *V) *V {
	k := windowKey{device, kind, start}
	if v, ok := w.open[k]; ok {
		return v
	}
	s := time.Unix(0, start)
	v := mk(s, s.Add(w.length))
	w.open[k] = v
	return v
}

// take removes and returns the windows for which done holds, in no
// particular order; the caller sorts them.
func (w *windows[V]) take(done func(k windowKey, end time.Time, v *V) bool) []*V {
	var out []*V
	for k, v := range w.open {
		end := time.Unix(0, k.start).Add(w.length)
		if !done(k, end, v) {
			continue
		}
		out = append(out, v)
		delete(w.open, k)
		if e := end.UnixNano(); e > w.taken[k.device] {
			w.taken[k.device] = e
		}
	}
	return out
}

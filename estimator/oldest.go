package estimator

import "time"

// Oldest is the start of the oldest request the ledger still tracks (open,
// or ended and not yet recorded); ok is false when it tracks none. The
// engine's crash journal keeps the intervals from there on.
func (l *Ledger) Oldest() (t time.Time, ok bool) {
	var min int64
	for _, sp := range l.spans {
		if !ok || sp.start < min {
			min, ok = sp.start, true
		}
	}
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(0, min), true
}

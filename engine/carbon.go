package engine

import (
	"log/slog"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
)

// carbonWatch warns, once, when the meters run more than an hour past the
// carbon-intensity file's last row: the file is read at start, and from
// then on every interval is charged that row's value. Its zero value
// watches nothing (no carbon file).
type carbonWatch struct {
	warned bool
	last   time.Time // the file's last row; zero without a carbon file
}

// newCarbonWatch watches the carbon-intensity steps the ledger charges.
func newCarbonWatch(steps []estimator.Step) carbonWatch {
	if len(steps) == 0 {
		return carbonWatch{}
	}
	return carbonWatch{last: steps[len(steps)-1].From}
}

// staleAfter is how far the time measured may pass the file's last row
// (an hourly export is an hour behind at worst).
const staleAfter = time.Hour

func (w *carbonWatch) check(log *slog.Logger, now time.Time) {
	if w.warned || w.last.IsZero() || now.Sub(w.last) <= staleAfter {
		return
	}
	w.warned = true
	log.Warn("the carbon-intensity file ends more than an hour before the time measured: its last value is used from then on; refresh it",
		"key", "facility.carbon_file", "last_row", w.last, "measured", now, "behind", now.Sub(w.last).Round(time.Minute))
}

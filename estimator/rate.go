package estimator

import (
	"sort"
	"time"
)

// Rate is a factor that may vary with time: grid carbon intensity
// (gCO2e/kWh), electricity price (currency/kWh). It is a constant, a step
// series (a carbon-intensity file), or a weekly time-of-use schedule, in
// that order of precedence: Steps when there are any, else the first Window
// that holds, else Value.
type Rate struct {
	Value float64 `json:"value"`
	// Steps are sorted by From; each value holds from its time until the
	// next step's. Before the first step the first value holds, after the
	// last the last.
	Steps []Step `json:"steps,omitempty"`
	// Weekly are time-of-use windows in the local time of Zone (UTC if nil).
	Weekly []Window `json:"weekly,omitempty"`
	// Zone is resolved by the caller (the estimator reads no files); its
	// name is what the parameter hash sees.
	Zone     *time.Location `json:"-"`
	ZoneName string         `json:"zone,omitempty"`
}

// Step is one row of a time series.
type Step struct {
	From  time.Time `json:"from"`
	Value float64   `json:"value"`
}

// Window is one time-of-use window: on the given weekdays, from From to To
// after local midnight. To before From wraps past midnight (22:00-06:00):
// the early part belongs to the day the window started on.
type Window struct {
	Days  Weekdays      `json:"days"`
	From  time.Duration `json:"from"`
	To    time.Duration `json:"to"`
	Value float64       `json:"value"`
}

// Weekdays is a set of days, bit time.Weekday.
type Weekdays uint8

// EveryDay is the set of all seven days.
const EveryDay Weekdays = 1<<7 - 1

// Has reports whether d is in the set.
func (w Weekdays) Has(d time.Weekday) bool { return w&(1<<d) != 0 }

// Const is a rate that never changes.
func Const(v float64) Rate { return Rate{Value: v} }

// At is the rate in force at t.
func (r *Rate) At(t time.Time) float64 {
	if n := len(r.Steps); n > 0 {
		i := sort.Search(n, func(i int) bool { return r.Steps[i].From.After(t) })
		if i == 0 {
			return r.Steps[0].Value
		}
		return r.Steps[i-1].Value
	}
	if len(r.Weekly) > 0 {
		zone := r.Zone
		if zone == nil {
			zone = time.UTC
		}
		lt := t.In(zone)
		h, m, sec := lt.Clock() // wall clock: a DST day still has 07:00 at 07:00
		since := time.Duration(h)*time.Hour + time.Duration(m)*time.Minute +
			time.Duration(sec)*time.Second + time.Duration(lt.Nanosecond())
		day := lt.Weekday()
		prev := (day + 6) % 7
		for _, w := range r.Weekly {
			if w.From < w.To {
				if w.Days.Has(day) && since >= w.From && since < w.To {
					return w.Value
				}
				continue
			}
			// Wraps midnight: the evening part today, the morning part
			// belongs to yesterday's window.
			if (w.Days.Has(day) && since >= w.From) || (w.Days.Has(prev) && since < w.To) {
				return w.Value
			}
		}
	}
	return r.Value
}

// Varies reports whether the rate can differ from Value.
func (r *Rate) Varies() bool { return len(r.Steps) > 0 || len(r.Weekly) > 0 }

package gpu

import "time"

// Step is one stretch of constant power in a Trace.
type Step struct {
	For   time.Duration
	Watts float64
}

// Trace is a scripted power draw: steps of constant power, one after the
// other from the moment it is set on a simulated GPU; the last step lasts
// for ever. Its exact integral is what the tests hold the collector to.
type Trace []Step

// At is the power d after the trace began (the first step before it).
func (tr Trace) At(d time.Duration) float64 {
	if len(tr) == 0 {
		return 0
	}
	for _, s := range tr {
		if d < s.For {
			return s.Watts
		}
		d -= s.For
	}
	return tr[len(tr)-1].Watts
}

// Energy is the exact integral in joules over [0, d) of the trace; for a
// negative d, minus the first step's power times |d| (the first step
// extends backwards), so that Energy(b)-Energy(a) is the energy over [a, b).
func (tr Trace) Energy(d time.Duration) float64 {
	if len(tr) == 0 {
		return 0
	}
	if d < 0 {
		return tr[0].Watts * d.Seconds()
	}
	var j float64
	for _, s := range tr {
		if d <= s.For {
			return j + s.Watts*d.Seconds()
		}
		j += s.Watts * s.For.Seconds()
		d -= s.For
	}
	return j + tr[len(tr)-1].Watts*d.Seconds()
}

package gpu

import (
	"math"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
)

// stuckAfter is how long the energy counter may stand still before it is
// taken for stuck: real counters move every 20-100 ms while a GPU draws
// any power at all, so ten times the slowest update is a broken counter.
const stuckAfter = time.Second

// meterState is where an energyMeter takes its joules from.
type meterState uint8

const (
	// stateCounter: counter deltas, one interval per increment.
	stateCounter meterState = iota
	// statePower: the counter is unsupported or unreadable: the trapezoid
	// of the power samples, one interval per poll.
	statePower
	// stateStuck: the counter reads but has not moved for stuckAfter:
	// power as in statePower until it moves.
	stateStuck
)

// meterEvent is a change the collector logs, once per state change.
type meterEvent uint8

const (
	eventNone        meterEvent = iota
	eventReset                  // the counter went backwards (driver reload, GPU reset)
	eventCounterGone            // the counter stopped reading
	eventCounterBack            // it reads again
	eventStuck                  // it stopped moving
	eventUnstuck                // it moves again
)

// energyMeter turns the polls of one GPU (its counter and power at each
// poll time) into meter intervals. It is plain arithmetic: no NVML, no
// clock.
//
// The counter moves only every 20-100 ms, so a poll may see no change. Such
// a poll closes nothing: the next increment is spread over the whole time
// since the previous increment, [start, now), so that the requests running
// while the counter stood still are not handed zero joules. Where there is
// no counter to trust, each poll closes the trapezoid of its power samples.
type energyMeter struct {
	primed   bool
	state    meterState
	start    time.Time // start of the open interval
	lastT    time.Time // time of the last poll
	lastP    float64   // power at the last poll, W; NaN unknown
	integral float64   // trapezoid of power over [start, lastT], J; NaN after a gap
	lastMJ   uint64    // counter at start
}

// observe takes one poll: the counter (mjOK false when it could not be
// read) and the power (NaN when unknown) at now. It returns the interval it
// closed, if any, and what changed.
func (m *energyMeter) observe(now time.Time, mj uint64, mjOK bool, p float64) (estimator.Interval, bool, meterEvent) {
	if !m.primed {
		m.primed = true
		m.start, m.lastT, m.lastP, m.integral = now, now, p, 0
		m.lastMJ = mj
		m.state = statePower
		if mjOK {
			m.state = stateCounter
		}
		return estimator.Interval{}, false, eventNone
	}
	if !now.After(m.lastT) {
		return estimator.Interval{}, false, eventNone
	}
	m.integral += Trapezoid(m.lastP, p, now.Sub(m.lastT))
	m.lastT, m.lastP = now, p

	switch {
	case !mjOK:
		ev := eventNone
		if m.state != statePower {
			ev = eventCounterGone
		}
		m.state = statePower
		iv, ok := m.closePower(now)
		return iv, ok, ev
	case m.state == statePower || m.state == stateStuck:
		// Counting starts again from here; what the counter did meanwhile
		// (a jump after a stall) was integrated from power already.
		ev := eventCounterBack
		if m.state == stateStuck {
			if mj == m.lastMJ {
				iv, ok := m.closePower(now)
				return iv, ok, eventNone
			}
			ev = eventUnstuck
		}
		iv, ok := m.closePower(now)
		m.state, m.lastMJ = stateCounter, mj
		return iv, ok, ev
	case mj > m.lastMJ:
		iv := estimator.Interval{Start: m.start, End: now, Joules: float64(mj-m.lastMJ) / 1000, Method: estimator.MethodCounter}
		m.start, m.integral, m.lastMJ = now, 0, mj
		return iv, true, eventNone
	case mj < m.lastMJ:
		iv, ok := m.closePower(now)
		m.lastMJ = mj
		return iv, ok, eventReset
	case now.Sub(m.start) >= stuckAfter:
		m.state = stateStuck
		iv, ok := m.closePower(now)
		return iv, ok, eventStuck
	}
	return estimator.Interval{}, false, eventNone // a stall: wait for the next increment
}

// closePower closes [start, now) with the power integral; after a gap in
// the power samples there is nothing to integrate, and the time is left
// out (energy nobody measured).
func (m *energyMeter) closePower(now time.Time) (estimator.Interval, bool) {
	iv := estimator.Interval{Start: m.start, End: now, Joules: m.integral, Method: estimator.MethodPowerIntegral}
	m.start, m.integral = now, 0
	if math.IsNaN(iv.Joules) || !iv.End.After(iv.Start) {
		return estimator.Interval{}, false
	}
	return iv, true
}

// gap marks that the GPU was not read for a while (it was unhealthy): no
// power integral spans the gap. A counter that kept counting still gives
// the exact energy over it.
func (m *energyMeter) gap() {
	m.lastP, m.integral = math.NaN(), math.NaN()
}

// flush closes a stall at the last poll, at shutdown: the counter showed
// nothing more since its last increment, so the stall closes with 0 J (the
// counter's lag at the end mirrors its lag at the start).
func (m *energyMeter) flush() (estimator.Interval, bool) {
	if !m.primed || m.state != stateCounter || !m.lastT.After(m.start) {
		return estimator.Interval{}, false
	}
	iv := estimator.Interval{Start: m.start, End: m.lastT, Method: estimator.MethodCounter}
	m.start, m.integral = m.lastT, 0
	return iv, true
}

// Trapezoid integrates power (W) from p0 to p1 over d, in joules; one unknown end takes
// the other's value, two give NaN.
func Trapezoid(p0, p1 float64, d time.Duration) float64 {
	if math.IsNaN(p0) {
		p0 = p1
	}
	if math.IsNaN(p1) {
		p1 = p0
	}
	return (p0 + p1) / 2 * d.Seconds()
}

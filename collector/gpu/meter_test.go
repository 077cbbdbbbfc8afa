package gpu

import (
	"math"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
)

// One poll of the meter and what it must close.
type meterStep struct {
	at    time.Duration // since t0
	mj    uint64
	mjOK  bool
	watts float64
	gap   bool // the GPU was unhealthy before this poll

	want   *estimator.Interval // nil: nothing closes
	wantEv meterEvent
}

func iv(from, to time.Duration, j float64, m estimator.Method) *estimator.Interval {
	t0 := time.Unix(1000, 0)
	return &estimator.Interval{Start: t0.Add(from), End: t0.Add(to), Joules: j, Method: m}
}

const ms = time.Millisecond

func TestEnergyMeter(t *testing.T) {
	nan := math.NaN()
	cases := []struct {
		name  string
		steps []meterStep
		flush *estimator.Interval
	}{
		{"every poll moves", []meterStep{
			{at: 0, mj: 1000, mjOK: true, watts: 100},
			{at: 100 * ms, mj: 1010, mjOK: true, watts: 100, want: iv(0, 100*ms, 0.010, estimator.MethodCounter)},
			{at: 200 * ms, mj: 1030, mjOK: true, watts: 100, want: iv(100*ms, 200*ms, 0.020, estimator.MethodCounter)},
		}, nil},
		{"a stall spreads the next increment over the wait", []meterStep{
			{at: 0, mj: 1000, mjOK: true, watts: 100},
			{at: 100 * ms, mj: 1000, mjOK: true, watts: 100},
			{at: 200 * ms, mj: 1000, mjOK: true, watts: 100},
			{at: 300 * ms, mj: 1030, mjOK: true, watts: 100, want: iv(0, 300*ms, 0.030, estimator.MethodCounter)},
			{at: 400 * ms, mj: 1030, mjOK: true, watts: 100},
		}, iv(300*ms, 400*ms, 0, estimator.MethodCounter)},
		{"backwards: the power integral since the last increment", []meterStep{
			{at: 0, mj: 5000, mjOK: true, watts: 100},
			{at: 100 * ms, mj: 5000, mjOK: true, watts: 300},
			{at: 200 * ms, mj: 20, mjOK: true, watts: 300, want: iv(0, 200*ms, (100+300)/2*0.1+300*0.1, estimator.MethodPowerIntegral), wantEv: eventReset},
			{at: 300 * ms, mj: 50, mjOK: true, watts: 300, want: iv(200*ms, 300*ms, 0.030, estimator.MethodCounter)},
		}, nil},
		{"no counter: trapezoid every poll", []meterStep{
			{at: 0, watts: 100},
			{at: 500 * ms, watts: 300, want: iv(0, 500*ms, 100, estimator.MethodPowerIntegral)},
			{at: time.Second, watts: nan, want: iv(500*ms, time.Second, 150, estimator.MethodPowerIntegral)},
			{at: 1500 * ms, watts: nan},
			{at: 2 * time.Second, watts: 200, want: iv(1500*ms, 2*time.Second, 100, estimator.MethodPowerIntegral)},
		}, nil},
		{"counter lost and back", []meterStep{
			{at: 0, mj: 7, mjOK: true, watts: 10},
			{at: 100 * ms, mjOK: false, watts: 30, want: iv(0, 100*ms, 2, estimator.MethodPowerIntegral), wantEv: eventCounterGone},
			{at: 200 * ms, mjOK: false, watts: 30, want: iv(100*ms, 200*ms, 3, estimator.MethodPowerIntegral)},
			{at: 300 * ms, mj: 9000, mjOK: true, watts: 30, want: iv(200*ms, 300*ms, 3, estimator.MethodPowerIntegral), wantEv: eventCounterBack},
			{at: 400 * ms, mj: 9003, mjOK: true, watts: 30, want: iv(300*ms, 400*ms, 0.003, estimator.MethodCounter)},
		}, nil},
		{"stuck after a second, power until it moves, then counting again without the jump", []meterStep{
			{at: 0, mj: 100, mjOK: true, watts: 50},
			{at: 500 * ms, mj: 100, mjOK: true, watts: 50},
			{at: 1000 * ms, mj: 100, mjOK: true, watts: 50, want: iv(0, 1000*ms, 50, estimator.MethodPowerIntegral), wantEv: eventStuck},
			{at: 1500 * ms, mj: 100, mjOK: true, watts: 50, want: iv(1000*ms, 1500*ms, 25, estimator.MethodPowerIntegral)},
			{at: 2000 * ms, mj: 90100, mjOK: true, watts: 50, want: iv(1500*ms, 2000*ms, 25, estimator.MethodPowerIntegral), wantEv: eventUnstuck},
			{at: 2100 * ms, mj: 95100, mjOK: true, watts: 50, want: iv(2000*ms, 2100*ms, 5, estimator.MethodCounter)},
		}, nil},
		{"a gap: the counter spans it, the power integral does not", []meterStep{
			{at: 0, mj: 100, mjOK: true, watts: 50},
			{at: 10 * time.Second, mj: 500100, mjOK: true, watts: 50, gap: true, want: iv(0, 10*time.Second, 500, estimator.MethodCounter)},
			{at: 20 * time.Second, mj: 3, mjOK: true, watts: 50, gap: true, wantEv: eventReset},
			{at: 20*time.Second + 100*ms, mj: 8, mjOK: true, watts: 50, want: iv(20*time.Second, 20*time.Second+100*ms, 0.005, estimator.MethodCounter)},
		}, nil},
	}
	t0 := time.Unix(1000, 0)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var m energyMeter
			for i, s := range tc.steps {
				if s.gap {
					m.gap()
				}
				got, ok, ev := m.observe(t0.Add(s.at), s.mj, s.mjOK, s.watts)
				if ev != s.wantEv {
					t.Errorf("step %d: event %d, want %d", i, ev, s.wantEv)
				}
				switch {
				case s.want == nil && ok:
					t.Errorf("step %d: closed %+v, want nothing", i, got)
				case s.want != nil && !ok:
					t.Errorf("step %d: closed nothing, want %+v", i, *s.want)
				case s.want != nil && !sameInterval(got, *s.want):
					t.Errorf("step %d: closed %+v, want %+v", i, got, *s.want)
				}
			}
			got, ok := m.flush()
			if (tc.flush != nil) != ok || (ok && !sameInterval(got, *tc.flush)) {
				t.Errorf("flush = %+v, %v; want %+v", got, ok, tc.flush)
			}
		})
	}
}

func sameInterval(a, b estimator.Interval) bool {
	return a.Start.Equal(b.Start) && a.End.Equal(b.End) && a.Method == b.Method && math.Abs(a.Joules-b.Joules) < 1e-9
}

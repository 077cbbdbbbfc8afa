package main

import (
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/sink"
)

// Idle windows, GPU telemetry windows and the health point all align to the
// Unix epoch, as docs/schema.md says and InfluxQL's GROUP BY time() does:
// with a report interval that does not divide a day (7 s), aligning to
// year 1 (time.Truncate) put the idle windows elsewhere.
func TestReportWindowsAlignToTheUnixEpoch(t *testing.T) {
	const window = 7 * time.Second
	iv := estimator.Interval{Device: "0", Start: time.Unix(20, 0), End: time.Unix(20, 5e8), Joules: 10, Method: estimator.MethodCounter}
	wantStart, wantEnd := time.Unix(14, 0), time.Unix(21, 0) // 20 s lies in [14, 21)

	idle := newIdleAggregator(window)
	idle.add(estimator.IdleShare{Device: iv.Device, Start: iv.Start, End: iv.End, Joules: iv.Joules, Method: iv.Method})
	shares := idle.flush(func(string) time.Time { return wantEnd })
	if len(shares) != 1 || !shares[0].Start.Equal(wantStart) || !shares[0].End.Equal(wantEnd) {
		t.Errorf("idle windows %+v, want one [%v, %v)", shares, wantStart.Unix(), wantEnd.Unix())
	}

	telemetry, err := sink.NewGPUAggregator(window)
	if err != nil {
		t.Fatal(err)
	}
	telemetry.AddEnergy(iv)
	ws := telemetry.Flush(wantEnd)
	if len(ws) != 1 || !ws[0].Start.Equal(wantStart) || !ws[0].End.Equal(wantEnd) {
		t.Errorf("GPU windows %+v, want one [%v, %v)", ws, wantStart.Unix(), wantEnd.Unix())
	}

	o := &observer{report: window, gpuHealth: func() []gpu.DeviceHealth { return nil }, sink: idleSinkState{}}
	if ps := o.healthPoints(time.Unix(20, 0)); len(ps) != 1 || !o.nextHealth.Equal(wantEnd) {
		t.Errorf("after %d health points at 20 s the next is due at %v, want %v", len(ps), o.nextHealth.Unix(), wantEnd.Unix())
	}
}

// idleSinkState is a sink with nothing queued.
type idleSinkState struct{}

func (idleSinkState) Stats() sink.Stats                      { return sink.Stats{} }
func (idleSinkState) ScanSpool(func(line string) bool) error { return nil }

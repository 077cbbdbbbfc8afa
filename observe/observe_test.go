package observe

import (
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/sink"
)

// The deadlabour_health point aligns to the Unix epoch, as the idle and
// GPU telemetry windows do (package engine's
// TestReportWindowsAlignToTheUnixEpoch): with a report interval that does
// not divide a day (7 s), aligning to year 1 (time.Truncate) put it
// elsewhere.
func TestHealthPointAlignsToTheUnixEpoch(t *testing.T) {
	const window = 7 * time.Second
	wantEnd := time.Unix(21, 0) // 20 s lies in [14, 21)

	o := &Observer{report: window, gpuHealth: func() []gpu.DeviceHealth { return nil }, sink: idleSinkState{}}
	if ps := o.HealthPoints(time.Unix(20, 0)); len(ps) != 1 || !o.nextHealth.Equal(wantEnd) {
		t.Errorf("after %d health points at 20 s the next is due at %v, want %v", len(ps), o.nextHealth.Unix(), wantEnd.Unix())
	}
}

// idleSinkState is a sink with nothing queued.
type idleSinkState struct{}

func (idleSinkState) Stats() sink.Stats                      { return sink.Stats{} }
func (idleSinkState) ScanSpool(func(line string) bool) error { return nil }

// A meter interval the ledger refuses (a negative trapezoid of instant
// power samples, NaN) still reaches the observer: it must not panic the
// poll loop (a Prometheus counter panics on a negative Add) nor poison
// the energy counter.
func TestObserverSkipsImpossibleEnergy(t *testing.T) {
	o := &Observer{
		energy: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "e"}, []string{"device", "method"}),
		poll:   prometheus.NewHistogram(prometheus.HistogramOpts{Name: "p"}),
	}
	ivs := []estimator.Interval{
		{Device: "0", Joules: 5, Method: estimator.MethodPowerIntegral},
		{Device: "0", Joules: -2, Method: estimator.MethodPowerIntegral},
		{Device: "0", Joules: math.NaN(), Method: estimator.MethodPowerIntegral},
		{Device: "0", Joules: math.Inf(1), Method: estimator.MethodPowerIntegral},
	}
	o.Polled(time.Unix(10, 0), time.Millisecond, ivs, nil, nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(o.energy)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || len(mfs[0].GetMetric()) != 1 || mfs[0].GetMetric()[0].GetCounter().GetValue() != 5 {
		t.Errorf("energy counter %v, want 5 J (the one possible interval)", mfs)
	}
}

// stateSink is a sink whose spool is in a given state.
type stateSink struct{ st sink.Stats }

func (s stateSink) Stats() sink.Stats                    { return s.st }
func (stateSink) ScanSpool(func(line string) bool) error { return nil }

// A spool that cannot commit (full disk, I/O error) makes the daemon not
// ready: it still proxies, but what it measures is not kept. A spool at
// spool.max_bytes only degrades it (telemetry goes first).
func TestReadyzSaysWhenTheSpoolCannotKeep(t *testing.T) {
	for _, tt := range []struct {
		state sink.SpoolState
		code  int
		want  string
	}{
		{sink.SpoolOK, http.StatusOK, `"status":"ready"`},
		{sink.SpoolAtMax, http.StatusOK, `"status":"degraded"`},
		{sink.SpoolDiskFull, http.StatusServiceUnavailable, `"status":"not_ready"`},
		{sink.SpoolDiskError, http.StatusServiceUnavailable, `"status":"not_ready"`},
	} {
		t.Run(tt.state.String(), func(t *testing.T) {
			now := time.Unix(1000, 0)
			o := New(Options{Node: "n", Interval: time.Second, ReportInterval: 10 * time.Second, Now: func() time.Time { return now },
				Sink: stateSink{sink.Stats{Spool: tt.state, SpoolError: "no space left on device"}}, Ready: func() bool { return true },
				GPUHealth:  func() []gpu.DeviceHealth { return nil },
				SpoolLimit: 1 << 20, SinkMetrics: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sink_stub"})})
			o.Polled(now, time.Millisecond, nil, nil, nil)
			rec := httptest.NewRecorder()
			o.serveReadyz(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			if rec.Code != tt.code || !strings.Contains(rec.Body.String(), tt.want) {
				t.Errorf("/readyz with the spool %s: %d %s, want %d %s", tt.state, rec.Code, rec.Body, tt.code, tt.want)
			}
		})
	}
}

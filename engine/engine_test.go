package engine

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/internal/testlog"
	"github.com/deadlabour/deadlabour/internal/testutil"
	"github.com/deadlabour/deadlabour/schema"
)

// Idle windows, GPU telemetry windows and the health point all align to the
// Unix epoch, as docs/schema.md says and InfluxQL's GROUP BY time() does:
// with a report interval that does not divide a day (7 s), aligning to
// year 1 (time.Truncate) put the idle windows elsewhere.
func TestReportWindowsAlignToTheUnixEpoch(t *testing.T) {
	const window = 7 * time.Second
	iv := estimator.Interval{Device: "0", Start: time.Unix(20, 0), End: time.Unix(21, 0), Joules: 10, Method: estimator.MethodCounter}
	wantStart, wantEnd := time.Unix(14, 0), time.Unix(21, 0) // 20 s lies in [14, 21)

	idle := newIdleAggregator(window)
	idle.add(estimator.IdleShare{Device: iv.Device, Start: iv.Start, End: iv.End, Joules: iv.Joules, Method: iv.Method})
	shares := idle.flush(func(string) time.Time { return wantEnd })
	if len(shares) != 1 || !shares[0].Start.Equal(wantStart) || !shares[0].End.Equal(wantEnd) {
		t.Errorf("idle windows %+v, want one [%v, %v)", shares, wantStart.Unix(), wantEnd.Unix())
	}

	telemetry, err := NewGPUAggregator(window)
	if err != nil {
		t.Fatal(err)
	}
	telemetry.AddEnergy(iv)
	ws := telemetry.Flush(wantEnd)
	if len(ws) != 1 || !ws[0].Start.Equal(wantStart) || !ws[0].End.Equal(wantEnd) {
		t.Errorf("GPU windows %+v, want one [%v, %v)", ws, wantStart.Unix(), wantEnd.Unix())
	}
	// The health point: package observe's TestHealthPointAlignsToTheUnixEpoch.
}

// scriptedGPU hands out a fixed list of meter intervals, each at the first
// poll at or after its end, as gpu.Collector does.
type scriptedGPU struct{ ivs []estimator.Interval }

func (g *scriptedGPU) Poll(now time.Time) ([]estimator.Interval, []estimator.DeviceSample) {
	n := 0
	for n < len(g.ivs) && !g.ivs[n].End.After(now) {
		n++
	}
	out := g.ivs[:n]
	g.ivs = g.ivs[n:]
	return out, nil
}

// collectSink keeps every point the engine queues.
type collectSink struct{ points []schema.Point }

func (c *collectSink) Enqueue(points ...schema.Point) error {
	c.points = append(c.points, points...)
	return nil
}

// engineRig is an engine on one GPU ("0") with a clock the test moves.
type engineRig struct {
	*Engine
	clock time.Time
	out   *collectSink
}

func newEngineRig(t *testing.T, window time.Duration, ivs []estimator.Interval) *engineRig {
	t.Helper()
	ledger, err := estimator.New(estimator.Params{Node: "n", Weighting: estimator.WeightTime, PUE: 1, History: time.Minute,
		Devices: map[string]estimator.DeviceParams{"0": {DepreciationPerSecond: 0.001}}})
	if err != nil {
		t.Fatal(err)
	}
	telemetry, err := NewGPUAggregator(window)
	if err != nil {
		t.Fatal(err)
	}
	r := &engineRig{out: &collectSink{}}
	r.Engine = &Engine{Options: Options{
		Log: slog.New(slog.DiscardHandler), Interval: time.Second, Now: func() time.Time { return r.clock },
		GPU: &scriptedGPU{ivs: ivs}, Queue: NewSpanQueue(1), Ledger: ledger, Telemetry: telemetry,
		Out: r.out, Node: "n",
	}, idle: newIdleAggregator(window), warned: map[string]bool{}}
	return r
}

// tickAt runs one poll of the engine at now.
func (r *engineRig) tickAt(now time.Time) {
	r.clock = now
	r.tick(context.Background(), now)
}

// stop shuts the engine down as Run does when its context ends.
func (r *engineRig) stop(now time.Time) {
	r.clock = now
	r.final(context.Background())
}

// store writes every point the engine queued into a real InfluxDB.
func (r *engineRig) store(t *testing.T) *influxtest.Server {
	t.Helper()
	influx := influxtest.Start(t)
	var b bytes.Buffer
	for _, p := range r.out.points {
		testutil.AppendLine(t, &b, p)
	}
	influx.Write(t, b.String())
	return influx
}

// sumOf is SELECT sum(field) FROM measurement, 0 when there are no points.
func sumOf(t *testing.T, influx *influxtest.Server, field, measurement string) float64 {
	t.Helper()
	rows := influx.Rows(t, fmt.Sprintf(`SELECT sum(%q) FROM %q`, field, measurement))
	if len(rows) == 0 {
		return 0
	}
	v, _ := rows[0].Float("sum")
	return v
}

// everySecond is n one-second intervals of GPU 0 from start, w watts each.
func everySecond(start time.Time, n int, w float64) []estimator.Interval {
	ivs := make([]estimator.Interval, n)
	for k := range ivs {
		ivs[k] = estimator.Interval{Device: "0", Start: start.Add(time.Duration(k) * time.Second),
			End: start.Add(time.Duration(k+1) * time.Second), Joules: w, Method: estimator.MethodCounter}
	}
	return ivs
}

// A request the upstream never served gives back what it was charged in
// flight; when its end arrives after the idle window holding its start was
// written, the refund must not write that window a second time (InfluxDB
// keeps the last point of a series and time: the first one's energy was
// lost). Every joule measured is in InfluxDB once: records + idle.
func TestLateRefundDoesNotOverwriteAnIdleWindow(t *testing.T) {
	base := time.Unix(1_772_366_400, 0) // aligned to 10 s
	sec := func(s int) time.Time { return base.Add(time.Duration(s) * time.Second) }
	r := newEngineRig(t, 10*time.Second, everySecond(base, 30, 100))
	for s := 0; s <= 30; s++ {
		switch s {
		case 5:
			r.Queue.Begin(estimator.Span{ID: "refused", Upstream: "up", Start: sec(5), Devices: []string{"0"}})
		case 13: // ended at 12 s, unserved: its 700 J go back to idle
			r.Queue.End(estimator.Span{ID: "refused", Upstream: "up", Model: "m", Start: sec(5), End: sec(12), Status: "502",
				PromptTokens: -1, CompletionTokens: -1, Devices: []string{"0"}, Served: false})
		}
		r.tickAt(sec(s))
	}
	r.stop(sec(30))
	influx := r.store(t)

	idle, active := sumOf(t, influx, "energy_j", "deadlabour_idle"), sumOf(t, influx, "gpu_energy_j", "deadlabour_request")
	if !testutil.CloseTo(idle+active, 3000) {
		t.Errorf("InfluxDB holds %v J idle + %v J in records, want the 3000 J measured", idle, active)
	}
	// One point per idle window and device, each written once.
	seen := map[int64]bool{}
	for _, p := range r.out.points {
		if p.Measurement == schema.MeasurementIdle {
			if seen[p.Time.UnixNano()] {
				t.Errorf("deadlabour_idle written twice at %v", p.Time.Sub(base))
			}
			seen[p.Time.UnixNano()] = true
		}
	}
}

// A GPU counter that stalls across a window boundary closes its interval
// after the window's end has passed: the telemetry window must wait for it
// rather than be written without the part before the boundary. Every joule
// measured is in deadlabour_gpu once.
func TestStalledCounterKeepsItsEnergyInTelemetry(t *testing.T) {
	base := time.Unix(1_772_366_400, 0) // aligned to 10 s
	ivs := everySecond(base, 9, 100)
	// The counter stood still from 9 s to 10.5 s; the next increment
	// covers the whole stall.
	ivs = append(ivs, estimator.Interval{Device: "0", Start: base.Add(9 * time.Second), End: base.Add(10500 * time.Millisecond),
		Joules: 175, Method: estimator.MethodCounter})
	for _, iv := range everySecond(base.Add(10500*time.Millisecond), 9, 100) {
		ivs = append(ivs, iv)
	}
	want := 0.0
	for _, iv := range ivs {
		want += iv.Joules
	}
	r := newEngineRig(t, 10*time.Second, ivs)
	for ms := 0; ms <= 25000; ms += 500 {
		r.tickAt(base.Add(time.Duration(ms) * time.Millisecond))
	}
	r.stop(base.Add(25 * time.Second))
	influx := r.store(t)
	if got := sumOf(t, influx, "energy_j", "deadlabour_gpu"); !testutil.CloseTo(got, want) {
		t.Errorf("deadlabour_gpu holds %v J, want the %v J measured", got, want)
	}
	rows := influx.Rows(t, `SELECT "energy_j" FROM "deadlabour_gpu" WHERE time < `+fmt.Sprint(base.Add(10*time.Second).UnixNano()))
	if len(rows) != 1 {
		t.Fatalf("windows before 10 s: %v, want one", rows)
	}
	if v, _ := rows[0].Float("energy_j"); !testutil.CloseTo(v, 900+175*2/3.0) {
		t.Errorf("window [0, 10 s): %v, want 900 J + 2/3 of the stall's 175 J", rows)
	}
	if n := r.Telemetry.Dropped(); n != 0 {
		t.Errorf("%d interval parts dropped", n)
	}
}

// A request begun and never ended (an event-API begin whose end never
// came) is still open at shutdown: what it was charged lands in InfluxDB as
// an abandoned record, so records + idle hold every joule measured.
func TestOpenRequestAtShutdownIsRecorded(t *testing.T) {
	base := time.Unix(1_772_366_400, 0)
	r := newEngineRig(t, 10*time.Second, everySecond(base, 10, 100))
	r.Queue.Begin(estimator.Span{ID: "never-ended", Upstream: "up", Model: "m", Tenant: "team-a", Start: base, Devices: []string{"0"}})
	for s := 0; s <= 10; s++ {
		r.tickAt(base.Add(time.Duration(s) * time.Second))
	}
	r.stop(base.Add(10 * time.Second))
	influx := r.store(t)
	idle, active := sumOf(t, influx, "energy_j", "deadlabour_idle"), sumOf(t, influx, "gpu_energy_j", "deadlabour_request")
	if !testutil.CloseTo(active, 1000) || idle != 0 {
		t.Errorf("InfluxDB holds %v J in records + %v J idle, want the 1000 J measured in the open request's record", active, idle)
	}
	rows := influx.Rows(t, `SELECT "request_id", "history_truncated", "upstream", "model", "tenant" FROM "deadlabour_request" WHERE "status" = 'abandoned'`)
	if len(rows) != 1 || rows[0]["request_id"] != "never-ended" || rows[0]["history_truncated"] != true {
		t.Errorf("abandoned records %v, want never-ended's, flagged truncated", rows)
	}
	// What was known when it began is in the record.
	if len(rows) == 1 && (rows[0]["upstream"] != "up" || rows[0]["model"] != "m" || rows[0]["tenant"] != "team-a") {
		t.Errorf("abandoned record %v, want upstream up, model m, tenant team-a as begun", rows[0])
	}
}

// The carbon-intensity file is read once, at start. When the meters
// measure more than an hour past its last row, every interval is charged
// that row's value: the daemon says so once, while running, not only when
// the file was already old at start.
func TestStaleCarbonFileWarnedAtRunTime(t *testing.T) {
	base := time.Unix(1_772_366_400, 0)
	r := newEngineRig(t, 10*time.Second, nil)
	p := r.Ledger.Params()
	p.Carbon.Steps = []estimator.Step{{From: base.Add(-time.Hour), Value: 300}, {From: base, Value: 320}}
	ledger, err := estimator.New(p)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	r.Ledger, r.Log = ledger, slog.New(slog.NewTextHandler(logs, nil))
	r.carbon = newCarbonWatch(p.Carbon.Steps)
	const msg = "the carbon-intensity file ends more than an hour before the time measured"
	r.tickAt(base.Add(59 * time.Minute))
	r.tickAt(base.Add(time.Hour))
	if strings.Contains(logs.String(), msg) {
		t.Fatalf("warned within the hour after the last row:\n%s", logs)
	}
	r.tickAt(base.Add(time.Hour + time.Second))
	r.tickAt(base.Add(2 * time.Hour))
	if n := strings.Count(logs.String(), msg); n != 1 || !strings.Contains(logs.String(), "facility.carbon_file") {
		t.Errorf("want one warning naming facility.carbon_file once the hour has passed, got %d:\n%s", n, logs)
	}
}

// A restart charges the time the daemon was down to idle wear, unmetered:
// across two runs and the gap between them, the depreciation written is
// the GPU's over the whole wall-clock time. The marks are saved as the
// first run writes its idle, and read by the second.
func TestDowntimeWearIsCharged(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	first := newEngineRig(t, 10*time.Second, everySecond(start, 20, 100))
	var saved map[string]time.Time
	first.marks = map[string]time.Time{}
	first.SaveWearMarks = func(m map[string]time.Time) error { saved = maps.Clone(m); return nil }
	for k := 0; k <= 20; k++ {
		first.tickAt(start.Add(time.Duration(k) * time.Second))
	}
	first.stop(start.Add(20 * time.Second))
	if !saved["0"].Equal(start.Add(20 * time.Second)) {
		t.Fatalf("marks saved %v, want GPU 0 at the end of its last interval (+20 s)", saved)
	}

	restart := start.Add(80 * time.Second) // down for 60 s
	second := newEngineRig(t, 10*time.Second, everySecond(restart, 20, 100))
	second.WearMarks = saved
	second.downtime(restart)
	for k := 0; k <= 20; k++ {
		second.tickAt(restart.Add(time.Duration(k) * time.Second))
	}
	second.stop(restart.Add(20 * time.Second))

	var dep, unmetered float64
	for _, p := range append(first.out.points, second.out.points...) {
		if p.Measurement != schema.MeasurementIdle && p.Measurement != schema.MeasurementRequest {
			continue
		}
		for _, f := range p.Fields {
			if f.Key == "depreciation_cost" {
				dep += f.Value.(float64)
				if p.Measurement == schema.MeasurementIdle && tagOf(p, "share") == schema.IdleUnmetered {
					unmetered += f.Value.(float64)
				}
			}
		}
	}
	if !testutil.Near(unmetered, 0.060) || !testutil.Near(dep, 0.100) {
		t.Errorf("depreciation: %v in all, %v of it unmetered; want 0.1 over 100 s, 0.06 for the 60 s down", dep, unmetered)
	}
}

func tagOf(p schema.Point, key string) string {
	for _, tg := range p.Tags {
		if tg.Key == key {
			return tg.Value
		}
	}
	return ""
}

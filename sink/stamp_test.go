package sink

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/schema"
)

func TestSplitLine(t *testing.T) {
	tests := []struct {
		line, series string
		ts           int64
		ok           bool
	}{
		{`m,host=a f=1 123`, `m,host=a`, 123, true},
		{`m\ x,t=a\ b f="x y z" -5`, `m\ x,t=a\ b`, -5, true},
		{`m f="a 1" 9`, `m`, 9, true},
		{`m f=1`, ``, 0, false},
		{`m f=1 notanumber`, ``, 0, false},
		{``, ``, 0, false},
	}
	for _, tt := range tests {
		series, ts, ok := splitLine([]byte(tt.line))
		if string(series) != tt.series || ts != tt.ts || ok != tt.ok {
			t.Errorf("splitLine(%q) = %q, %d, %v; want %q, %d, %v", tt.line, series, ts, ok, tt.series, tt.ts, tt.ok)
		}
	}
}

// TestStamperMoves: against an earlier run's floor, a line at or below it
// moves just above everything its series has seen; lines above it stay,
// unless they land on a timestamp this run moved a line to.
func TestStamperMoves(t *testing.T) {
	s := newStamper(map[string]int64{"m,h=a": 100})
	steps := []struct{ in, want string }{
		{"m,h=b f=1 50", "m,h=b f=1 50"},   // no floor for this series
		{"m,h=a f=1 150", "m,h=a f=1 150"}, // above the floor
		{"m,h=a f=2 100", "m,h=a f=2 151"}, // on the floor: above this run's newest
		{"m,h=a f=3 20", "m,h=a f=3 152"},  // below it (the clock went back)
		{"m,h=a f=4 151", "m,h=a f=4 153"}, // where a line was moved to
		{"m,h=a f=5 140", "m,h=a f=5 140"}, // out of order but free: stays
		{"m,h=a f=6 999", "m,h=a f=6 999"},
		{"m,h=a f=7 99", "m,h=a f=7 1000"},
	}
	for _, st := range steps {
		if got := string(s.fix([]byte(st.in))); got != st.want {
			t.Errorf("fix(%q) = %q, want %q", st.in, got, st.want)
		}
	}
	if s.n != 4 {
		t.Errorf("%d lines moved, want 4", s.n)
	}
}

// A clock stepped far back moves every line of a series, all within the
// horizon, so pruning finds nothing to forget: it must not then run at
// every later move (each would scan them all). Every move is still
// remembered, and a line landing on one still moves.
func TestStamperPrunesSeldom(t *testing.T) {
	s := newStamper(map[string]int64{"m,h=a": 1e18})
	const n = 3 * maxMoved
	for i := range n {
		s.fix(fmt.Appendf(nil, "m,h=a f=1 %d", i))
	}
	if got := len(s.moved["m,h=a"]); got != n {
		t.Fatalf("%d moves remembered, want %d", got, n)
	}
	if at := s.pruneAt["m,h=a"]; at <= maxMoved || at > 2*n {
		t.Errorf("next pruning at %d moves: want it past the last pruning's size (bounded by %d)", at, 2*n)
	}
	if got := string(s.fix([]byte("m,h=a f=2 1000000000000000001"))); got != "m,h=a f=2 1000000000000012289" {
		t.Errorf("a line on a moved timestamp: %q, want it moved past the newest", got)
	}
}

// TestRestartNeverOverwrites: a new process whose clock stepped back gives
// its records the same series and timestamps as records an earlier run
// left in the spool. Both runs' records reach InfluxDB, every one once;
// the earlier run's are sent as stored (idempotent replay), the new ones
// are moved past them.
func TestRestartNeverOverwrites(t *testing.T) {
	influx := influxtest.Start(t)
	influx.Stop(t)
	opts := fastOptions(t, influx.URL(), influx.Bucket())
	recs := records(40)
	for i := range recs {
		recs[i].Tenant = "same-series"
	}
	old := requestPoints(t, recs)

	w := newWriter(t, opts)
	if err := w.Enqueue(old...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	if n, _ := w.Close(ctx); n != 40 {
		t.Fatalf("Close left %d, want 40 in the spool", n)
	}
	cancel()

	influx.Restart(t)
	w = newWriter(t, opts)
	// The same series and timestamps, different requests.
	for i := range recs {
		recs[i].ID = fmt.Sprintf("new-%04d", i)
	}
	if err := w.Enqueue(requestPoints(t, recs)...); err != nil {
		t.Fatal(err)
	}
	closeWriter(t, w)

	rows := influx.Rows(t, "SELECT request_id FROM deadlabour_request")
	if len(rows) != 80 {
		t.Fatalf("%d records stored, want 80 (40 of each run)", len(rows))
	}
	seen := map[string]int{}
	for _, r := range rows {
		id, _ := r.String("request_id")
		seen[id]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s stored %d times", id, n)
		}
	}
	// The old ones kept their timestamps exactly.
	for _, r := range influx.Rows(t, "SELECT request_id FROM deadlabour_request WHERE request_id =~ /^req-/") {
		id, _ := r.String("request_id")
		ts, _ := r.Time()
		var i int
		fmt.Sscanf(id, "req-%d", &i)
		if !ts.Equal(old[i].Time) {
			t.Errorf("%s stored at %d, want %d as first stamped", id, ts.UnixNano(), old[i].Time.UnixNano())
		}
	}
	if st := w.Stats(); st.Moved != 40 {
		t.Errorf("Stats().Moved = %d, want 40", st.Moved)
	}
	var movedPast bool
	for _, r := range influx.Rows(t, "SELECT request_id FROM deadlabour_request WHERE request_id = 'new-0000'") {
		ts, _ := r.Time()
		movedPast = ts.After(old[len(old)-1].Time)
	}
	if !movedPast {
		t.Error("new-0000 was not moved past the earlier run's newest record")
	}
}

// A restart in the middle of a telemetry window: the old process flushes the
// window's first part at shutdown, the new one the rest when the window
// ends, both stamped with the window's start. InfluxDB would keep only the
// second; the stamper moves it 1 ns, so the window's energy is whole.
func TestRestartMidWindowKeepsBothParts(t *testing.T) {
	influx := influxtest.Start(t)
	opts := fastOptions(t, influx.URL(), influx.Bucket())
	start := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	window := func(joules float64) schema.Point {
		return schema.GPUPoint("node-a", false, schema.GPUWindow{Device: "0", Name: "NVIDIA H100 80GB HBM3",
			Start: start, End: start.Add(10 * time.Second), EnergyJ: joules,
			PowerMeanW: math.NaN(), PowerMaxW: math.NaN(), UtilGPUPct: math.NaN(), UtilMemPct: math.NaN()})
	}
	for _, joules := range []float64{1000, 2500} { // two runs, one window
		w := newWriter(t, opts)
		if err := w.Enqueue(window(joules)); err != nil {
			t.Fatal(err)
		}
		closeWriter(t, w)
	}
	rows := influx.Rows(t, "SELECT energy_j FROM deadlabour_gpu")
	var sum float64
	for _, r := range rows {
		j, _ := r.Float("energy_j")
		sum += j
	}
	if len(rows) != 2 || sum != 3500 {
		t.Fatalf("%d points with %v J stored, want both parts: 2 with 3500 J", len(rows), sum)
	}
}

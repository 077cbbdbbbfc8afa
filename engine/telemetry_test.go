package engine

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/schema"
)

// base is aligned to 10 s windows.
var base = time.Unix(1_772_366_400, 0)

func at(d time.Duration) time.Time { return base.Add(d) }

func sample(dev string, d time.Duration, powerW, utilGPU, tempC float64, throttle uint64) estimator.DeviceSample {
	return estimator.DeviceSample{Device: dev, Name: "H100", Time: at(d), PowerW: powerW, UtilGPU: utilGPU, UtilMem: utilGPU / 2,
		MemUsedBytes: uint64(d / time.Second), MemTotalBytes: 80, TempC: tempC, SMClockMHz: 1980, PowerLimitW: 700, Throttle: throttle}
}

func TestGPUAggregator(t *testing.T) {
	nan := math.NaN()
	a, err := NewGPUAggregator(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Window [0, 10 s) of GPU 0: three polls, the last with nothing readable
	// but memory, and one poll arriving out of order.
	a.AddSample(sample("0", 1*time.Second, 100, 50, 60, 0x1))
	a.AddSample(sample("0", 3*time.Second, 300, 70, 62, 0x4))
	a.AddSample(sample("0", 2*time.Second, 200, 60, 61, 0))
	a.AddSample(sample("0", 4*time.Second, nan, nan, nan, 0))
	// GPU 1 sorts after GPU 0 in the same window.
	a.AddSample(sample("1", 5*time.Second, 50, 10, 40, 0))
	// Energy: one interval inside, one across the boundary (3/4 before it).
	a.AddEnergy(estimator.Interval{Device: "0", Start: at(0), End: at(time.Second), Joules: 100})
	a.AddEnergy(estimator.Interval{Device: "0", Start: at(9700 * time.Millisecond), End: at(10100 * time.Millisecond), Joules: 40})

	if got := a.Flush(at(9999 * time.Millisecond)); len(got) != 0 {
		t.Fatalf("Flush before the window's end = %+v, want nothing", got)
	}
	got := a.Flush(at(10 * time.Second))
	want := []schema.GPUWindow{
		{Device: "0", Name: "H100", Start: at(0), End: at(10 * time.Second), Samples: 4,
			PowerMeanW: 200, PowerMaxW: 300, EnergyJ: 130, UtilGPUPct: 60, UtilMemPct: 30,
			MemUsedBytes: 4, MemTotalBytes: 80, TempC: 62, SMClockMHz: 1980, PowerLimitW: 700, ThrottleReasons: 0x5},
		{Device: "1", Name: "H100", Start: at(0), End: at(10 * time.Second), Samples: 1,
			PowerMeanW: 50, PowerMaxW: 50, EnergyJ: nan, UtilGPUPct: 10, UtilMemPct: 5,
			MemUsedBytes: 5, MemTotalBytes: 80, TempC: 40, SMClockMHz: 1980, PowerLimitW: 700},
	}
	checkWindows(t, got, want)

	// Late input for the flushed window is dropped and counted; the part of
	// an interval after the boundary still counts.
	a.AddSample(sample("0", 9*time.Second, 999, 99, 99, 0))
	a.AddEnergy(estimator.Interval{Device: "0", Start: at(9 * time.Second), End: at(11 * time.Second), Joules: 20})
	a.AddEnergy(estimator.Interval{Device: "0", Start: at(12 * time.Second), End: at(12 * time.Second), Joules: 1})
	if got, want := a.Dropped(), 3; got != want {
		t.Errorf("Dropped() = %d, want %d (late sample, late half interval, empty interval)", got, want)
	}
	// GPU 0's meter has reached 11 s: its window [10 s, 20 s) waits for
	// the rest of its energy.
	if got := a.Flush(at(20 * time.Second)); len(got) != 0 {
		t.Fatalf("Flush before the meter reached the window's end = %+v, want nothing", got)
	}
	a.AddEnergy(estimator.Interval{Device: "0", Start: at(11 * time.Second), End: at(20 * time.Second), Joules: 5})
	got = a.Flush(at(20 * time.Second))
	checkWindows(t, got, []schema.GPUWindow{
		{Device: "0", Start: at(10 * time.Second), End: at(20 * time.Second),
			PowerMeanW: nan, PowerMaxW: nan, EnergyJ: 10 + 10 + 5, UtilGPUPct: nan, UtilMemPct: nan,
			TempC: nan, SMClockMHz: nan, PowerLimitW: nan},
	})
}

// A window waits for its device's meter interval that crosses its end (a
// counter standing still), but no longer than MeterLag: a meter that
// stopped does not hold the telemetry back for ever.
func TestGPUAggregatorWaitsForTheMeter(t *testing.T) {
	a, err := NewGPUAggregator(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	a.AddSample(sample("0", 5*time.Second, 100, 50, 60, 0))
	a.AddEnergy(estimator.Interval{Device: "0", Start: at(0), End: at(9 * time.Second), Joules: 900})
	if got := a.Flush(at(10 * time.Second)); len(got) != 0 {
		t.Fatalf("Flush with the meter at 9 s = %+v, want nothing", got)
	}
	// The stalled counter moves: [9 s, 10.5 s) closes after the boundary.
	a.AddEnergy(estimator.Interval{Device: "0", Start: at(9 * time.Second), End: at(10500 * time.Millisecond), Joules: 150})
	got := a.Flush(at(10500 * time.Millisecond))
	if len(got) != 1 || got[0].EnergyJ != 1000 || a.Dropped() != 0 {
		t.Fatalf("windows %+v (%d dropped), want [0, 10 s) with 900 + 100 J", got, a.Dropped())
	}
	// Then the meter stops: the next window is written MeterLag after its end.
	a.AddSample(sample("0", 15*time.Second, 100, 50, 60, 0))
	if got := a.Flush(at(20*time.Second + MeterLag)); len(got) != 0 {
		t.Fatalf("Flush at MeterLag after the end = %+v, want nothing yet", got)
	}
	if got := a.Flush(at(20*time.Second + MeterLag + time.Nanosecond)); len(got) != 1 || got[0].EnergyJ != 50 {
		t.Fatalf("Flush past MeterLag = %+v, want [10 s, 20 s) with the 50 J measured", got)
	}
}

func checkWindows(t *testing.T, got, want []schema.GPUWindow) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d windows %+v, want %d %+v", len(got), got, len(want), want)
	}
	same := func(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }
	for i := range want {
		g, w := got[i], want[i]
		floatsOK := same(g.PowerMeanW, w.PowerMeanW) && same(g.PowerMaxW, w.PowerMaxW) && same(g.EnergyJ, w.EnergyJ) &&
			same(g.UtilGPUPct, w.UtilGPUPct) && same(g.UtilMemPct, w.UtilMemPct) && same(g.TempC, w.TempC) &&
			same(g.SMClockMHz, w.SMClockMHz) && same(g.PowerLimitW, w.PowerLimitW)
		g.PowerMeanW, g.PowerMaxW, g.EnergyJ, g.UtilGPUPct, g.UtilMemPct, g.TempC, g.SMClockMHz, g.PowerLimitW = 0, 0, 0, 0, 0, 0, 0, 0
		w.PowerMeanW, w.PowerMaxW, w.EnergyJ, w.UtilGPUPct, w.UtilMemPct, w.TempC, w.SMClockMHz, w.PowerLimitW = 0, 0, 0, 0, 0, 0, 0, 0
		if !floatsOK || !g.Start.Equal(w.Start) || !g.End.Equal(w.End) {
			t.Errorf("window %d = %+v\nwant %+v", i, got[i], want[i])
			continue
		}
		g.Start, g.End, w.Start, w.End = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if g != w {
			t.Errorf("window %d = %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

func TestGPUAggregatorAlignment(t *testing.T) {
	tests := []struct {
		interval  time.Duration
		t         time.Time
		wantStart time.Time
	}{
		{10 * time.Second, time.Unix(1_772_366_407, 5), time.Unix(1_772_366_400, 0)},
		{10 * time.Second, time.Unix(1_772_366_410, 0), time.Unix(1_772_366_410, 0)},
		{7 * time.Second, time.Unix(21, 0), time.Unix(21, 0)},   // epoch-aligned, not year-1-aligned
		{7 * time.Second, time.Unix(20, 999), time.Unix(14, 0)}, // 20 s lies in [14, 21)
		{10 * time.Second, time.Unix(-3, 0), time.Unix(-10, 0)}, // before 1970 rounds down
		{time.Minute, time.Date(2026, 3, 1, 12, 0, 59, 0, time.UTC), time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		a, err := NewGPUAggregator(tt.interval)
		if err != nil {
			t.Fatal(err)
		}
		a.AddSample(estimator.DeviceSample{Device: "0", Time: tt.t, PowerW: 1})
		got := a.Flush(tt.t.Add(tt.interval))
		if len(got) != 1 || !got[0].Start.Equal(tt.wantStart) || !got[0].End.Equal(tt.wantStart.Add(tt.interval)) {
			t.Errorf("interval %v, sample at %v: windows %+v, want one starting %v", tt.interval, tt.t, got, tt.wantStart)
		}
	}
}

// TestGPUAggregatorConservesEnergy: however intervals fall across windows,
// the windows' energy adds up to the intervals'.
func TestGPUAggregatorConservesEnergy(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	a, err := NewGPUAggregator(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var want float64
	tm := base
	for range 2000 {
		d := time.Duration(rng.Int64N(int64(2500 * time.Millisecond)))
		j := rng.Float64() * 700 * d.Seconds()
		a.AddEnergy(estimator.Interval{Device: "0", Start: tm, End: tm.Add(d + 1), Joules: j})
		want += j
		tm = tm.Add(d + 1)
	}
	var got float64
	for _, w := range a.FlushAll() {
		if !math.IsNaN(w.EnergyJ) {
			got += w.EnergyJ
		}
	}
	if math.Abs(got-want) > 1e-9*want {
		t.Errorf("sum of window energy = %v, want %v (relative error %g)", got, want, math.Abs(got-want)/want)
	}
}

func TestNewGPUAggregatorRejectsBadInterval(t *testing.T) {
	for _, iv := range []time.Duration{0, -time.Second} {
		if _, err := NewGPUAggregator(iv); err == nil {
			t.Errorf("NewGPUAggregator(%v) = nil error, want one", iv)
		}
	}
}

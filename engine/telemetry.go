package engine

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/schema"
)

// GPUAggregator folds per-poll DeviceSamples and meter intervals into one
// schema.GPUWindow per device per report interval. Windows are aligned to
// the Unix epoch (as InfluxQL's GROUP BY time() buckets are). It is a plain
// value for one goroutine (the poller): add a tick's samples and intervals,
// then Flush.
//
// A device's window is complete once the device's meter intervals reach
// its end: an interval may close well after the boundary it crosses (a
// counter that stands still between increments), and the part before the
// boundary belongs to the window. A device whose meter has given no
// interval for MeterLag past a window's end, or never gave one, has its
// window written without waiting.
type GPUAggregator struct {
	w windows[gpuAcc]
	// metered is the end of the last meter interval added, by device
	// (Unix ns): its windows up to there have all their energy.
	metered map[string]int64
	dropped int
}

// MeterLag is how long past a window's end the window waits for its
// device's meter interval. A GPU counter that stands still is closed by
// the collector within a second (then by power samples); a longer wait
// means the meter has stopped (the GPU is unhealthy).
const MeterLag = time.Minute

type gpuAcc struct {
	w          schema.GPUWindow
	last       time.Time // time of the latest sample folded in
	powerSum   float64
	powerN     int
	utilGPUSum float64
	utilGPUN   int
	utilMemSum float64
	utilMemN   int
}

// NewGPUAggregator aggregates over windows of the given length (the
// configured report interval, e.g. 10 s).
func NewGPUAggregator(interval time.Duration) (*GPUAggregator, error) {
	if interval <= 0 {
		return nil, fmt.Errorf("engine: GPU report interval %v: must be positive", interval)
	}
	return &GPUAggregator{w: newWindows[gpuAcc](interval), metered: map[string]int64{}}, nil
}

func (a *GPUAggregator) acc(device string, start int64) *gpuAcc {
	return a.w.get(device, "", start, func(s, e time.Time) *gpuAcc {
		nan := math.NaN()
		return &gpuAcc{w: schema.GPUWindow{
			Device: device, Start: s, End: e,
			// Not read until something is folded in.
			PowerMeanW: nan, PowerMaxW: nan, EnergyJ: nan, UtilGPUPct: nan, UtilMemPct: nan,
			TempC: nan, SMClockMHz: nan, PowerLimitW: nan,
		}}
	})
}

func (a *GPUAggregator) isLate(device string, start int64) bool {
	late, _ := a.w.late(device, start)
	return late
}

// AddSample folds one poll's reading of one device into its window.
// Non-finite readings (NaN power: not readable) are skipped one by one; a
// sample for a window already flushed, or without a time, is dropped.
func (a *GPUAggregator) AddSample(s estimator.DeviceSample) {
	start := a.w.startOf(s.Time)
	if s.Time.IsZero() || a.isLate(s.Device, start) {
		a.dropped++
		return
	}
	acc := a.acc(s.Device, start)
	acc.w.Samples++
	if s.Name != "" {
		acc.w.Name = s.Name
	}
	if finite(s.PowerW) {
		acc.powerSum += s.PowerW
		acc.powerN++
		if acc.powerN == 1 || s.PowerW > acc.w.PowerMaxW {
			acc.w.PowerMaxW = s.PowerW
		}
	}
	if finite(s.UtilGPU) {
		acc.utilGPUSum += s.UtilGPU
		acc.utilGPUN++
	}
	if finite(s.UtilMem) {
		acc.utilMemSum += s.UtilMem
		acc.utilMemN++
	}
	acc.w.ThrottleReasons |= s.Throttle
	if s.Time.Before(acc.last) {
		return // an older reading does not replace the last ones
	}
	acc.last = s.Time
	if s.MemTotalBytes > 0 {
		acc.w.MemUsedBytes, acc.w.MemTotalBytes = s.MemUsedBytes, s.MemTotalBytes
	}
	setFinite(&acc.w.TempC, s.TempC)
	setFinite(&acc.w.SMClockMHz, s.SMClockMHz)
	setFinite(&acc.w.PowerLimitW, s.PowerLimitW)
}

// AddEnergy adds a meter interval's joules to the windows it overlaps, in
// proportion to the overlap. An interval that is empty, non-finite or for
// windows already flushed is dropped (the part that is late, if only part).
func (a *GPUAggregator) AddEnergy(iv estimator.Interval) {
	if !iv.End.After(iv.Start) || !finite(iv.Joules) || iv.Start.IsZero() {
		a.dropped++
		return
	}
	if e := iv.End.UnixNano(); e > a.metered[iv.Device] {
		a.metered[iv.Device] = e
	}
	total := iv.End.Sub(iv.Start)
	assigned := 0.0
	for start := a.w.startOf(iv.Start); start < iv.End.UnixNano(); start += int64(a.w.length) {
		ws := time.Unix(0, start)
		we := ws.Add(a.w.length)
		last := !iv.End.After(we)
		var j float64
		if last {
			// The remainder, so the parts add up to the interval exactly.
			j = iv.Joules - assigned
		} else {
			from := ws
			if iv.Start.After(from) {
				from = iv.Start
			}
			j = iv.Joules * float64(we.Sub(from)) / float64(total)
		}
		assigned += j
		if a.isLate(iv.Device, start) {
			a.dropped++
			continue
		}
		acc := a.acc(iv.Device, start)
		if math.IsNaN(acc.w.EnergyJ) {
			acc.w.EnergyJ = 0
		}
		acc.w.EnergyJ += j
	}
}

// Flush returns the windows that are complete at now, ordered by start and
// device, and forgets them: those that ended at or before now and whose
// device's meter intervals reached their end (or that waited MeterLag for
// them, or whose device never gave one). Input for them that arrives later
// is dropped, so call it after adding a tick's samples and intervals.
func (a *GPUAggregator) Flush(now time.Time) []schema.GPUWindow { return a.flush(now, false) }

// FlushAll returns every window, complete or not, at shutdown.
func (a *GPUAggregator) FlushAll() []schema.GPUWindow { return a.flush(time.Time{}, true) }

func (a *GPUAggregator) flush(now time.Time, all bool) []schema.GPUWindow {
	accs := a.w.take(func(k windowKey, end time.Time, _ *gpuAcc) bool {
		if all {
			return true
		}
		if end.After(now) {
			return false
		}
		m, ok := a.metered[k.device]
		// Wait for its meter to reach the end, but no longer than MeterLag.
		return !ok || m >= end.UnixNano() || now.After(end.Add(MeterLag))
	})
	out := make([]schema.GPUWindow, 0, len(accs))
	for _, acc := range accs {
		w := acc.w
		if acc.powerN > 0 {
			w.PowerMeanW = acc.powerSum / float64(acc.powerN)
		}
		if acc.utilGPUN > 0 {
			w.UtilGPUPct = acc.utilGPUSum / float64(acc.utilGPUN)
		}
		if acc.utilMemN > 0 {
			w.UtilMemPct = acc.utilMemSum / float64(acc.utilMemN)
		}
		out = append(out, w)
	}
	slices.SortFunc(out, func(x, y schema.GPUWindow) int {
		return cmp.Or(x.Start.Compare(y.Start), cmp.Compare(x.Device, y.Device))
	})
	return out
}

// Dropped counts inputs (samples, interval parts) refused so far: late for a
// flushed window, without a time, or empty.
func (a *GPUAggregator) Dropped() int { return a.dropped }

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func setFinite(dst *float64, v float64) {
	if finite(v) {
		*dst = v
	}
}

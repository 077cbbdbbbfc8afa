package schema

import (
	"math"
	"time"
)

// GPUWindow is the telemetry of one GPU over one report window
// [Start, End). A float that is NaN was not read in the window (no sample
// had it) and is left out of the point.
type GPUWindow struct {
	Device     string
	Name       string
	Start, End time.Time
	// Samples is how many DeviceSamples were folded in.
	Samples int

	PowerMeanW float64 // mean of the readable power samples
	PowerMaxW  float64
	// EnergyJ is the measured energy of the meter intervals the caller
	// added, split pro rata where an interval crosses a window boundary.
	EnergyJ float64

	UtilGPUPct float64 // means of the readable samples
	UtilMemPct float64

	// Last readings of the window. MemTotalBytes 0 means memory was not
	// read; both memory fields are then left out.
	MemUsedBytes  uint64
	MemTotalBytes uint64
	TempC         float64
	SMClockMHz    float64
	PowerLimitW   float64

	// ThrottleReasons is the OR of the samples' clocks-event masks: every
	// reason seen at some poll of the window.
	ThrottleReasons uint64
}

// GPUPoint is the deadlabour_gpu telemetry point of one window of one GPU on
// node, stamped with the window's start. Readings the window does not have
// (NaN, or no memory total) are left out.
func GPUPoint(node string, simulated bool, w GPUWindow) Point {
	p := Point{
		Measurement: MeasurementGPU,
		Tags:        []Tag{{"gpu", w.Device}, {"gpu_name", w.Name}, {"host", node}},
		Fields:      make([]Field, 0, 13),
		Time:        w.Start,
	}
	for _, f := range []Field{
		{"power_mean_w", w.PowerMeanW},
		{"power_max_w", w.PowerMaxW},
		{"energy_j", w.EnergyJ},
		{"util_gpu_pct", w.UtilGPUPct},
		{"util_mem_pct", w.UtilMemPct},
	} {
		p.Fields = appendFinite(p.Fields, f)
	}
	if w.MemTotalBytes > 0 {
		p.Fields = append(p.Fields,
			Field{"mem_used_bytes", clampInt64(w.MemUsedBytes)},
			Field{"mem_total_bytes", clampInt64(w.MemTotalBytes)},
		)
	}
	for _, f := range []Field{
		{"temp_c", w.TempC},
		{"sm_clock_mhz", w.SMClockMHz},
		{"power_limit_w", w.PowerLimitW},
	} {
		p.Fields = appendFinite(p.Fields, f)
	}
	p.Fields = append(p.Fields,
		// A bit mask: the bits, not the number, matter.
		Field{"throttle_reasons", int64(w.ThrottleReasons)},
		Field{"samples", int64(w.Samples)},
		Field{"simulated", simulated},
	)
	return p
}

// appendFinite appends f unless its float value is NaN or infinite, which
// in a GPUWindow means "not read".
func appendFinite(fields []Field, f Field) []Field {
	if v := f.Value.(float64); math.IsNaN(v) || math.IsInf(v, 0) {
		return fields
	}
	return append(fields, f)
}

func clampInt64(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

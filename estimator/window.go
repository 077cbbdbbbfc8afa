package estimator

import "time"

// WindowStart is the start of the window of length d that holds t, the
// windows aligned to the Unix epoch as InfluxQL's GROUP BY time() buckets
// are. Every report window (idle, GPU telemetry, health) and the trailing
// window's buckets use it. (time.Truncate aligns to year 1, which differs
// from the epoch for lengths that do not divide a day, such as 7 s.)
func WindowStart(t time.Time, d time.Duration) time.Time {
	return time.Unix(0, floorTo(t.UnixNano(), int64(d))).UTC()
}

// floorTo is t rounded down to a multiple of b (Unix ns), also before 1970.
func floorTo(t, b int64) int64 {
	r := t % b
	if r < 0 {
		r += b
	}
	return t - r
}

func ceilTo(t, b int64) int64 {
	f := floorTo(t, b)
	if f == t {
		return t
	}
	return f + b
}

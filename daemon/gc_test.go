package daemon

import (
	"runtime/debug"
	"testing"
)

// The daemon's GOGC default applies only when the environment sets none.
func TestTuneGC(t *testing.T) {
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)

	TuneGC(func(string) string { return "50" })
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("with GOGC=50 in the environment, GC percent %d, want it left at 100", got)
	}
	TuneGC(func(k string) string {
		if k != "GOGC" {
			t.Errorf("looked up %q, want GOGC", k)
		}
		return ""
	})
	if got := debug.SetGCPercent(100); got != gcPercent {
		t.Errorf("without GOGC, GC percent %d, want %d", got, gcPercent)
	}
}

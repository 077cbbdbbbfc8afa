// Package basic holds the test helpers that need nothing of this module:
// tolerances, waiting and a silent logger. The tests of the packages that
// testutil itself imports (estimator, collector/gpu, ...) use it, where
// importing testutil would be a cycle; testutil offers the same helpers.
package basic

import (
	"log/slog"
	"testing"
	"time"
)

// Near says whether a and b agree to 1e-9, relative to the larger of
// them, or absolute below 1.
func Near(a, b float64) bool {
	d := a - b
	if d < 0 {
		d = -d
	}
	return d <= 1e-9*max(1, a, b, -a, -b)
}

// WaitFor polls cond every 20 ms until it holds, failing the test after
// timeout.
func WaitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Discard is a logger that writes nothing.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

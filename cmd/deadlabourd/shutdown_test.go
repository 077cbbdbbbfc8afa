package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: every goroutine
// the daemon starts has an owner that stops it. No ignores are needed: the
// tests stop every server and InfluxDB they start.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

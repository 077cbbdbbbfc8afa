package daemon

import "runtime/debug"

// gcPercent is the daemon's GOGC when the environment sets none. The proxy
// allocates ~20 KB a request in Go's HTTP stack, and the live heap of an
// idle daemon is small, so at Go's default of 100 the collector ran some
// 60 times a second under load; at 200 it runs half as often, for 8 % less
// CPU a proxied request, and an idle daemon on 8 GPUs holds ~3 MB more
// (docs/benchmarks.md, "Metering proxy").
const gcPercent = 200

// TuneGC sets the collector's target to gcPercent unless GOGC is set in the
// environment (getenv), which then rules as in any Go program.
func TuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

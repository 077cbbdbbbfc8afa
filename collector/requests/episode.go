package requests

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// episode logs a run of failures of one kind without a line a request: a
// warning at the first failure, debug lines for the ones that follow, and
// one info line when a request succeeds again, with how many failed in
// between. Safe for concurrent use; ok costs one atomic load while all is
// well.
type episode struct {
	log       *slog.Logger
	warn      string // the failure, e.g. "upstream unreachable"
	recovered string // the end of the run, e.g. "upstream reachable again"

	failing atomic.Bool
	mu      sync.Mutex
	count   int64
	since   time.Time
}

// fail counts a failure; attrs describe it (request id, error).
func (e *episode) fail(now time.Time, attrs ...any) {
	e.mu.Lock()
	first := e.count == 0
	if first {
		e.since = now
	}
	e.count++
	e.failing.Store(true)
	e.mu.Unlock()
	if first {
		e.log.Warn(e.warn+" (more are logged at debug until it recovers)", attrs...)
		return
	}
	e.log.Debug(e.warn, attrs...)
}

// ok ends a run of failures, if one is going on.
func (e *episode) ok(now time.Time) {
	if !e.failing.Load() {
		return
	}
	e.mu.Lock()
	n, since := e.count, e.since
	e.count = 0
	e.failing.Store(false)
	e.mu.Unlock()
	if n > 0 {
		e.log.Info(e.recovered, "failed_requests", n, "failing_for", now.Sub(since))
	}
}

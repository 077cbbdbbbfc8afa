package requests

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// defaultEpisodeQuiet is how long a kind of failure must stay away for its
// run to end (episode.quiet).
const defaultEpisodeQuiet = 30 * time.Second

// episode logs a run of failures of one kind without a line a request: a
// warning at the first failure, debug lines for the ones that follow, and
// one info line, with how many failed, at the first success after no
// failure for the quiet period. A success alone does not end the run: an
// upstream that fails every other request would log a warning and an info
// line at every failure. Safe for concurrent use; ok costs one atomic load
// while all is well.
type episode struct {
	log       *slog.Logger
	warn      string        // the failure, e.g. "upstream unreachable"
	recovered string        // the end of the run, e.g. "upstream reachable again"
	quiet     time.Duration // no failure for this long ends a run (default defaultEpisodeQuiet)

	failing atomic.Bool
	mu      sync.Mutex
	count   int64
	since   time.Time // the run's first failure
	last    time.Time // its latest
}

// fail counts a failure; attrs describe it (request id, error).
func (e *episode) fail(now time.Time, attrs ...any) {
	e.mu.Lock()
	first := e.count == 0
	if first {
		e.since = now
	}
	e.count++
	e.last = now
	e.failing.Store(true)
	e.mu.Unlock()
	if first {
		e.log.Warn(e.warn+" (more are logged at debug until it recovers)", attrs...)
		return
	}
	e.log.Debug(e.warn, attrs...)
}

// ok is a success: it ends a run of failures, if one is going on and none
// came for the quiet period.
func (e *episode) ok(now time.Time) {
	if !e.failing.Load() {
		return
	}
	e.mu.Lock()
	if now.Sub(e.last) < cmpOr(e.quiet, defaultEpisodeQuiet) {
		e.mu.Unlock()
		return
	}
	n, since := e.count, e.since
	e.count = 0
	e.failing.Store(false)
	e.mu.Unlock()
	if n > 0 {
		e.log.Info(e.recovered, "failed_requests", n, "failing_for", now.Sub(since))
	}
}

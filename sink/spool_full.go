// When the spool cannot take what is enqueued: its disk is full (or failing),
// or it holds spool.max_bytes. Either is a state, not a loss: the Writer
// says so (Stats.Spool, the metric deadlabour_sink_spool_state, /readyz),
// keeps at most a bound of points in memory, counts every point it could
// not keep, and logs one line when the state begins and one when it ends.

package sink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"syscall"
	"time"

	berrors "go.etcd.io/bbolt/errors"
)

// ErrDiskFull: points were dropped because the spool's disk has no room
// (or fails): Enqueue keeps only a bound of them in memory, and Close
// cannot keep what is still there.
var ErrDiskFull = errors.New("sink: spool disk full")

// SpoolState is whether the spool takes what is enqueued.
type SpoolState int32

// States of the spool, as Stats.Spool and the metric
// deadlabour_sink_spool_state name them.
const (
	// SpoolOK: every commit writes what was enqueued.
	SpoolOK SpoolState = iota
	// SpoolAtMax: the spool holds spool.max_bytes; points are dropped to
	// make room, telemetry first (reason spool_full).
	SpoolAtMax
	// SpoolDiskFull: commits fail for want of room on the disk. What is
	// spooled is still delivered (which frees room); new points wait in
	// memory up to a bound, beyond it they are dropped (reason disk_full).
	SpoolDiskFull
	// SpoolDiskError: commits fail for another reason (an I/O error); as
	// SpoolDiskFull, dropped with reason disk_error.
	SpoolDiskError
	numSpoolStates
)

func (s SpoolState) String() string {
	return [...]string{"ok", "max_bytes", "disk_full", "disk_error"}[s]
}

const (
	// maxBacklogFailing bounds the points kept in memory while commits
	// fail: records up to it, telemetry up to half of it. (maxBacklog,
	// larger, bounds a disk merely slow.)
	maxBacklogFailing = 4 << 20
	// defaultSpellQuiet is how long a spool state must stay away for its
	// spell to end: commits failing every other time are one spell.
	defaultSpellQuiet = 30 * time.Second
)

// isDiskFull says whether a commit failed for want of room: the disk or
// the quota (ENOSPC, EDQUOT; bbolt drops the error's chain on some paths,
// hence the text), or the file's size limit (bbolt's MaxSize, the tests'
// stand-in for a small disk).
func isDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, berrors.ErrMaxSizeReached) ||
		strings.Contains(err.Error(), syscall.ENOSPC.Error())
}

// spell is a state of the spool that lasts, logged when it begins and
// when it ends, with the drops it cost, however many commits it spans.
// It ends once quiet has passed with no new occurrence. Only the
// committer (under commitMu) uses it.
type spell struct {
	log              *slog.Logger
	count            func() [numKinds]uint64 // the points it costs, by kind, so far
	what             string                  // what count counts: "dropped", "dead_lettered"
	level            slog.Level              // of the line that begins it
	beginMsg, endMsg string
	quiet            time.Duration // defaultSpellQuiet unless a test says

	since, last time.Time        // since is zero while none is going on
	counted     [numKinds]uint64 // count when it began
}

func (s *spell) on() bool { return !s.since.IsZero() }

// dropsOf counts the drops of m for reasons, by kind.
func dropsOf(m *metrics, reasons ...dropReason) func() [numKinds]uint64 {
	return func() (out [numKinds]uint64) {
		for k := range numKinds {
			for _, r := range reasons {
				out[k] += m.dropped[k][r].Load()
			}
		}
		return out
	}
}

// hit records an occurrence at now, the counters of the spell's reasons
// being before just before it; the first of a spell is logged.
func (s *spell) hit(now time.Time, before [numKinds]uint64, args ...any) {
	s.last = now
	if s.on() {
		s.log.Debug(s.beginMsg, args...)
		return
	}
	s.since, s.counted = now, before
	s.log.Log(context.Background(), s.level, s.beginMsg, args...)
}

// calm is a commit without an occurrence: it ends the spell, logged with
// what it dropped, once quiet has passed since the last occurrence. It
// says whether the spell is still on.
func (s *spell) calm(now time.Time, args ...any) bool {
	if !s.on() || now.Sub(s.last) < cmp.Or(s.quiet, defaultSpellQuiet) {
		return s.on()
	}
	d := s.count()
	s.log.Info(s.endMsg, append(args, "lasted", now.Sub(s.since).Round(time.Millisecond),
		"records_"+s.what, d[kindCost]-s.counted[kindCost], "telemetry_"+s.what, d[kindTelemetry]-s.counted[kindTelemetry])...)
	s.since = time.Time{}
	return false
}

// spoolSpells are the Writer's spells: the committer's two, the sender's
// one.
type spoolSpells struct {
	disk, atMax spell
	deadLetters spell
}

func (w *Writer) initSpells() {
	w.spells.disk = spell{log: w.log, count: dropsOf(&w.m, dropDiskFull, dropDiskError), what: "dropped",
		level: slog.LevelError,
		beginMsg: fmt.Sprintf("the spool cannot commit (disk full or failing): what is spooled is still delivered, "+
			"new points wait in memory up to %d MiB and beyond it are dropped and counted; not ready until commits succeed again "+
			"(more failures are logged at debug)", maxBacklogFailing>>20),
		endMsg: "the spool commits again"}
	w.spells.atMax = spell{log: w.log, count: dropsOf(&w.m, dropSpoolFull), what: "dropped",
		level: slog.LevelWarn,
		beginMsg: "spool full (spool.max_bytes): points are dropped to make room, telemetry first, and counted " +
			"(deadlabour_sink_points_dropped_total{reason=\"spool_full\"}); more drops are logged at debug",
		endMsg: "the spool has room again (spool.max_bytes)"}
	w.spells.deadLetters = spell{log: w.log, what: "dead_lettered",
		count: func() [numKinds]uint64 {
			return [numKinds]uint64{w.m.deadLettered[kindCost].Load(), w.m.deadLettered[kindTelemetry].Load()}
		},
		level: slog.LevelWarn,
		beginMsg: "InfluxDB refused a line; kept in the dead-letter file, the rest of its batch is delivered " +
			"(deadlabour_sink_points_dead_lettered_total; more are logged at debug)",
		endMsg: "InfluxDB refused no line for a while"}
}

// commitFailed is the state after a commit that wrote nothing. What waits
// in memory beyond the bound of a failing spool (a backlog grown while the
// disk was merely slow) is dropped, newest first, telemetry before records.
func (w *Writer) commitFailed(err error) {
	w.m.commitErrors.Add(1)
	st, reason := SpoolDiskError, dropDiskError
	if isDiskFull(err) {
		st, reason = SpoolDiskFull, dropDiskFull
	}
	w.m.spoolState.Store(int32(st))
	w.m.spoolErr.Store(new(err.Error()))
	before := w.spells.disk.count()
	w.mu.Lock()
	for _, k := range []kind{kindTelemetry, kindCost} {
		for i := len(w.pending) - 1; i >= 0 && w.pendingBytes > maxBacklogFailing; i-- {
			if l := w.pending[i]; l.kind == k && l.line != nil {
				w.pendingBytes -= entrySize(l.line)
				w.m.dropped[k][reason].Add(1)
				w.pending = append(w.pending[:i], w.pending[i+1:]...)
			}
		}
	}
	n := len(w.pending)
	w.mu.Unlock()
	w.spells.disk.hit(time.Now(), before, "state", st, "points_in_memory", n, "err", err, "dir", w.opts.Dir)
}

// commitDone is the state after a commit that wrote its lines. Its drops
// for spool.max_bytes, and Enqueue's since the last commit, make or keep a
// spell of the spool at max_bytes.
func (w *Writer) commitDone() {
	now := time.Now()
	disk := w.spells.disk.calm(now)
	before, dropped := w.spellSeen, w.spells.atMax.count()
	w.spellSeen = dropped
	full := dropped != before
	if full {
		w.spells.atMax.hit(now, before, "telemetry_dropped", dropped[kindTelemetry]-before[kindTelemetry],
			"records_dropped", dropped[kindCost]-before[kindCost], "max_bytes", w.opts.MaxBytes)
	}
	atMax := full || w.spells.atMax.calm(now, "max_bytes", w.opts.MaxBytes)
	switch {
	case disk:
	case atMax:
		w.m.spoolState.Store(int32(SpoolAtMax))
	default:
		w.m.spoolState.Store(int32(SpoolOK))
	}
}

// failing says whether commits are failing now (or were lately: the spell
// is on), and the drop reason for points beyond the memory bound.
func (w *Writer) failing() (dropReason, bool) {
	switch SpoolState(w.m.spoolState.Load()) {
	case SpoolDiskFull:
		return dropDiskFull, true
	case SpoolDiskError:
		return dropDiskError, true
	}
	return dropBacklog, false
}

// abandonPending counts and logs, at Close, the points that no commit could
// write: they are lost, and say so. It returns how many.
func (w *Writer) abandonPending(cause error) (lost [numKinds]int) {
	w.mu.Lock()
	pend := w.pending
	w.pending, w.pendingBytes = nil, 0
	w.mu.Unlock()
	if len(pend) == 0 {
		return lost
	}
	reason := dropDiskError
	if cause != nil && isDiskFull(cause) {
		reason = dropDiskFull
	}
	for _, l := range pend {
		if l.line == nil {
			continue // journal changes only
		}
		lost[l.kind]++
		w.m.dropped[l.kind][reason].Add(1)
	}
	w.log.Error("points that the spool could not commit are lost at shutdown (disk full or failing); what is on disk is kept",
		"records_lost", lost[kindCost], "telemetry_lost", lost[kindTelemetry], "reason", reason, "err", cause, "dir", w.opts.Dir)
	return lost
}

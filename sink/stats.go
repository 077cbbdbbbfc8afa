package sink

import (
	"time"

	"github.com/deadlabour/deadlabour/schema"
)

// State is whether the sink delivers, and if not why.
type State int32

// States of the sink, as /readyz, the metric deadlabour_sink_state and the
// deadlabour_health field sink_state name them.
const (
	StateOK           State = iota // delivering (or nothing to deliver)
	StateRetrying                  // InfluxDB unreachable or overloaded: backing off
	StateUnauthorized              // 401/403: the token is wrong or lacks write permission
	StateNoBucket                  // 404: the bucket (database/retention policy) does not exist
	StateDisabled                  // no InfluxDB configured: spool only
	StateRefused                   // 400/422 for every line of a batch, with one message: kept, retried every BackoffMax
	numStates
)

func (s State) String() string {
	return [...]string{"ok", "retrying", "unauthorized", "no_bucket", "disabled", "refused"}[s]
}

// Stats are a Writer's state and counters since it was made.
type Stats struct {
	State State
	// Reason says why State is not ok: the server's answer or the error.
	Reason string
	// SpoolPoints and SpoolBytes are what waits to be delivered, enqueued
	// but not yet committed included; SpoolRecords of them are cost lines
	// (records and idle shares).
	SpoolPoints, SpoolRecords int
	SpoolBytes                int64
	// OldestUndelivered is how long the oldest of them has waited.
	OldestUndelivered time.Duration
	// Enqueued points were handed to Enqueue; each is then sent,
	// dead-lettered, dropped or waiting (SpoolPoints).
	Enqueued uint64
	// Sent points InfluxDB acknowledged; Retries failed write requests
	// that will be retried; DeadLettered points InfluxDB refused for good
	// (kept in the dead-letter file).
	Sent, Retries, DeadLettered uint64
	// Dropped points, for any reason (DroppedBy says which).
	Dropped   uint64
	DroppedBy map[string]uint64 // "kind/reason", e.g. "telemetry/spool_full"
	// Moved are lines whose timestamp was moved past an earlier run's.
	Moved uint64
	// Spool is whether the spool takes what is enqueued; SpoolError is the
	// last failed commit's error while Spool is disk_full or disk_error.
	// /readyz is not ready while commits fail: points are dropped beyond
	// a bound in memory (Unspooled of SpoolPoints wait there).
	Spool      SpoolState
	SpoolError string
	Unspooled  int
}

// Stats returns the Writer's state and counters. It never waits for the
// disk.
func (w *Writer) Stats() Stats {
	// Under mu, the spool's counters (staged lines included) and pending
	// are one consistent snapshot: a line leaves pending and is staged
	// under mu.
	w.mu.Lock()
	points, bytes := w.spool.counts()
	pend := w.pending
	unspooled := len(pend)
	for _, l := range pend {
		points[l.kind]++
	}
	bytes += w.pendingBytes
	var oldestPending int64
	if len(pend) > 0 {
		oldestPending = pend[0].enqueued
	}
	w.mu.Unlock()

	st := Stats{
		State:        State(w.m.state.Load()),
		SpoolPoints:  points[kindCost] + points[kindTelemetry],
		SpoolRecords: points[kindCost],
		SpoolBytes:   bytes,
		Enqueued:     w.m.enqueued[kindCost].Load() + w.m.enqueued[kindTelemetry].Load(),
		Sent:         w.m.sent.Load(),
		DeadLettered: w.m.deadLettered[kindCost].Load() + w.m.deadLettered[kindTelemetry].Load(),
		DroppedBy:    map[string]uint64{},
		Moved:        w.m.moved.Load(),
		Spool:        SpoolState(w.m.spoolState.Load()),
		Unspooled:    unspooled,
	}
	if e := w.m.spoolErr.Load(); e != nil && (st.Spool == SpoolDiskFull || st.Spool == SpoolDiskError) {
		st.SpoolError = *e
	}
	if r := w.m.reason.Load(); r != nil && st.State != StateOK {
		st.Reason = *r
	}
	for _, n := range w.m.retries() {
		st.Retries += n
	}
	for k := range numKinds {
		for r := range numDropReasons {
			if n := w.m.dropped[k][r].Load(); n > 0 {
				st.DroppedBy[kind(k).String()+"/"+dropReason(r).String()] = n
				st.Dropped += n
			}
		}
	}
	oldest, err := w.spool.oldest()
	if err == nil && !oldest.IsZero() || oldestPending != 0 {
		o := oldest.UnixNano()
		if oldest.IsZero() || oldestPending != 0 && oldestPending < o {
			o = oldestPending
		}
		st.OldestUndelivered = max(0, w.opts.Now().Sub(time.Unix(0, o)))
	}
	return st
}

// Health is the sink's part of a deadlabour_health point.
func (s Stats) Health() schema.SinkHealth {
	return schema.SinkHealth{
		State:             s.State.String(),
		SpoolPoints:       s.SpoolPoints,
		SpoolBytes:        s.SpoolBytes,
		OldestUndelivered: s.OldestUndelivered,
		Sent:              s.Sent,
		Dropped:           s.Dropped,
		DeadLettered:      s.DeadLettered,
	}
}

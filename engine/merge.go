package engine

import (
	"cmp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
)

// TraceQueue hands the spans of a trace receiver (collector/otlp, many
// goroutines) to the engine (one goroutine), never blocking: Add refuses
// a batch when Cap spans already wait. It also says which upstreams have
// traces and how long a proxy's end waits for its trace (MaxDelay).
type TraceQueue struct {
	// Upstreams that have a trace source: their proxies' ends wait for
	// the trace of the same request.
	Upstreams map[string]bool
	// MaxDelay is how long after its end a proxied request waits for its
	// trace, and a trace for its proxied request's end.
	MaxDelay time.Duration
	// Cap bounds the spans waiting for the engine (0: DefaultTraceQueueCap).
	Cap int

	mu    sync.Mutex
	spans []estimator.Span
	spare []estimator.Span
}

// DefaultTraceQueueCap is TraceQueue.Cap's default: a few seconds of a
// busy node's spans between two polls.
const DefaultTraceQueueCap = 1 << 16

// Add queues a batch, all of it or none: false when there is no room.
func (q *TraceQueue) Add(batch []estimator.Span) bool {
	c := q.Cap
	if c <= 0 {
		c = DefaultTraceQueueCap
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.spans)+len(batch) > c {
		return false
	}
	q.spans = append(q.spans, batch...)
	return true
}

// Len is the number of spans waiting.
func (q *TraceQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.spans)
}

// drain returns the queued spans; valid until the next drain.
func (q *TraceQueue) drain() []estimator.Span {
	q.mu.Lock()
	out := q.spans
	q.spans = q.spare[:0]
	q.mu.Unlock()
	clear(out[len(out):cap(out)])
	q.spare = out
	return out
}

// mergeKey names a request on an upstream: its id, or its trace id.
type mergeKey struct{ upstream, id string }

// pending is a proxy's end or a trace waiting for its partner.
type pending struct {
	proxy    bool
	span     estimator.Span
	traceID  string
	deadline time.Time
}

// Merger keeps one record per request when a proxy and a trace both see
// it: a proxied request's end (Span.Key set) on a traced upstream waits up
// to maxDelay for the trace of the same id (or trace id); a trace whose
// proxied request is still open waits for its end. Matched, the two go to
// the ledger as one end: the trace's token counts, its phases (Scheduled,
// FirstToken) and model, the proxy's id, key, times, status, tenant and
// devices. Either one alone goes on at its deadline; a trace that nothing
// proxied goes on at once. A trace for a request already recorded
// (merged, or its proxy end gone alone) is dropped and counted: one
// request, one record. Pure: fed and read by the engine goroutine.
type Merger struct {
	traced   map[string]bool
	maxDelay time.Duration
	remember time.Duration

	open    map[mergeKey]int       // proxied requests begun, not ended, by id
	byID    map[mergeKey]*pending  // waiting, by id
	byTrace map[mergeKey]*pending  // waiting proxy ends, by trace id
	done    map[mergeKey]time.Time // recorded ids, until when they are remembered
	sweep   time.Time

	// Merged counts traces merged with their proxy's end; Dropped traces
	// of requests already recorded; Alone proxy ends whose trace never
	// came. Safe to read from any goroutine.
	Merged, Dropped, Alone atomic.Uint64
}

// NewMerger makes a merger for the traced upstreams.
func NewMerger(traced map[string]bool, maxDelay time.Duration) *Merger {
	return &Merger{traced: traced, maxDelay: maxDelay, remember: max(6*maxDelay, time.Minute),
		open: map[mergeKey]int{}, byID: map[mergeKey]*pending{}, byTrace: map[mergeKey]*pending{}, done: map[mergeKey]time.Time{}}
}

// proxied: a proxy's span (the event API leaves Key empty) of a traced upstream.
func (m *Merger) proxied(s estimator.Span) bool { return s.Key != "" && m.traced[s.Upstream] }

// Begin notes a request that began.
func (m *Merger) Begin(s estimator.Span) {
	if m.proxied(s) {
		m.open[mergeKey{s.Upstream, s.ID}]++
	}
}

// End takes a request's end from the span queue (a proxy's or the event
// API's) and appends what goes to the ledger now to out.
func (m *Merger) End(s estimator.Span, out []estimator.Span) []estimator.Span {
	if !m.proxied(s) {
		return append(out, s)
	}
	k := mergeKey{s.Upstream, s.ID}
	if n := m.open[k]; n > 1 {
		m.open[k] = n - 1
	} else {
		delete(m.open, k)
	}
	if w := m.byID[k]; w != nil && !w.proxy {
		m.forget(w)
		m.Merged.Add(1)
		return append(out, m.done1(merge(s, w.span)))
	}
	if !s.Served {
		return append(out, m.done1(s)) // the server never had it: no trace comes
	}
	if w := m.byID[k]; w != nil {
		out = append(out, m.release(w)) // the same id again: the first goes alone
	}
	w := &pending{proxy: true, span: s, traceID: s.TraceID, deadline: s.End.Add(m.maxDelay)}
	m.byID[k] = w
	if s.TraceID != "" {
		m.byTrace[mergeKey{s.Upstream, s.TraceID}] = w
	}
	return out
}

// Trace takes a trace's span at now and appends what goes to the ledger.
func (m *Merger) Trace(s estimator.Span, now time.Time, out []estimator.Span) []estimator.Span {
	if !m.traced[s.Upstream] {
		return append(out, s)
	}
	k := mergeKey{s.Upstream, s.ID}
	w := m.byID[k]
	if (w == nil || !w.proxy) && s.TraceID != "" {
		w = m.byTrace[mergeKey{s.Upstream, s.TraceID}]
	}
	switch {
	case w != nil && w.proxy:
		m.forget(w)
		m.Merged.Add(1)
		return append(out, m.done1(merge(w.span, s)))
	case w != nil: // the same trace again (an exporter's retry)
		m.Dropped.Add(1)
		return out
	case m.open[k] > 0:
		m.byID[k] = &pending{span: s, traceID: s.TraceID, deadline: now.Add(m.maxDelay)}
		return out
	case !m.done[k].IsZero():
		m.Dropped.Add(1)
		return out
	}
	return append(out, m.done1(s))
}

// Expire appends what waited past its deadline at now.
func (m *Merger) Expire(now time.Time, out []estimator.Span) []estimator.Span {
	for _, w := range m.byID {
		if !now.Before(w.deadline) {
			out = append(out, m.release(w))
		}
	}
	if now.After(m.sweep) {
		for k, until := range m.done {
			if now.After(until) {
				delete(m.done, k)
			}
		}
		m.sweep = now.Add(m.maxDelay + time.Second)
	}
	return out
}

// Flush appends everything waiting (at shutdown).
func (m *Merger) Flush(out []estimator.Span) []estimator.Span {
	for _, w := range m.byID {
		out = append(out, m.release(w))
	}
	return out
}

// Waiting is the number of ends and traces waiting for a partner.
func (m *Merger) Waiting() int { return len(m.byID) }

func (m *Merger) release(w *pending) estimator.Span {
	m.forget(w)
	if w.proxy {
		m.Alone.Add(1)
	}
	return m.done1(w.span)
}

func (m *Merger) forget(w *pending) {
	delete(m.byID, mergeKey{w.span.Upstream, w.span.ID})
	if w.traceID != "" && w.proxy {
		delete(m.byTrace, mergeKey{w.span.Upstream, w.traceID})
	}
}

// done1 remembers that a request was recorded, and returns it.
func (m *Merger) done1(s estimator.Span) estimator.Span {
	m.done[mergeKey{s.Upstream, s.ID}] = s.End.Add(m.remember)
	return s
}

// merge is one request's record from its proxy's end and its trace.
func merge(proxy, trace estimator.Span) estimator.Span {
	s := proxy
	s.TraceID = cmp.Or(s.TraceID, trace.TraceID)
	in := func(t time.Time) bool { return !t.IsZero() && !t.Before(s.Start) && !t.After(s.End) }
	if in(trace.Scheduled) {
		s.Scheduled = trace.Scheduled
	}
	if in(trace.FirstToken) {
		s.FirstToken = trace.FirstToken
	}
	if s.Model == "" {
		s.Model = trace.Model
	}
	if trace.UsageSource == estimator.UsageTrace {
		s.PromptTokens, s.CompletionTokens = trace.PromptTokens, trace.CompletionTokens
		s.CachedTokens, s.ReasoningTokens = trace.CachedTokens, trace.ReasoningTokens
		s.UsageSource = trace.UsageSource
	}
	return s
}

// mergeBegin, end, traces and flushTraces feed the merger from the engine
// goroutine; without Traces, ends go straight to the ledger.
func (e *Engine) mergeBegin(s estimator.Span) {
	if e.merge != nil {
		e.merge.Begin(s)
	}
}

func (e *Engine) end(s estimator.Span) {
	if e.merge == nil {
		e.ledgerEnd(s)
		return
	}
	e.toLedger(e.merge.End(s, e.ends[:0]))
}

func (e *Engine) traces(now time.Time) {
	if e.merge == nil {
		return
	}
	out := e.ends[:0]
	for _, s := range e.Traces.drain() {
		out = e.merge.Trace(s, now, out)
	}
	e.toLedger(e.merge.Expire(now, out))
}

func (e *Engine) flushTraces() {
	if e.merge != nil {
		e.toLedger(e.merge.Flush(e.ends[:0]))
	}
}

func (e *Engine) toLedger(spans []estimator.Span) {
	for _, s := range spans {
		e.ledgerEnd(s)
	}
	clear(spans)
	e.ends = spans[:0]
}

// MergeStats are the merger's counters (Merger): zero without Traces.
func (e *Engine) MergeStats() (merged, dropped, alone uint64) {
	if e.merge == nil {
		return 0, 0, 0
	}
	return e.merge.Merged.Load(), e.merge.Dropped.Load(), e.merge.Alone.Load()
}

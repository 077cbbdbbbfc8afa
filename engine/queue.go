package engine

import (
	"sync"

	"github.com/deadlabour/deadlabour/estimator"
)

// spanEvent is a request beginning (begin true: span holds what is known
// when it starts: ID, Key, Upstream, Tenant, Start, Devices) or ending.
type spanEvent struct {
	begin bool
	span  estimator.Span
}

// SpanQueue hands request events from the proxies (many goroutines) to the
// engine (one goroutine). Appending never blocks on the engine: the proxy's
// hot path takes one short mutex. It also counts requests in flight per
// device (GPU "3" or MIG instance "0/1"), which drives the simulator's
// power model.
type SpanQueue struct {
	mu     sync.Mutex
	events []spanEvent
	spare  []spanEvent

	lmu      sync.Mutex
	inflight map[string]int64 // by device id
}

// NewSpanQueue makes a queue; devices is a size hint (GPUs or instances).
func NewSpanQueue(devices int) *SpanQueue {
	return &SpanQueue{inflight: make(map[string]int64, max(devices, 0))}
}

// Begin implements requests.Recorder.
func (q *SpanQueue) Begin(s estimator.Span) {
	q.add(s.Devices, 1)
	q.mu.Lock()
	q.events = append(q.events, spanEvent{begin: true, span: s})
	q.mu.Unlock()
}

// End implements requests.Recorder and requests.EventSink.
func (q *SpanQueue) End(s estimator.Span) {
	q.add(s.Devices, -1)
	q.mu.Lock()
	q.events = append(q.events, spanEvent{span: s})
	q.mu.Unlock()
}

// Submit queues a whole span reported after the fact (the event API).
func (q *SpanQueue) Submit(s estimator.Span) {
	q.mu.Lock()
	q.events = append(q.events, spanEvent{span: s})
	q.mu.Unlock()
}

func (q *SpanQueue) add(devices []string, d int64) {
	if len(devices) == 0 {
		return
	}
	q.lmu.Lock()
	for _, id := range devices {
		if n := q.inflight[id] + d; n != 0 {
			q.inflight[id] = n
		} else {
			delete(q.inflight, id)
		}
	}
	q.lmu.Unlock()
}

// Load is the simulator's view of a device: InflightLoad of its requests
// in flight.
func (q *SpanQueue) Load(device string) float64 {
	q.lmu.Lock()
	n := q.inflight[device]
	q.lmu.Unlock()
	return InflightLoad(int(n))
}

// InflightLoad is the load --simulate gives a device with n requests in
// flight: n/(n+2), a saturating curve like continuous batching (1 request
// ~ 33 %, 8 ~ 80 %).
func InflightLoad(n int) float64 {
	f := float64(max(n, 0))
	return f / (f + 2)
}

// drain returns the queued events in arrival order. The slice is reused:
// it is valid until the next drain.
func (q *SpanQueue) drain() []spanEvent {
	q.mu.Lock()
	out := q.events
	q.events = q.spare[:0]
	q.mu.Unlock()
	q.spare = out
	return out
}

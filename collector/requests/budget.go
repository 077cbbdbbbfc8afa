package requests

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of a BodyBudget.
const (
	DefaultMaxBufferedBytes = 256 << 20
	DefaultBufferWait       = 5 * time.Second
)

// BodyBudget bounds the bytes of metered request bodies that the proxies
// of a node hold in memory at once (each is read whole to learn its model).
// A request waits for its share while its client waits, up to a bound;
// past it the proxy answers 503. One budget is shared by all the proxies.
//
// Requests that hold nothing wait in turn (first come, first served: a
// large body is not starved by a stream of small ones). A body of unknown
// length takes more room in steps while it holds some, and must never wait
// for a step (two such bodies would each wait for the other's room): a
// step is taken at once when the room is free, ahead of the requests
// waiting, or refused. x/sync's semaphore, tried first, refuses such a step
// whenever anyone is queued, room or not; this is its queue with that one
// difference.
type BodyBudget struct {
	size int64
	wait time.Duration

	mu    sync.Mutex
	used  int64
	queue []*budgetWaiter // waiting in turn

	inUse   atomic.Int64 // used, for reading without mu
	waiting atomic.Int64
	refused atomic.Int64
}

// budgetWaiter is a request waiting for n bytes; ready is closed once they
// are its.
type budgetWaiter struct {
	n     int64
	ready chan struct{}
}

// NewBodyBudget makes a budget of size bytes (DefaultMaxBufferedBytes when
// not positive); a request waits at most wait for its share
// (DefaultBufferWait when not positive).
func NewBodyBudget(size int64, wait time.Duration) *BodyBudget {
	size, wait = cmpOr(size, DefaultMaxBufferedBytes), cmpOr(wait, DefaultBufferWait)
	return &BodyBudget{size: size, wait: wait}
}

// Size is the budget in bytes.
func (b *BodyBudget) Size() int64 { return b.size }

// InUse is the bytes held now.
func (b *BodyBudget) InUse() int64 { return b.inUse.Load() }

// Waiting is the number of requests waiting for room now.
func (b *BodyBudget) Waiting() int64 { return b.waiting.Load() }

// Refused is the number of requests answered 503 so far because no room
// was found for their body: within the wait for its first share, at once
// for a later step of a body of unknown length.
func (b *BodyBudget) Refused() int64 { return b.refused.Load() }

// acquire takes n bytes (at most the whole budget, so that one body larger
// than it can still pass alone), waiting its turn while ctx lives and at
// most the budget's wait. It returns what was taken, for release. A
// request calls it holding nothing.
func (b *BodyBudget) acquire(ctx context.Context, n int64) (int64, error) {
	n = min(max(n, 0), b.size)
	if n == 0 {
		return 0, nil
	}
	b.mu.Lock()
	if len(b.queue) == 0 && b.used+n <= b.size {
		b.add(n)
		b.mu.Unlock()
		return n, nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.queue = append(b.queue, w)
	b.mu.Unlock()

	b.waiting.Add(1)
	defer b.waiting.Add(-1)
	ctx, cancel := context.WithTimeout(ctx, b.wait)
	defer cancel()
	select {
	case <-w.ready:
		return n, nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready: // given its room as the wait ended: give it back
		b.add(-n)
	default:
		b.queue = slices.DeleteFunc(b.queue, func(q *budgetWaiter) bool { return q == w })
	}
	b.grant() // those behind it may fit now
	return 0, ctx.Err()
}

// tryAcquire takes n more bytes for a request that holds held already, at
// once or not at all, never waiting, ahead of the requests waiting (see
// BodyBudget). What would take the request past the whole budget is not
// taken (one body larger than the budget passes alone). It returns what
// was taken, for release.
func (b *BodyBudget) tryAcquire(held, n int64) (int64, bool) {
	n = min(n, b.size-held)
	if n <= 0 {
		return 0, true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.size {
		return 0, false
	}
	b.add(n)
	return n, true
}

// release gives back n bytes taken by acquire or tryAcquire, and gives the
// requests waiting, in turn, what now fits.
func (b *BodyBudget) release(n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.add(-n)
	b.grant()
}

// grant gives the waiting requests their room in turn while the first
// fits. Under mu.
func (b *BodyBudget) grant() {
	for len(b.queue) > 0 && b.used+b.queue[0].n <= b.size {
		w := b.queue[0]
		b.queue[0] = nil
		b.queue = b.queue[1:]
		b.add(w.n)
		close(w.ready)
	}
	if len(b.queue) == 0 {
		b.queue = nil // let the array go
	}
}

// add changes the bytes used. Under mu.
func (b *BodyBudget) add(n int64) {
	b.used += n
	b.inUse.Store(b.used)
}

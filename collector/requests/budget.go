package requests

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
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
type BodyBudget struct {
	sem     *semaphore.Weighted
	size    int64
	wait    time.Duration
	inUse   atomic.Int64
	waiting atomic.Int64
	refused atomic.Int64
}

// NewBodyBudget makes a budget of size bytes (DefaultMaxBufferedBytes when
// not positive); a request waits at most wait for its share
// (DefaultBufferWait when not positive).
func NewBodyBudget(size int64, wait time.Duration) *BodyBudget {
	size, wait = cmpOr(size, DefaultMaxBufferedBytes), cmpOr(wait, DefaultBufferWait)
	return &BodyBudget{sem: semaphore.NewWeighted(size), size: size, wait: wait}
}

// Size is the budget in bytes.
func (b *BodyBudget) Size() int64 { return b.size }

// InUse is the bytes held now.
func (b *BodyBudget) InUse() int64 { return b.inUse.Load() }

// Waiting is the number of requests waiting for room now.
func (b *BodyBudget) Waiting() int64 { return b.waiting.Load() }

// Refused is the number of requests answered 503 so far because no room
// for their body was found within the wait.
func (b *BodyBudget) Refused() int64 { return b.refused.Load() }

// acquire takes n bytes (at most the whole budget, so that one body larger
// than it can still pass alone), waiting while ctx lives and at most the
// budget's wait. It returns what was taken, for release.
func (b *BodyBudget) acquire(ctx context.Context, n int64) (int64, error) {
	n = min(max(n, 0), b.size)
	if n == 0 {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, b.wait)
	defer cancel()
	b.waiting.Add(1)
	err := b.sem.Acquire(ctx, n)
	b.waiting.Add(-1)
	if err != nil {
		return 0, err
	}
	b.inUse.Add(n)
	return n, nil
}

// tryAcquire takes n more bytes for a request that holds held already, at
// once or not at all, never waiting: a request holding room must never
// wait for more (the semaphore is FIFO, so a request queued behind it
// would wait for it while it waits for that one). What would take the
// request past the whole budget is not taken (one body larger than the
// budget passes alone). It returns what was taken, for release.
func (b *BodyBudget) tryAcquire(held, n int64) (int64, bool) {
	n = min(n, b.size-held)
	if n <= 0 {
		return 0, true
	}
	if !b.sem.TryAcquire(n) {
		return 0, false
	}
	b.inUse.Add(n)
	return n, true
}

// grow makes the n bytes a request holds n+more: at once when there is
// room, else by giving back all it holds and waiting for the whole, like
// acquire. A request never waits while it holds room: the semaphore is
// FIFO, so a request queued behind it would wait for it while it waits for
// that one (and x/sync's TryAcquire fails whenever any request is queued,
// room or not). It returns what is held then, 0 when it failed.
func (b *BodyBudget) grow(ctx context.Context, held, more int64) (int64, error) {
	if got, ok := b.tryAcquire(held, more); ok {
		return held + got, nil
	}
	b.release(held)
	return b.acquire(ctx, held+more)
}

// release gives back n bytes taken by acquire, tryAcquire or grow.
func (b *BodyBudget) release(n int64) {
	if n > 0 {
		b.inUse.Add(-n)
		b.sem.Release(n)
	}
}

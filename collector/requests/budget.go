package requests

import (
	"context"
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
// It is a counter under a mutex, not a FIFO semaphore (x/sync's, tried
// first): a body of unknown length takes its room in steps while it holds
// some, and must never wait for a step (two such bodies would each wait
// for the other's room), so a step is taken at once or refused. A FIFO
// semaphore refuses such a step whenever any request is queued, even with
// room to spare, and a request that gives back its room to wait in the
// queue keeps its bytes in memory uncounted. Here a step is refused only
// when the room is really not there, and waiting requests take room as
// releases make it, the first to find enough taking it.
type BodyBudget struct {
	size int64
	wait time.Duration

	mu    sync.Mutex
	used  int64
	freed chan struct{} // closed and replaced at every release: waiters look again

	inUse   atomic.Int64 // used, for reading without mu
	waiting atomic.Int64
	refused atomic.Int64
}

// NewBodyBudget makes a budget of size bytes (DefaultMaxBufferedBytes when
// not positive); a request waits at most wait for its share
// (DefaultBufferWait when not positive).
func NewBodyBudget(size int64, wait time.Duration) *BodyBudget {
	size, wait = cmpOr(size, DefaultMaxBufferedBytes), cmpOr(wait, DefaultBufferWait)
	return &BodyBudget{size: size, wait: wait, freed: make(chan struct{})}
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

// take takes n bytes if they are free; else it returns the channel that is
// closed at the next release.
func (b *BodyBudget) take(n int64) (bool, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.size {
		return false, b.freed
	}
	b.used += n
	b.inUse.Store(b.used)
	return true, nil
}

// acquire takes n bytes (at most the whole budget, so that one body larger
// than it can still pass alone), waiting while ctx lives and at most the
// budget's wait. It returns what was taken, for release. A request calls
// it holding nothing.
func (b *BodyBudget) acquire(ctx context.Context, n int64) (int64, error) {
	n = min(max(n, 0), b.size)
	if n == 0 {
		return 0, nil
	}
	ok, freed := b.take(n)
	if ok {
		return n, nil
	}
	ctx, cancel := context.WithTimeout(ctx, b.wait)
	defer cancel()
	b.waiting.Add(1)
	defer b.waiting.Add(-1)
	for {
		select {
		case <-freed:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if ok, freed = b.take(n); ok {
			return n, nil
		}
	}
}

// tryAcquire takes n more bytes for a request that holds held already, at
// once or not at all, never waiting (see BodyBudget). What would take the
// request past the whole budget is not taken (one body larger than the
// budget passes alone). It returns what was taken, for release.
func (b *BodyBudget) tryAcquire(held, n int64) (int64, bool) {
	n = min(n, b.size-held)
	if n <= 0 {
		return 0, true
	}
	if ok, _ := b.take(n); !ok {
		return 0, false
	}
	return n, true
}

// release gives back n bytes taken by acquire or tryAcquire.
func (b *BodyBudget) release(n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.inUse.Store(b.used)
	close(b.freed)
	b.freed = make(chan struct{})
	b.mu.Unlock()
}

package requests

import (
	"container/heap"
	"iter"
	"time"
)

// beginAt is a request begun at start, as Expire's heap keeps it.
type beginAt struct {
	start time.Time
	id    string
}

// beginHeap orders begun requests by start, the oldest on top, so that an
// expiry tick looks only at those due: O(expired · log open), not a scan of
// every request open. Ended requests stay in it until they reach the top
// (or a compaction), and are skipped there.
type beginHeap []beginAt

func (h beginHeap) Len() int           { return len(h) }
func (h beginHeap) Less(i, j int) bool { return h[i].start.Before(h[j].start) }
func (h beginHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *beginHeap) Push(x any)        { *h = append(*h, x.(beginAt)) }
func (h *beginHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// expiryCompactSlack is how many ended requests the heap may keep beyond
// twice those open before it is rebuilt from the open ones.
const expiryCompactSlack = 1024

// beginExpiry keeps a begun request for Expire; e.mu is held.
func (e *Events) beginExpiry(id string, start time.Time) {
	if len(e.starts) > 2*len(e.open)+expiryCompactSlack {
		e.starts = e.starts[:0]
		for oid, o := range e.open {
			e.starts = append(e.starts, beginAt{o.start, oid})
		}
		heap.Init(&e.starts)
	}
	heap.Push(&e.starts, beginAt{start, id})
}

// expired yields, oldest first, the requests still open that began longer
// than the history before now, taking them off the heap; e.mu is held.
func (e *Events) expired(now time.Time) iter.Seq2[string, openSpan] {
	return func(yield func(string, openSpan) bool) {
		for len(e.starts) > 0 && now.Sub(e.starts[0].start) > e.opts.History {
			b := heap.Pop(&e.starts).(beginAt)
			o, ok := e.open[b.id]
			if !ok || !o.start.Equal(b.start) {
				continue // ended since, or begun again later
			}
			if !yield(b.id, o) {
				return
			}
		}
	}
}

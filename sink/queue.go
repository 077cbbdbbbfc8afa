package sink

// queue holds encoded lines from Enqueue until InfluxDB has acknowledged
// them. The sender reads a batch with peek and deletes it with drop only
// once it is written (or refused for good), so a durable implementation
// (the on-disk spool) loses nothing when the daemon dies mid-write. The
// Writer serialises calls, except that the batch peek returned may be read
// while push runs.
type queue interface {
	// push appends lines in order, as many as fit, and says how many.
	push(lines []string) int
	// peek returns up to n of the oldest lines, oldest first. The slice
	// stays valid until the next drop.
	peek(n int) []string
	// drop deletes the n oldest lines.
	drop(n int)
	len() int
}

// memQueue is a bounded in-memory queue: when full it refuses new lines,
// so the batch in flight never changes under the sender and order holds.
type memQueue struct {
	lines []string
	head  int // lines[:head] are dropped
	max   int
}

func newMemQueue(max int) *memQueue { return &memQueue{max: max} }

func (q *memQueue) len() int { return len(q.lines) - q.head }

func (q *memQueue) push(lines []string) int {
	n := min(len(lines), q.max-q.len())
	q.lines = append(q.lines, lines[:n]...)
	return n
}

func (q *memQueue) peek(n int) []string {
	end := q.head + min(n, q.len())
	return q.lines[q.head:end:end]
}

func (q *memQueue) drop(n int) {
	n = min(n, q.len())
	clear(q.lines[q.head : q.head+n]) // let the strings go
	q.head += n
	// Reclaim the dropped front once it is the larger part.
	if q.head > 1024 && q.head > len(q.lines)/2 {
		q.lines = append(q.lines[:0], q.lines[q.head:]...)
		q.head = 0
	}
}

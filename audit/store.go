package audit

import (
	"sort"
	"sync"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/params"
	"github.com/deadlabour/deadlabour/schema"
)

// Store keeps the most recent records and, per device, how the
// intervals of the last window were split, so that a recent record can be
// shown and recomputed (GET /v1/requests/{id}?explain=1, deadlabourd
// audit). The engine writes, HTTP handlers read. Memory is bounded: at most
// maxRecords records, and the settlements of window per device.
type Store struct {
	params     estimator.Params
	sources    []params.Source
	maxRecords int
	window     time.Duration
	schema     schema.RequestSchema // the engine's: records are shown as written

	mu sync.Mutex
	// records keeps, per request id, every record kept with that id in the
	// order they were recorded: two records may share an id (two proxied
	// requests that brought the same X-Request-Id, an event-API request
	// recorded again after a restart).
	records map[string]*fifo[estimator.Record]
	order   fifo[string] // one id per record kept, oldest record first
	settled map[string]*settleLog
}

// New makes a store of at most maxRecords records and the settlements of
// window per device; schema is the engine's, so that records are shown as
// written.
func New(p estimator.Params, sources []params.Source, maxRecords int, window time.Duration, schema schema.RequestSchema) *Store {
	return &Store{params: p, sources: sources, maxRecords: maxRecords, window: window, schema: schema,
		records: map[string]*fifo[estimator.Record]{}, settled: map[string]*settleLog{}}
}

// AddRecord keeps r, forgetting the oldest records beyond maxRecords. Its
// cost does not grow with the records kept per id: a client that sends
// one X-Request-Id with every request evicts in O(1) amortised, as one
// that never repeats an id does.
func (s *Store) AddRecord(r estimator.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.records[r.ID]
	if q == nil {
		q = &fifo[estimator.Record]{}
		s.records[r.ID] = q
	}
	q.push(r)
	s.order.push(r.ID)
	for s.order.len() > s.maxRecords {
		// The oldest record of the oldest id in order is the oldest
		// record kept: each id's records are in the order they were added.
		id := s.order.front()
		s.order.pop()
		if q := s.records[id]; q.len() > 1 {
			q.pop()
		} else {
			delete(s.records, id)
		}
	}
}

// fifo is a first-in, first-out list whose pop is O(1) amortised: a pop
// moves the head on, and the live items are moved to the array's front
// only once the popped slots outnumber them, so that no item is moved more
// often than items are popped, and the array holds at most twice the live
// items (or compactAfter more), with append's spare capacity beyond.
type fifo[T any] struct {
	items []T
	head  int
	moved int // items moved by compaction, in all (the tests read it)
}

// compactAfter is the fewest popped slots a fifo compacts: small lists
// are left alone.
const compactAfter = 64

func (q *fifo[T]) push(v T)  { q.items = append(q.items, v) }
func (q *fifo[T]) len() int  { return len(q.items) - q.head }
func (q *fifo[T]) front() T  { return q.items[q.head] }
func (q *fifo[T]) live() []T { return q.items[q.head:] }

// pop forgets the oldest item. The list must not be empty.
func (q *fifo[T]) pop() {
	var zero T
	q.items[q.head] = zero // let what it holds go
	q.head++
	switch {
	case q.head == len(q.items):
		q.items, q.head = q.items[:0], 0
	case q.head > compactAfter && q.head > len(q.items)/2:
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.moved += n
		q.items, q.head = q.items[:n], 0
	}
}

// AddSettled keeps how intervals were split, forgetting those older than window.
func (s *Store) AddSettled(sts []estimator.Settlement) {
	if len(sts) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range sts {
		lg := s.settled[st.Device]
		if lg == nil {
			lg = &settleLog{}
			s.settled[st.Device] = lg
		}
		lg.add(st, s.window)
	}
}

// keptRecord is a record and the settlements that may have charged it.
type keptRecord struct {
	rec     estimator.Record
	settled map[string][]estimator.Settlement
}

// lookup returns the newest limit records kept with id, oldest first, and
// how many are kept with id in all.
func (s *Store) lookup(id string, limit int) (kept []keptRecord, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.records[id]
	if q == nil {
		return nil, 0
	}
	rs := q.live()
	total = len(rs)
	if len(rs) > limit {
		rs = rs[len(rs)-limit:]
	}
	for _, r := range rs {
		settled := map[string][]estimator.Settlement{}
		for _, ds := range r.PerDevice {
			from, to := r.Start, r.End
			if !ds.ChargedTo.IsZero() && ds.ChargedTo.After(to) {
				to = ds.ChargedTo
			}
			if lg := s.settled[ds.Device]; lg != nil {
				settled[ds.Device] = lg.between(from, to, ds.Device)
			}
		}
		kept = append(kept, keptRecord{rec: r, settled: settled})
	}
	return kept, total
}

// settleLog is one device's settlements in time order, compact.
type settleLog struct {
	entries fifo[compactSettlement]
}

type compactSettlement struct {
	start, end                                              int64
	joules, covered, sumWeight, prompt, decode, fixed, sumO float64
	alpha                                                   float64 // tokens weighting's prompt token weight
	method, coef, alphaSrc                                  uint8
	byOverlap                                               bool
}

// methodCodes and coefficientSources (of the marginal coefficients and of
// the prompt token weight) are the values a compactSettlement stores by
// index; returned by value, so nothing can change them.
func methodCodes() [6]estimator.Method {
	return [...]estimator.Method{estimator.MethodCounter, estimator.MethodPowerIntegral, estimator.MethodModelled,
		estimator.MethodStatic, estimator.MethodMixed, estimator.MethodNone}
}

func coefficientSources() [6]string {
	return [...]string{"", "configured", "fitted", "warming", "host", "default"}
}

func indexOf[T comparable](list []T, v T) uint8 {
	for i, x := range list {
		if x == v {
			return uint8(i)
		}
	}
	return 0
}

func (lg *settleLog) add(st estimator.Settlement, window time.Duration) {
	methods, coefs := methodCodes(), coefficientSources()
	lg.entries.push(compactSettlement{
		start: st.Start.UnixNano(), end: st.End.UnixNano(), joules: st.Joules, covered: st.Covered,
		sumWeight: st.SumWeight, prompt: st.PromptJPerToken, decode: st.DecodeJPerToken, fixed: st.FixedJ,
		sumO: st.SumOverlapS, method: indexOf(methods[:], st.Method), coef: indexOf(coefs[:], st.Coefficients),
		alpha: st.PromptTokenWeight, alphaSrc: indexOf(coefs[:], st.TokenWeight), byOverlap: st.ByOverlap,
	})
	horizon := st.End.UnixNano() - int64(window)
	for lg.entries.len() > 0 && lg.entries.front().end < horizon {
		lg.entries.pop()
	}
}

// between returns the settlements of intervals that overlap [from, to].
func (lg *settleLog) between(from, to time.Time, device string) []estimator.Settlement {
	live := lg.entries.live()
	a, b := from.UnixNano(), to.UnixNano()
	i := sort.Search(len(live), func(i int) bool { return live[i].end > a })
	var out []estimator.Settlement
	methods, coefs := methodCodes(), coefficientSources()
	for ; i < len(live) && live[i].start < b; i++ {
		c := live[i]
		out = append(out, estimator.Settlement{
			Interval: estimator.Interval{Device: device, Start: time.Unix(0, c.start), End: time.Unix(0, c.end),
				Joules: c.joules, Method: methods[c.method]},
			Covered: c.covered, SumWeight: c.sumWeight, ByOverlap: c.byOverlap,
			PromptJPerToken: c.prompt, DecodeJPerToken: c.decode, Coefficients: coefs[c.coef],
			FixedJ: c.fixed, SumOverlapS: c.sumO, PromptTokenWeight: c.alpha, TokenWeight: coefs[c.alphaSrc],
		})
	}
	return out
}

package engine

import (
	"encoding/binary"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/schema"
	"github.com/deadlabour/deadlabour/sink"
)

// The crash journal: every meter interval added to the ledger and every
// finished request is written to the spool's journal (sink/journal.go) in
// the commit after it, and each record marks its request recorded in the
// same commit as its point. After a SIGKILL, recoverJournal settles the requests
// the journal holds and were not recorded, from the intervals it holds,
// before the engine's first poll. Keys:
//
//	"i" device 0x00 end (Unix ns, uint64 BE)  an interval (journal_codec.go)
//	"s" end (Unix ns, uint64 BE) key          a finished request (journal_codec.go)
//
// Intervals are kept back to the start of the oldest request the ledger
// tracks (no further than journalKeep before the settled end), requests
// back to the start of the oldest interval kept: a request recorded stays,
// marked, while intervals it shared are kept, so that recovery splits
// them as the run did.

// Journal is where the engine keeps it: the sink (*sink.Writer).
type Journal interface {
	EnqueueJournaled(ops []sink.JournalOp, points ...schema.Point) error
	ReadJournal() (keys, values [][]byte, err error)
}

// journalKeep bounds the intervals kept for a request still open.
const journalKeep = 10 * time.Minute

type journalSpan struct {
	Recorded bool           `json:"recorded,omitempty"`
	Span     estimator.Span `json:"span"`
}

// journalState is the engine's side of the journal.
type journalState struct {
	ops  []sink.JournalOp
	kept map[string][]estimator.Interval // journaled, not yet deleted, by device
	cut  map[string]time.Time            // intervals ending by it are deleted, by device
	from time.Time                       // requests ending before it are deleted
	// ended holds each finished request's journaled value until its record
	// marks it recorded, by journal key: the mark is that value with its
	// recorded flag set (markRecorded), not a second encoding of the span.
	ended map[string][]byte
	// What the last trim saw: each device's settled end, and whether a
	// request was recorded since (the oldest request tracked moves only
	// then); with neither changed a trim has nothing to delete.
	devs     []string
	settled  map[string]time.Time
	recorded bool
}

func be(t time.Time) []byte { return binary.BigEndian.AppendUint64(nil, uint64(max(t.UnixNano(), 0))) }

func intervalKey(dev string, end time.Time) []byte {
	return append([]byte("i"+dev+"\x00"), be(end)...)
}

func spanKey(s estimator.Span) []byte {
	return append(append([]byte("s"), be(s.End)...), ledgerKey(s)...)
}

// ledgerKey is a request's key in the ledger: its Key, else its ID.
func ledgerKey(s estimator.Span) string {
	if s.Key != "" {
		return s.Key
	}
	return s.ID
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (e *Engine) journalOn() bool { return e.Journal != nil }

func (e *Engine) journalInterval(iv estimator.Interval) {
	if !e.journalOn() {
		return
	}
	e.j.ops = append(e.j.ops, sink.JournalOp{Key: intervalKey(iv.Device, iv.End), Value: encodeInterval(iv)})
	if e.j.kept == nil {
		e.j.kept, e.j.cut = map[string][]estimator.Interval{}, map[string]time.Time{}
	}
	e.j.kept[iv.Device] = append(e.j.kept[iv.Device], iv)
}

func (e *Engine) journalSpan(s estimator.Span, recorded bool) {
	if !e.journalOn() {
		return
	}
	key := spanKey(s)
	e.j.recorded = e.j.recorded || recorded
	var v []byte
	if ended, ok := e.j.ended[string(key)]; ok && recorded {
		// What encodeSpan(s, true) gives, without encoding s again.
		v = markRecorded(ended)
		delete(e.j.ended, string(key))
	} else {
		v = encodeSpan(s, recorded)
		if !recorded {
			if e.j.ended == nil {
				e.j.ended = map[string][]byte{}
			}
			e.j.ended[string(key)] = v
		}
	}
	e.j.ops = append(e.j.ops, sink.JournalOp{Key: key, Value: v})
}

// ledgerEnd ends a request in the ledger, journaled.
func (e *Engine) ledgerEnd(s estimator.Span) {
	e.journalSpan(s, false)
	e.Ledger.End(s)
}

// journalTrim deletes what no request the ledger tracks needs any more.
func (e *Engine) journalTrim() {
	if !e.journalOn() || !e.journalMoved() {
		return
	}
	oldest, tracking := e.Ledger.Oldest()
	from, any := time.Time{}, false
	for _, dev := range e.j.devs {
		cut := e.Ledger.SettledTo(dev)
		if cut.IsZero() {
			continue
		}
		if tracking && oldest.Before(cut) {
			cut = latest(oldest, cut.Add(-journalKeep))
		}
		kept := e.j.kept[dev]
		n := 0
		for n < len(kept) && !kept[n].End.After(cut) {
			n++
		}
		e.j.kept[dev] = kept[n:]
		if n > 0 && cut.After(e.j.cut[dev]) {
			e.j.cut[dev] = cut
			e.j.ops = append(e.j.ops, sink.JournalOp{Key: intervalKey(dev, time.Unix(0, 0)), Until: intervalKey(dev, cut.Add(1))})
		}
		f := cut
		if len(e.j.kept[dev]) > 0 && e.j.kept[dev][0].Start.Before(f) {
			f = e.j.kept[dev][0].Start
		}
		if !any || f.Before(from) {
			from, any = f, true
		}
	}
	if any && from.After(e.j.from) {
		e.j.from = from
		until := append([]byte("s"), be(from)...)
		// Requests whose record was never written (refused by the schema)
		// leave the cache with their journal entries.
		for k := range e.j.ended {
			if k < string(until) {
				delete(e.j.ended, k)
			}
		}
		e.j.ops = append(e.j.ops, sink.JournalOp{Key: []byte("s"), Until: until})
	}
}

// journalMoved says whether anything a trim looks at changed since the
// last: a device's settled end, or a request recorded. The poll loop trims
// every tick; most ticks change neither, and the ledger's Oldest walks
// every request it tracks.
func (e *Engine) journalMoved() bool {
	if e.j.devs == nil {
		e.j.devs, e.j.settled = e.Ledger.Devices(), map[string]time.Time{}
	}
	moved := e.j.recorded
	e.j.recorded = false
	for _, dev := range e.j.devs {
		if t := e.Ledger.SettledTo(dev); !t.Equal(e.j.settled[dev]) {
			e.j.settled[dev], moved = t, true
		}
	}
	return moved
}

// journalClear deletes the whole journal, with the last points at shutdown.
func (e *Engine) journalClear() {
	if e.journalOn() {
		e.j.ops = append(e.j.ops[:0], sink.JournalOp{Until: []byte{0xff}})
	}
}

// recoverJournal settles what the journal of a run that did not stop holds, before
// the first poll: the requests it did not record, and the idle of the
// intervals after its wear marks; it moves the wear marks past them.
func (e *Engine) recoverJournal() {
	keys, values, err := e.Journal.ReadJournal()
	if err != nil {
		e.Log.Error("the crash journal could not be read: requests a crash left unsettled are lost", "err", err)
		return
	}
	if len(keys) == 0 {
		return
	}
	l, err := estimator.New(e.Ledger.Params())
	if err != nil {
		return
	}
	ivs := map[string][]estimator.Interval{}
	recorded := map[string]bool{}
	var spans []estimator.Span
	refused := 0
	for i, k := range keys {
		switch k[0] {
		case 'i':
			iv, err := decodeInterval(values[i])
			if err != nil || l.AddInterval(iv) != nil {
				refused++
				continue
			}
			ivs[iv.Device] = append(ivs[iv.Device], iv)
		case 's':
			js, err := decodeSpan(values[i])
			if err != nil {
				refused++
				continue
			}
			spans = append(spans, js.Span)
			if js.Recorded {
				recorded[ledgerKey(js.Span)] = true
			}
		}
	}
	for _, s := range spans {
		l.End(s)
	}
	out := l.Close()
	var points []schema.Point
	truncated := 0
	for _, r := range out.Records {
		if recorded[ledgerKey(r.Span)] {
			continue
		}
		r.Recovered = true
		if !covered(ivs, r) {
			r.HistoryTruncated = true
		}
		if r.HistoryTruncated {
			truncated++
		}
		p, err := e.Schema.Point(r)
		if err != nil {
			e.Log.Error("request record not written", "request_id", r.ID, "err", err)
			continue
		}
		points = append(points, p)
	}
	records := len(points)
	idle := newIdleAggregator(e.ReportInterval)
	for _, s := range out.Idle {
		if s.End.After(e.WearMarks[s.Device]) {
			idle.add(s)
		}
	}
	for _, s := range idle.flushAll(l.SettledTo) {
		points = append(points, e.idlePoint(s))
	}
	if e.WearMarks == nil {
		e.WearMarks = map[string]time.Time{}
	}
	for _, dev := range l.Devices() {
		if t := l.SettledTo(dev); t.After(e.WearMarks[dev]) {
			e.WearMarks[dev] = t
		}
	}
	e.Log.Info("requests a crash left unsettled are recorded from the crash journal (recovered=true)",
		"records", records, "history_truncated", truncated, "already_recorded", len(recorded), "entries_unreadable", refused)
	e.journalClear()
	e.enqueue(points)
}

// covered: every device of r has journaled intervals from its start to its end.
func covered(ivs map[string][]estimator.Interval, r estimator.Record) bool {
	for _, ds := range r.PerDevice {
		iv := ivs[ds.Device]
		if len(iv) == 0 || iv[0].Start.After(r.Start) || iv[len(iv)-1].End.Before(r.End) {
			return false
		}
	}
	return true
}

// journalOps takes the changes waiting to be enqueued.
func (e *Engine) journalOps() []sink.JournalOp {
	ops := e.j.ops
	e.j.ops = nil
	return ops
}

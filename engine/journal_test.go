package engine

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/schema"
	"github.com/deadlabour/deadlabour/sink"
)

// memJournal is a journal in memory whose changes apply at once, with
// the points they came with.
type memJournal struct {
	*collectSink
	kv map[string][]byte
}

func (m *memJournal) EnqueueJournaled(ops []sink.JournalOp, points ...schema.Point) error {
	for _, o := range ops {
		switch {
		case o.Value != nil:
			m.kv[string(o.Key)] = o.Value
		case o.Until == nil:
			delete(m.kv, string(o.Key))
		default:
			for k := range m.kv {
				if bytes.Compare([]byte(k), o.Key) >= 0 && bytes.Compare([]byte(k), o.Until) < 0 {
					delete(m.kv, k)
				}
			}
		}
	}
	return m.Enqueue(points...)
}

func (m *memJournal) ReadJournal() (keys, values [][]byte, err error) {
	for _, k := range slices.Sorted(maps.Keys(m.kv)) {
		keys, values = append(keys, []byte(k)), append(values, m.kv[k])
	}
	return keys, values, nil
}

func recordsOf(points []schema.Point) map[string]schema.Point {
	out := map[string]schema.Point{}
	for _, p := range points {
		if p.Measurement != schema.MeasurementRequest {
			continue
		}
		for _, f := range p.Fields {
			if f.Key == "request_id" {
				out[f.Value.(string)] = p
			}
		}
	}
	return out
}

func field(p schema.Point, name string) any {
	for _, f := range p.Fields {
		if f.Key == name {
			return f.Value
		}
	}
	return nil
}

// TestJournalRecoversWhatACrashLeft: a run records request a and is killed
// while b, finished, waits for its intervals; the next run records b from
// the journal, recovered and history_truncated (its last interval was never
// journaled), not a again, and clears the journal.
func TestJournalRecoversWhatACrashLeft(t *testing.T) {
	t.Run("binary", func(t *testing.T) { testJournalRecovers(t, false) })
	// The journal of a daemon from before the binary values, upgraded
	// after its crash: its JSON values are read.
	t.Run("json", func(t *testing.T) { testJournalRecovers(t, true) })
}

// asJSON rewrites a journal's values as the JSON a daemon before
// journal_codec.go wrote.
func asJSON(t *testing.T, kv map[string][]byte) {
	t.Helper()
	for k, v := range kv {
		var j []byte
		switch k[0] {
		case 'i':
			iv, err := decodeInterval(v)
			if err != nil {
				t.Fatal(err)
			}
			j, _ = json.Marshal(iv)
		case 's':
			js, err := decodeSpan(v)
			if err != nil {
				t.Fatal(err)
			}
			j, _ = json.Marshal(js)
		}
		kv[k] = j
	}
}

func testJournalRecovers(t *testing.T, legacy bool) {
	t0 := time.Unix(1000, 0)
	var ivs []estimator.Interval
	for i := range 10 {
		ivs = append(ivs, estimator.Interval{Device: "0", Start: t0.Add(time.Duration(i) * time.Second),
			End: t0.Add(time.Duration(i+1) * time.Second), Joules: 100, Method: estimator.MethodCounter})
	}
	j := &memJournal{kv: map[string][]byte{}}
	span := func(id string, from, to time.Duration) estimator.Span {
		return estimator.Span{ID: id, Start: t0.Add(from), End: t0.Add(to), Status: "200", Devices: []string{"0"}, Served: true,
			PromptTokens: 10, CompletionTokens: 10}
	}
	r := newEngineRig(t, time.Second, ivs)
	j.collectSink = r.out
	r.Journal = j
	r.Schema = schema.NewRequestSchema(nil, "EUR")
	r.Queue.End(span("a", 500*time.Millisecond, 1500*time.Millisecond))
	r.tickAt(t0.Add(2 * time.Second))
	r.Queue.End(span("b", 3*time.Second, 5500*time.Millisecond))
	r.tickAt(t0.Add(5 * time.Second))
	if got := recordsOf(r.out.points); len(got) != 1 || got["a"].Measurement == "" {
		t.Fatalf("records before the kill: %v, want a", slices.Collect(maps.Keys(got)))
	}
	if len(j.kv) == 0 {
		t.Fatal("nothing journaled")
	}

	if legacy {
		asJSON(t, j.kv)
	}
	// The kill: a new engine on the same journal.
	r2 := newEngineRig(t, time.Second, nil)
	j.collectSink = r2.out
	r2.Journal, r2.Schema, r2.ReportInterval = j, r.Schema, time.Second
	r2.market = false
	r2.recoverJournal()
	got := recordsOf(r2.out.points)
	b, ok := got["b"]
	if len(got) != 1 || !ok {
		t.Fatalf("recovered records: %v, want b alone", slices.Collect(maps.Keys(got)))
	}
	if field(b, "recovered") != true || field(b, "history_truncated") != true {
		t.Errorf("b: recovered %v, history_truncated %v; want both true", field(b, "recovered"), field(b, "history_truncated"))
	}
	if e, _ := field(b, "gpu_energy_j").(float64); e <= 0 {
		t.Errorf("b: gpu_energy_j %v, want its share of the journaled intervals", field(b, "gpu_energy_j"))
	}
	if len(j.kv) != 0 {
		t.Errorf("journal after recovery: %d entries, want none", len(j.kv))
	}
	if !r2.WearMarks["0"].Equal(t0.Add(5 * time.Second)) {
		t.Errorf("wear mark after recovery %v, want the end of the last journaled interval", r2.WearMarks["0"])
	}
}

// The recorded mark reuses the value journaled at the request's end: it is
// byte for byte what encoding the span again with Recorded set gives.
func TestJournalRecordedMarkIsTheEncoding(t *testing.T) {
	e := &Engine{Options: Options{Journal: nopJournal{}}}
	s := estimator.Span{ID: "r1", Upstream: "u", Model: "m", Start: time.Unix(10, 5), End: time.Unix(12, 7), Status: "200",
		PromptTokens: 3, CompletionTokens: 4, UsageSource: estimator.UsageReported, Devices: []string{"0"}, Served: true}
	e.journalSpan(s, false)
	e.journalSpan(s, true)
	want := encodeSpan(s, true)
	if len(e.j.ops) != 2 || !bytes.Equal(e.j.ops[1].Value, want) {
		t.Fatalf("recorded mark %x, want %x", e.j.ops[len(e.j.ops)-1].Value, want)
	}
	if len(e.j.ended) != 0 {
		t.Errorf("%d values kept after the mark, want none", len(e.j.ended))
	}
}

type nopJournal struct{}

func (nopJournal) EnqueueJournaled([]sink.JournalOp, ...schema.Point) error { return nil }
func (nopJournal) ReadJournal() (keys, values [][]byte, err error)          { return nil, nil, nil }

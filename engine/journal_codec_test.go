package engine

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
)

var codecStrings = []string{"", "0", "0/1", "host", "r-1", "llama-3.1-70b", "Größe", "日本語のテナント", "\x00\xff", "a\"b{c}"}

func randStr(r *rand.Rand) string { return codecStrings[r.IntN(len(codecStrings))] }

func randTime(r *rand.Rand) time.Time {
	switch r.IntN(4) {
	case 0:
		return time.Time{}
	case 1:
		return time.Unix(0, 0)
	case 2:
		return time.Unix(0, -r.Int64N(1<<62))
	}
	return time.Unix(0, r.Int64())
}

func randCount(r *rand.Rand) int64 {
	switch r.IntN(4) {
	case 0:
		return -1
	case 1:
		return 0
	case 2:
		return math.MaxInt64 - r.Int64N(2)
	}
	return r.Int64N(100000)
}

func randSpan(r *rand.Rand) estimator.Span {
	s := estimator.Span{ID: randStr(r), Key: randStr(r), TraceID: randStr(r), Upstream: randStr(r), Model: randStr(r),
		Tenant: randStr(r), Namespace: randStr(r), Pod: randStr(r), Status: randStr(r), UsageSource: randStr(r),
		Start: randTime(r), FirstToken: randTime(r), Scheduled: randTime(r), End: randTime(r),
		PromptTokens: randCount(r), CompletionTokens: randCount(r), CachedTokens: randCount(r), ReasoningTokens: randCount(r),
		Served: r.IntN(2) == 0}
	for range r.IntN(4) {
		s.Devices = append(s.Devices, randStr(r))
	}
	return s
}

// sameTimes: t and u are the same instants, or both zero.
func sameTimes(t, u time.Time) bool { return t.IsZero() == u.IsZero() && t.Equal(u) }

// TestJournalCodecRoundTrip: every field of random spans and intervals
// comes back; the recorded mark set on a copy is the encoding with it.
func TestJournalCodecRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	// Every exported field of Span is encoded: a new one must be added to
	// the codec, and here.
	if n := reflect.TypeFor[estimator.Span]().NumField(); n != 20 {
		t.Fatalf("estimator.Span has %d fields, the codec 20: encode the new ones", n)
	}
	for range 2000 {
		s := randSpan(r)
		for _, rec := range []bool{false, true} {
			v := encodeSpan(s, rec)
			js, err := decodeSpan(v)
			if err != nil {
				t.Fatalf("%+v: %v", s, err)
			}
			got := js.Span
			for _, p := range [][2]time.Time{{got.Start, s.Start}, {got.FirstToken, s.FirstToken}, {got.Scheduled, s.Scheduled}, {got.End, s.End}} {
				if !sameTimes(p[0], p[1]) {
					t.Fatalf("time %v, want %v", p[0], p[1])
				}
			}
			got.Start, got.FirstToken, got.Scheduled, got.End = s.Start, s.FirstToken, s.Scheduled, s.End
			if js.Recorded != rec || !reflect.DeepEqual(got, s) {
				t.Fatalf("decoded %+v recorded %v, want %+v recorded %v", got, js.Recorded, s, rec)
			}
		}
		if m, want := markRecorded(encodeSpan(s, false)), encodeSpan(s, true); !bytes.Equal(m, want) {
			t.Fatalf("marked %x, want %x", m, want)
		}

		iv := estimator.Interval{Device: randStr(r), Start: randTime(r), End: randTime(r),
			Joules: (r.Float64() - 0.1) * 1e6, Method: estimator.Method(randStr(r))}
		if r.IntN(8) == 0 {
			iv.Joules = math.Inf(1 - 2*r.IntN(2))
		}
		got, err := decodeInterval(encodeInterval(iv))
		if err != nil {
			t.Fatalf("%+v: %v", iv, err)
		}
		if !sameTimes(got.Start, iv.Start) || !sameTimes(got.End, iv.End) {
			t.Fatalf("interval times %v %v, want %v %v", got.Start, got.End, iv.Start, iv.End)
		}
		got.Start, got.End = iv.Start, iv.End
		if got != iv {
			t.Fatalf("interval %+v, want %+v", got, iv)
		}
	}
}

// TestJournalCodecReadsJSON: values a daemon before the codec journaled,
// and their recorded mark, are read.
func TestJournalCodecReadsJSON(t *testing.T) {
	s := estimator.Span{ID: "r1", Model: "m", Start: time.Unix(10, 5), End: time.Unix(12, 7), Status: "200",
		PromptTokens: -1, Devices: []string{"0"}, Served: true}
	v, _ := json.Marshal(journalSpan{Span: s})
	for _, c := range []struct {
		v   []byte
		rec bool
	}{{v, false}, {markRecorded(v), true}} {
		js, err := decodeSpan(c.v)
		if err != nil || js.Recorded != c.rec || js.Span.ID != "r1" || !js.Span.End.Equal(s.End) || js.Span.PromptTokens != -1 {
			t.Errorf("%s: %+v, %v", c.v, js, err)
		}
	}
	iv := estimator.Interval{Device: "0", Start: time.Unix(1, 0), End: time.Unix(2, 0), Joules: 3.5, Method: estimator.MethodCounter}
	v, _ = json.Marshal(iv)
	if got, err := decodeInterval(v); err != nil || got.Joules != 3.5 || got.Device != "0" || !got.End.Equal(iv.End) {
		t.Errorf("%s: %+v, %v", v, got, err)
	}
}

// TestJournalCodecRefusesGarbage: truncated, extended and foreign values
// are errors.
func TestJournalCodecRefusesGarbage(t *testing.T) {
	s := estimator.Span{ID: "r1", Start: time.Unix(10, 5), End: time.Unix(12, 7), Devices: []string{"0", "1"}}
	iv := estimator.Interval{Device: "0", Start: time.Unix(1, 0), End: time.Unix(2, 0), Joules: 3.5}
	sv, ivv := encodeSpan(s, false), encodeInterval(iv)
	for i := range len(sv) {
		if _, err := decodeSpan(sv[:i]); err == nil {
			t.Errorf("span truncated to %d bytes: no error", i)
		}
	}
	for i := range len(ivv) {
		if _, err := decodeInterval(ivv[:i]); err == nil {
			t.Errorf("interval truncated to %d bytes: no error", i)
		}
	}
	for _, v := range [][]byte{append(sv, 0), {2, 0}, {0x7b}, []byte("garbage"), {1, 0x80}} {
		if _, err := decodeSpan(v); err == nil {
			t.Errorf("span %x: no error", v)
		}
	}
	for _, v := range [][]byte{append(ivv, 0), {2}, {0x7b}, []byte("garbage")} {
		if _, err := decodeInterval(v); err == nil {
			t.Errorf("interval %x: no error", v)
		}
	}
}

// FuzzJournalDecode: decoding any bytes never panics, and what decodes
// (binary) encodes to a value that decodes the same (the bytes may differ:
// a varint may be written longer than it need be).
func FuzzJournalDecode(f *testing.F) {
	f.Add(encodeSpan(estimator.Span{ID: "r1", Start: time.Unix(10, 5), End: time.Unix(12, 7), Devices: []string{"0"}, Served: true}, false))
	f.Add(encodeSpan(estimator.Span{}, true))
	f.Add(encodeInterval(estimator.Interval{Device: "0", Start: time.Unix(1, 0), End: time.Unix(2, 0), Joules: 3.5, Method: "counter"}))
	f.Add([]byte(`{"recorded":true,"span":{"ID":"x"}}`))
	f.Add([]byte{1, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, v []byte) {
		if js, err := decodeSpan(v); err == nil && len(v) > 0 && v[0] == journalV1 {
			if again, err := decodeSpan(encodeSpan(js.Span, js.Recorded)); err != nil || !reflect.DeepEqual(again, js) {
				t.Errorf("span %x: %+v, re-encoded %+v, %v", v, js, again, err)
			}
		}
		if iv, err := decodeInterval(v); err == nil && len(v) > 0 && v[0] == journalV1 {
			// NaN joules are not equal to themselves: compare their bits.
			again, err := decodeInterval(encodeInterval(iv))
			if err != nil || math.Float64bits(again.Joules) != math.Float64bits(iv.Joules) {
				t.Errorf("interval %x: %+v, re-encoded %+v, %v", v, iv, again, err)
			}
			again.Joules = iv.Joules
			if again.Joules == again.Joules && again != iv {
				t.Errorf("interval %x: %+v, re-encoded %+v", v, iv, again)
			}
		}
	})
}

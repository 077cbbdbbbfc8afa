package engine

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
)

// The journal's values, in binary: a version byte, then the fields in a
// fixed order. Strings are a uvarint length and the bytes; times a uvarint,
// 0 for the zero time, else the zigzag of Unix ns plus one (decoded in the
// local zone, as time.Now gives them); counts varints; joules the float64's
// bits, little-endian. A span has a flags byte after its version, so that
// the recorded mark is set on a copy of the value journaled at its end.
// Values that start with '{' are the JSON of a daemon before this codec.
//
//	interval: 0x01 device start end joules(8) method
//	span:     0x01 flags id key trace_id upstream model tenant namespace pod
//	          status usage_source start first_token scheduled end
//	          prompt completion cached reasoning n_devices devices...

const journalV1 = 0x01

const (
	spanRecorded = 1 << iota
	spanServed
)

// spanFlags is the offset of a span value's flags byte.
const spanFlags = 1

var errJournalValue = errors.New("engine: unreadable journal value")

func appendStr(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	n := t.UnixNano()
	return binary.AppendUvarint(b, uint64(n<<1^n>>63)+1)
}

func encodeInterval(iv estimator.Interval) []byte {
	b := make([]byte, 0, 40+len(iv.Device)+len(iv.Method))
	b = append(b, journalV1)
	b = appendStr(b, iv.Device)
	b = appendTime(b, iv.Start)
	b = appendTime(b, iv.End)
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(iv.Joules))
	return appendStr(b, string(iv.Method))
}

func encodeSpan(s estimator.Span, recorded bool) []byte {
	var flags byte
	if recorded {
		flags |= spanRecorded
	}
	if s.Served {
		flags |= spanServed
	}
	n := 96
	for _, d := range s.Devices {
		n += len(d) + 1
	}
	b := make([]byte, 0, n+len(s.ID)+len(s.Key)+len(s.TraceID)+len(s.Upstream)+len(s.Model)+len(s.Tenant)+
		len(s.Namespace)+len(s.Pod)+len(s.Status)+len(s.UsageSource))
	b = append(b, journalV1, flags)
	for _, f := range [...]string{s.ID, s.Key, s.TraceID, s.Upstream, s.Model, s.Tenant, s.Namespace, s.Pod, s.Status, s.UsageSource} {
		b = appendStr(b, f)
	}
	for _, t := range [...]time.Time{s.Start, s.FirstToken, s.Scheduled, s.End} {
		b = appendTime(b, t)
	}
	for _, c := range [...]int64{s.PromptTokens, s.CompletionTokens, s.CachedTokens, s.ReasoningTokens} {
		b = binary.AppendVarint(b, c)
	}
	b = binary.AppendUvarint(b, uint64(len(s.Devices)))
	for _, d := range s.Devices {
		b = appendStr(b, d)
	}
	return b
}

// markRecorded is a span value journaled unrecorded, marked recorded,
// without decoding it: a copy with the flag set (JSON: "recorded":true in
// front).
func markRecorded(v []byte) []byte {
	if len(v) > 0 && v[0] == '{' {
		return append([]byte(`{"recorded":true,`), v[1:]...)
	}
	out := append([]byte(nil), v...)
	if len(out) > spanFlags {
		out[spanFlags] |= spanRecorded
	}
	return out
}

// reader decodes a value; its first failure sticks.
type reader struct {
	b   []byte
	err bool
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err, r.b = true, nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) str() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err, r.b = true, nil
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) time() time.Time {
	u := r.uvarint()
	if u == 0 {
		return time.Time{}
	}
	return time.Unix(0, unzigzag(u-1))
}

// varint reads what binary.AppendVarint writes: a zigzag uvarint.
func (r *reader) varint() int64 { return unzigzag(r.uvarint()) }

func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

func (r *reader) fixed64() uint64 {
	if len(r.b) < 8 {
		r.err, r.b = true, nil
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

// done: the whole value was read, and nothing failed.
func (r *reader) done() error {
	if r.err || len(r.b) != 0 {
		return errJournalValue
	}
	return nil
}

func decodeInterval(v []byte) (iv estimator.Interval, err error) {
	if len(v) > 0 && v[0] == '{' {
		err = json.Unmarshal(v, &iv)
		return iv, err
	}
	if len(v) == 0 || v[0] != journalV1 {
		return iv, errJournalValue
	}
	r := reader{b: v[1:]}
	iv.Device = r.str()
	iv.Start = r.time()
	iv.End = r.time()
	iv.Joules = math.Float64frombits(r.fixed64())
	iv.Method = estimator.Method(r.str())
	if err := r.done(); err != nil {
		return estimator.Interval{}, err
	}
	return iv, nil
}

func decodeSpan(v []byte) (js journalSpan, err error) {
	if len(v) > 0 && v[0] == '{' {
		err = json.Unmarshal(v, &js)
		return js, err
	}
	if len(v) < 2 || v[0] != journalV1 || v[spanFlags]&^(spanRecorded|spanServed) != 0 {
		return js, errJournalValue
	}
	flags := v[spanFlags]
	r := reader{b: v[2:]}
	s := &js.Span
	for _, f := range [...]*string{&s.ID, &s.Key, &s.TraceID, &s.Upstream, &s.Model, &s.Tenant, &s.Namespace, &s.Pod, &s.Status, &s.UsageSource} {
		*f = r.str()
	}
	for _, t := range [...]*time.Time{&s.Start, &s.FirstToken, &s.Scheduled, &s.End} {
		*t = r.time()
	}
	for _, c := range [...]*int64{&s.PromptTokens, &s.CompletionTokens, &s.CachedTokens, &s.ReasoningTokens} {
		*c = r.varint()
	}
	// Each device takes at least a byte: a count beyond what is left is garbage.
	if n := r.uvarint(); n > uint64(len(r.b)) {
		r.err = true
	} else if n > 0 {
		s.Devices = make([]string, n)
		for i := range s.Devices {
			s.Devices[i] = r.str()
		}
	}
	if err := r.done(); err != nil {
		return journalSpan{}, err
	}
	js.Recorded, s.Served = flags&spanRecorded != 0, flags&spanServed != 0
	return js, nil
}

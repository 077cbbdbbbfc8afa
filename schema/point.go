package schema

// Why line protocol is encoded here rather than with
// github.com/influxdata/line-protocol/v2/lineprotocol's Encoder (v2.2.1,
// evaluated 2026-11-27 by putting AppendLine's checks in front of it):
//
//   - It cannot write a tab inside a string field so that InfluxDB 1.8 reads
//     it back: it escapes tab, CR and LF as \t, \r, \n, which InfluxDB 1.8.3
//     does not unescape, so "a\tb" is stored as the four characters a\tb
//     (measured with influxtest). TestWriterEscapingThroughInfluxDB, TestLine
//     and the FuzzEncode and FuzzClientValues seeds fail with it; StringValue
//     keeps tabs, so a client's request id or model with a tab would be
//     stored altered.
//   - It checks less than InfluxDB 1.8 needs (the key "time", a measurement
//     starting with '#', a backslash before an escaped character, the series
//     key and string lengths, duplicate fields, the reserved times), so those
//     checks stay ours whichever encodes.
//   - It is slower: AppendLine on it took 4.9 µs and 9 allocations per
//     request point against 2.2 µs and none, and the engine's CPU per record
//     (BenchmarkEngineRecord) rose from 12.6 to 15.4 µs (1.22 ×); see
//     docs/benchmarks.md, "Sink", and BenchmarkLineprotocolEncoder.
//
// Libraries still judge what this encoder writes: the fuzz tests parse it
// back with github.com/influxdata/line-protocol, the writer tests store it
// in a real InfluxDB 1.8.3, and the report command reads it with v2's
// Decoder.

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Point is one InfluxDB point.
type Point struct {
	Measurement string
	// Tags are encoded sorted by key whatever their order here; a tag with
	// an empty value is left out (line protocol has no empty tag value).
	Tags []Tag
	// Fields are encoded in this order. At least one is needed.
	Fields []Field
	// Time is encoded in nanoseconds; it must be set.
	Time time.Time
}

// Tag is one tag of a point.
type Tag struct {
	Key, Value string
}

// Field is one field of a point. Value must be a float64 (finite), int64,
// string or bool; anything else is an encoding error.
type Field struct {
	Key   string
	Value any
}

var (
	// ErrNonFinite marks a NaN or infinite float field: InfluxDB cannot
	// store it, and influxdb-client-go wedges on it (#384).
	ErrNonFinite = errors.New("non-finite float")
	// ErrInvalid marks any other point line protocol cannot carry.
	ErrInvalid = errors.New("invalid point")
)

// Limits of InfluxDB 1.8.
const (
	maxKeyBytes    = 65535 // measurement plus tags (models.MaxKeyLength)
	maxStringBytes = 65535 // string field value
	// Line protocol times are int64 nanoseconds; InfluxDB reserves the
	// two lowest values and the highest.
	minNanos = math.MinInt64 + 2
	maxNanos = math.MaxInt64 - 1
)

// Line encodes p as one line of line protocol, without a newline.
func Line(p Point) (string, error) {
	b, err := AppendLine(nil, p)
	return string(b), err
}

// AppendLine appends p as one line of line protocol, without a newline, to
// dst. On error dst is returned unchanged and the error, which wraps
// ErrNonFinite or ErrInvalid, names the measurement and the offending tag or
// field.
//
// Escaping is what InfluxDB 1.8 and github.com/influxdata/line-protocol
// read alike: a backslash before ',' and ' ' in the measurement, before ',',
// '=' and ' ' in tag keys, tag values and field keys, and before '"' and '\'
// in string fields. What either cannot carry is refused: control characters
// (tab allowed in string fields), invalid UTF-8, a name ending in a
// backslash or with a backslash before a character it escapes, a
// measurement starting with '#', the key "time".
func AppendLine(dst []byte, p Point) ([]byte, error) {
	b, err := appendLine(dst, &p)
	if err != nil {
		return dst, err
	}
	return b, nil
}

func appendLine(b []byte, p *Point) ([]byte, error) {
	start := len(b)
	if err := checkName(p.Measurement, measurementSpecial); err != nil {
		return nil, p.invalid("measurement", p.Measurement, err.Error())
	}
	if p.Measurement[0] == '#' {
		return nil, p.invalid("measurement", p.Measurement, "starts with '#', which makes the line a comment")
	}
	b = appendEscaped(b, p.Measurement, escMeasurement)

	tags := p.Tags
	if !slices.IsSortedFunc(tags, compareTags) {
		tags = slices.SortedFunc(slices.Values(tags), compareTags)
	}
	for i, t := range tags {
		if err := checkKey(t.Key); err != nil {
			return nil, p.invalid("tag key", t.Key, err.Error())
		}
		if i > 0 && tags[i-1].Key == t.Key {
			return nil, p.invalid("tag", t.Key, "appears twice")
		}
		if t.Value == "" {
			continue
		}
		if err := checkName(t.Value, keyNoBackslash); err != nil {
			return nil, p.invalid("tag "+strconv.Quote(t.Key)+" value", t.Value, err.Error())
		}
		b = append(b, ',')
		b = appendEscaped(b, t.Key, escKey)
		b = append(b, '=')
		b = appendEscaped(b, t.Value, escKey)
	}
	if n := len(b) - start; n > maxKeyBytes {
		return nil, p.invalid("series key", p.Measurement, fmt.Sprintf("is %d bytes, more than InfluxDB's %d", n, maxKeyBytes))
	}

	if len(p.Fields) == 0 {
		return nil, p.invalid("fields", "", "none: a point needs at least one")
	}
	var seen [4]uint64 // a bit per field key seen (keyBit)
	for i, f := range p.Fields {
		if err := checkKey(f.Key); err != nil {
			return nil, p.invalid("field key", f.Key, err.Error())
		}
		// A key seen before has its bit set; a set bit may also be another
		// key's, so only then are the earlier keys compared.
		if h := keyBit(f.Key); seen[h>>6]&(1<<(h&63)) == 0 {
			seen[h>>6] |= 1 << (h & 63)
		} else {
			for _, g := range p.Fields[:i] {
				if g.Key == f.Key {
					return nil, p.invalid("field", f.Key, "appears twice")
				}
			}
		}
		if i == 0 {
			b = append(b, ' ')
		} else {
			b = append(b, ',')
		}
		b = appendEscaped(b, f.Key, escKey)
		b = append(b, '=')
		var err error
		if b, err = appendValue(b, f.Value); err != nil {
			if errors.Is(err, ErrNonFinite) {
				return nil, fmt.Errorf("sink: point %q: field %q: %w: %v", p.Measurement, f.Key, ErrNonFinite, f.Value)
			}
			return nil, p.invalid("field", f.Key, err.Error())
		}
	}

	if p.Time.IsZero() {
		return nil, p.invalid("time", "", "not set")
	}
	if p.Time.Before(time.Unix(0, minNanos)) || p.Time.After(time.Unix(0, maxNanos)) {
		return nil, p.invalid("time", p.Time.String(), "outside InfluxDB's range (years 1677 to 2262)")
	}
	b = append(b, ' ')
	b = strconv.AppendInt(b, p.Time.UnixNano(), 10)
	return b, nil
}

func (p *Point) invalid(what, name, reason string) error {
	return fmt.Errorf("sink: point %q: %s %q: %w: %s", p.Measurement, what, name, ErrInvalid, reason)
}

func compareTags(a, b Tag) int { return strings.Compare(a.Key, b.Key) }

func appendValue(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, ErrNonFinite
		}
		// Shortest form that reads back to the same bits; InfluxDB and the
		// line-protocol parser both accept exponents.
		return strconv.AppendFloat(b, v, 'g', -1, 64), nil
	case int64:
		return append(strconv.AppendInt(b, v, 10), 'i'), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case string:
		if err := checkString(v); err != nil {
			return nil, err
		}
		b = append(b, '"')
		b = appendEscaped(b, v, escString)
		return append(b, '"'), nil
	default:
		return nil, fmt.Errorf("value %v has type %T, want float64, int64, string or bool", v, v)
	}
}

// appendEscaped appends s with a backslash before every byte of class esc.
func appendEscaped(b []byte, s string, esc byteClass) []byte {
	for i := 0; i < len(s); i++ {
		if byteClasses[s[i]]&esc == 0 {
			continue
		}
		b = append(b, s[:i]...)
		for ; i < len(s); i++ {
			if byteClasses[s[i]]&esc != 0 {
				b = append(b, '\\')
			}
			b = append(b, s[i])
		}
		return b
	}
	return append(b, s...)
}

// Characters escaped with a backslash in each part of a line.
const (
	measurementSpecial = ", "
	keySpecial         = ",= " // tag keys, tag values, field keys
	stringSpecial      = `"\`
	// InfluxDB also unescapes \" in keys, the line-protocol parser only
	// sometimes: '"' goes unescaped, and no backslash may precede it.
	keyNoBackslash = keySpecial + `"`
)

// byteClass is what the encoder makes of a byte, as bits: escaped in which
// part of a line, and whether a name or a string holding it needs the full
// check (the common names and strings are printable ASCII and pass at a
// glance).
type byteClass uint8

const (
	escMeasurement byteClass = 1 << iota // in measurementSpecial
	escKey                               // in keySpecial
	escString                            // in stringSpecial
	checkInName                          // not printable ASCII, or a backslash
	checkInString                        // not printable ASCII or a tab
)

// byteClasses is the class of every byte; never modified.
var byteClasses = func() (t [256]byteClass) {
	for set, class := range map[string]byteClass{
		measurementSpecial: escMeasurement, keySpecial: escKey, stringSpecial: escString,
	} {
		for i := range len(set) {
			t[set[i]] |= class
		}
	}
	for c := range t {
		if c < 0x20 || c >= 0x7f {
			t[c] |= checkInName
			if c != '\t' {
				t[c] |= checkInString
			}
		}
	}
	t['\\'] |= checkInName
	return t
}()

// only reports whether no byte of s has a class in not.
func only(s string, not byteClass) bool {
	for i := 0; i < len(s); i++ {
		if byteClasses[s[i]]&not != 0 {
			return false
		}
	}
	return true
}

// keyBit is a field key's bit of 256 for appendLine's check for a key
// that appears twice; s is not empty.
func keyBit(s string) uint8 {
	return uint8(len(s)*31 + int(s[0])*7 + int(s[len(s)-1])*13 + int(s[len(s)/2]))
}

// checkName checks a measurement, tag key, tag value or field key. special
// are the characters a backslash may not precede.
func checkName(s, special string) error {
	if s != "" && only(s, checkInName) {
		return nil // printable ASCII without a backslash
	}
	switch {
	case s == "":
		return errors.New("is empty")
	case !utf8.ValidString(s):
		return errors.New("is not valid UTF-8")
	case strings.IndexFunc(s, isControl) >= 0:
		return errors.New("contains a control character")
	case s[len(s)-1] == '\\':
		// It would escape the separator after it.
		return errors.New("ends in a backslash")
	}
	// A backslash before an escaped character reads as an escaped
	// backslash to InfluxDB but as an escape of its own to the
	// line-protocol parser (in measurements and field keys).
	for i := 0; i < len(s)-1; i++ {
		if s[i] == '\\' && strings.IndexByte(special, s[i+1]) >= 0 {
			return fmt.Errorf("has a backslash before %q", s[i+1])
		}
	}
	return nil
}

// checkKey checks a tag or field key.
func checkKey(s string) error {
	if s == "time" {
		return errors.New(`is "time", which InfluxDB refuses`)
	}
	return checkName(s, keyNoBackslash)
}

func checkString(s string) error {
	if len(s) <= maxStringBytes && only(s, checkInString) {
		return nil // printable ASCII and tabs
	}
	switch {
	case len(s) > maxStringBytes:
		return fmt.Errorf("string of %d bytes is longer than InfluxDB's %d", len(s), maxStringBytes)
	case !utf8.ValidString(s):
		return fmt.Errorf("string %q is not valid UTF-8", s)
	case strings.IndexFunc(s, func(r rune) bool { return r != '\t' && isControl(r) }) >= 0:
		// A raw newline inside quotes is legal but lets InfluxDB 1.8's
		// line splitter guess wrong after some escapes; refuse them all.
		return fmt.Errorf("string %q contains a control character", s)
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

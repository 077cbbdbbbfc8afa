package schema

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/deadlabour/deadlabour/internal/schematest"
	protocol "github.com/influxdata/line-protocol"
)

// FuzzEncode checks that whatever the encoder accepts parses back, through
// the line-protocol parser, to exactly the point it was given, and that it
// refuses exactly the inputs line protocol cannot carry. Seeds for the hard
// cases (backslashes next to escapes, quotes, exponents, the time range)
// are in testdata/fuzz/FuzzEncode.
func FuzzEncode(f *testing.F) {
	f.Add("deadlabour_request", "model", "meta-llama/Llama-3.1-70B", "request_id", "req-1", 1.5, int64(42), true, int64(1_772_366_402_500_000_001))
	f.Add(`a b,c`, `k ,="`, `v\,x`, `f\=`, `s"\`, math.Copysign(0, -1), int64(-1), false, int64(0))
	f.Add("m", "k", `x\`, "f", "", math.Inf(1), int64(0), true, int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, measurement, tagKey, tagValue, fieldKey, str string, fl float64, in int64, b bool, ns int64) {
		p := Point{
			Measurement: measurement,
			Tags:        []Tag{{tagKey, tagValue}, {"host", "h"}},
			Fields:      []Field{{fieldKey, str}, {"float", fl}, {"int", in}, {"bool", b}},
			Time:        time.Unix(0, ns),
		}
		line, err := Line(p)
		if reason := unencodable(p); reason != "" {
			if err == nil {
				t.Fatalf("Line(%+v) = %q, want an error: %s", p, line, reason)
			}
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrNonFinite) {
				t.Fatalf("Line(%+v) error = %v, want ErrInvalid or ErrNonFinite", p, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("Line(%+v) error = %v, want none", p, err)
		}
		metrics, err := protocol.NewParser(protocol.NewMetricHandler()).Parse([]byte(line))
		if err != nil || len(metrics) != 1 {
			t.Fatalf("parse %q: %d metrics, error %v; want 1 metric", line, len(metrics), err)
		}
		checkParsed(t, line, p, metrics[0])
	})
}

// unencodable says why line protocol cannot carry p, or "" if it can. It
// restates the encoder's documented rules independently of its code.
func unencodable(p Point) string {
	badName := func(s, special string) bool {
		for _, c := range special {
			if strings.Contains(s, `\`+string(c)) {
				return true
			}
		}
		return s == "" || !utf8.ValidString(s) || strings.HasSuffix(s, `\`) ||
			strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
	}
	badKey := func(s string) bool { return s == "time" || badName(s, `,= "`) }
	if badName(p.Measurement, ", ") || strings.HasPrefix(p.Measurement, "#") {
		return "measurement"
	}
	seen := map[string]bool{}
	for _, tg := range p.Tags {
		if badKey(tg.Key) || seen[tg.Key] || tg.Value != "" && badName(tg.Value, `,= "`) {
			return "tag " + tg.Key
		}
		seen[tg.Key] = true
	}
	seen = map[string]bool{}
	for _, f := range p.Fields {
		if badKey(f.Key) || seen[f.Key] {
			return "field key " + f.Key
		}
		seen[f.Key] = true
		switch v := f.Value.(type) {
		case float64:
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return "non-finite " + f.Key
			}
		case string:
			if len(v) > 65535 || !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return r != '\t' && (r < 0x20 || r == 0x7f) }) {
				return "string " + f.Key
			}
		}
	}
	if ns := p.Time.UnixNano(); ns < math.MinInt64+2 || ns == math.MaxInt64 {
		return "time"
	}
	return ""
}

func checkParsed(t *testing.T, line string, p Point, m protocol.Metric) {
	t.Helper()
	if m.Name() != p.Measurement {
		t.Errorf("%q: measurement %q, want %q", line, m.Name(), p.Measurement)
	}
	wantTags := map[string]string{}
	for _, tg := range p.Tags {
		if tg.Value != "" {
			wantTags[tg.Key] = tg.Value
		}
	}
	gotTags := map[string]string{}
	for _, tg := range m.TagList() {
		gotTags[tg.Key] = tg.Value
	}
	if len(gotTags) != len(wantTags) {
		t.Errorf("%q: tags %q, want %q", line, gotTags, wantTags)
	}
	for k, v := range wantTags {
		if gotTags[k] != v {
			t.Errorf("%q: tag %q = %q, want %q", line, k, gotTags[k], v)
		}
	}
	fields := m.FieldList()
	if len(fields) != len(p.Fields) {
		t.Fatalf("%q: %d fields, want %d", line, len(fields), len(p.Fields))
	}
	for i, want := range p.Fields {
		got := fields[i]
		if got.Key != want.Key {
			t.Errorf("%q: field %d key %q, want %q", line, i, got.Key, want.Key)
		}
		same := got.Value == want.Value
		if w, ok := want.Value.(float64); ok {
			g, ok := got.Value.(float64)
			same = ok && math.Float64bits(g) == math.Float64bits(w)
		}
		if !same {
			t.Errorf("%q: field %q = %#v, want %#v", line, want.Key, got.Value, want.Value)
		}
	}
	if !m.Time().Equal(p.Time) {
		t.Errorf("%q: time %d, want %d", line, m.Time().UnixNano(), p.Time.UnixNano())
	}
}

// FuzzClientValues: whatever a client sends as a model, tenant or request
// id, the record's point encodes and parses back with the values made
// writable (TagValue, StringValue), and they are left alone when they were
// writable already. A refused record would be a request nobody pays for.
func FuzzClientValues(f *testing.F) {
	for _, s := range []string{"llama\n", `llama\`, `a\ b`, `a\,b`, `x\=y`, `q\"r`, "m\x00\x7f", "\xff\xfe", `\\`, `é\`, "tab\there", "plain"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, model, tenant string) {
		r := schematest.Record()
		r.Model, r.Tenant, r.ID = model, tenant, model
		p, err := RequestPoint(r)
		if err != nil {
			t.Fatalf("RequestPoint(model %q, tenant %q) = %v", model, tenant, err)
		}
		line, err := Line(p)
		if err != nil {
			t.Fatalf("model %q, tenant %q: %v", model, tenant, err)
		}
		metrics, err := protocol.NewParser(protocol.NewMetricHandler()).Parse([]byte(line))
		if err != nil || len(metrics) != 1 {
			t.Fatalf("parse %q: %d metrics, error %v", line, len(metrics), err)
		}
		checkParsed(t, line, p, metrics[0])
		for _, s := range []string{model, tenant} {
			if s != "" && badTag(s) != (TagValue(s) != s) {
				t.Errorf("TagValue(%q) = %q: changed %v, but line protocol refuses it: %v", s, TagValue(s), TagValue(s) != s, badTag(s))
			}
		}
		if v := StringValue(model, MaxModelRaw); !utf8.ValidString(v) || len(v) > MaxModelRaw {
			t.Errorf("StringValue(%q) = %q: invalid or too long", model, v)
		}
	})
}

// badTag says whether line protocol refuses s as a tag value.
func badTag(s string) bool {
	return unencodable(Point{Measurement: "m", Tags: []Tag{{"k", s}}, Fields: []Field{{"f", 1.0}}, Time: time.Unix(1, 0)}) != ""
}

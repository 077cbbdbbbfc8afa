package schema

import (
	"errors"
	"github.com/deadlabour/deadlabour/internal/schematest"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

var t0 = time.Unix(1_700_000_000, 123_456_789)

func TestLine(t *testing.T) {
	tests := []struct {
		name string
		p    Point
		want string
	}{
		{
			name: "types",
			p: Point{Measurement: "m", Fields: []Field{
				{"f", 1.5}, {"whole", 3.0}, {"big", 1e21}, {"tiny", 5e-324}, {"neg0", math.Copysign(0, -1)},
				{"i", int64(-42)}, {"s", "hello"}, {"t", true}, {"u", false},
			}, Time: t0},
			want: `m f=1.5,whole=3,big=1e+21,tiny=5e-324,neg0=-0,i=-42i,s="hello",t=true,u=false 1700000000123456789`,
		},
		{
			name: "tags sorted and empty values left out",
			p: Point{Measurement: "m", Tags: []Tag{{"z", "1"}, {"a", "2"}, {"tenant", ""}, {"m", "3"}},
				Fields: []Field{{"f", int64(1)}}, Time: t0},
			want: `m,a=2,m=3,z=1 f=1i 1700000000123456789`,
		},
		{
			name: "measurement escapes comma and space only",
			p:    Point{Measurement: `a b,c=d"e\f`, Fields: []Field{{"f", int64(1)}}, Time: t0},
			want: `a\ b\,c=d"e\f f=1i 1700000000123456789`,
		},
		{
			name: "tag and field keys and values escape comma equals space, not quote",
			p: Point{Measurement: "m", Tags: []Tag{{`k ,="`, `v ,="`}},
				Fields: []Field{{`f ,="`, `s ,="\`}}, Time: t0},
			want: `m,k\ \,\="=v\ \,\=" f\ \,\="="s ,=\"\\" 1700000000123456789`,
		},
		{
			name: "backslash inside a name stays",
			p:    Point{Measurement: `m\=`, Tags: []Tag{{`k\b`, `a\b`}}, Fields: []Field{{`f\b`, int64(1)}}, Time: t0},
			want: `m\=,k\b=a\b f\b=1i 1700000000123456789`,
		},
		{
			name: "unicode and tab in strings",
			p:    Point{Measurement: "énergie", Tags: []Tag{{"modèle", "λ"}}, Fields: []Field{{"s", "a\tb"}}, Time: t0},
			want: "énergie,modèle=λ s=\"a\tb\" 1700000000123456789",
		},
		{
			name: "time range ends",
			p:    Point{Measurement: "m", Fields: []Field{{"f", int64(1)}}, Time: time.Unix(0, math.MaxInt64-1)},
			want: `m f=1i 9223372036854775806`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Line(tt.p)
			if err != nil {
				t.Fatalf("Line() error = %v", err)
			}
			if got != tt.want {
				t.Errorf("Line() =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestLineDoesNotReorderCallersTags(t *testing.T) {
	tags := []Tag{{"b", "1"}, {"a", "2"}}
	if _, err := Line(Point{Measurement: "m", Tags: tags, Fields: []Field{{"f", int64(1)}}, Time: t0}); err != nil {
		t.Fatal(err)
	}
	if tags[0].Key != "b" {
		t.Errorf("tags after Line = %v, want the caller's order kept", tags)
	}
}

func TestLineErrors(t *testing.T) {
	ok := []Field{{"f", 1.0}}
	tests := []struct {
		name    string
		p       Point
		wantErr error
		// wantIn must appear in the message: the offending name or value.
		wantIn string
	}{
		{"NaN", Point{Measurement: "m", Fields: []Field{{"a", 1.0}, {"gpu_energy_j", math.NaN()}}, Time: t0}, ErrNonFinite, `"gpu_energy_j"`},
		{"+Inf", Point{Measurement: "m", Fields: []Field{{"co2e_g", math.Inf(1)}}, Time: t0}, ErrNonFinite, `"co2e_g": non-finite float: +Inf`},
		{"-Inf", Point{Measurement: "m", Fields: []Field{{"water_l", math.Inf(-1)}}, Time: t0}, ErrNonFinite, `"water_l"`},
		{"no fields", Point{Measurement: "m", Time: t0}, ErrInvalid, "fields"},
		{"unsupported type", Point{Measurement: "m", Fields: []Field{{"n", 3}}, Time: t0}, ErrInvalid, `field "n": invalid point: value 3 has type int`},
		{"float32", Point{Measurement: "m", Fields: []Field{{"n", float32(1)}}, Time: t0}, ErrInvalid, `"n"`},
		{"nil value", Point{Measurement: "m", Fields: []Field{{"n", nil}}, Time: t0}, ErrInvalid, `"n"`},
		{"empty measurement", Point{Fields: ok, Time: t0}, ErrInvalid, "measurement"},
		{"comment measurement", Point{Measurement: "#m", Fields: ok, Time: t0}, ErrInvalid, `"#m"`},
		{"newline in measurement", Point{Measurement: "a\nb", Fields: ok, Time: t0}, ErrInvalid, "control character"},
		{"measurement ends in backslash", Point{Measurement: `m\`, Fields: ok, Time: t0}, ErrInvalid, "ends in a backslash"},
		{"empty tag key", Point{Measurement: "m", Tags: []Tag{{"", "v"}}, Fields: ok, Time: t0}, ErrInvalid, "tag key"},
		{"duplicate tag", Point{Measurement: "m", Tags: []Tag{{"k", "1"}, {"k", "2"}}, Fields: ok, Time: t0}, ErrInvalid, `tag "k"`},
		{"tag value ends in backslash", Point{Measurement: "m", Tags: []Tag{{"model", `x\`}}, Fields: ok, Time: t0}, ErrInvalid, `tag "model" value "x\\"`},
		{"measurement backslash before comma", Point{Measurement: `a\,b`, Fields: ok, Time: t0}, ErrInvalid, "backslash before ','"},
		{"tag value backslash before space", Point{Measurement: "m", Tags: []Tag{{"model", `a\ b`}}, Fields: ok, Time: t0}, ErrInvalid, `"model"`},
		{"tag key backslash before quote", Point{Measurement: "m", Tags: []Tag{{`k\"`, "v"}}, Fields: ok, Time: t0}, ErrInvalid, `backslash before '"'`},
		{"field key backslash before equals", Point{Measurement: "m", Fields: []Field{{`f\=`, 1.0}}, Time: t0}, ErrInvalid, "backslash before '='"},
		{"tab in tag value", Point{Measurement: "m", Tags: []Tag{{"model", "a\tb"}}, Fields: ok, Time: t0}, ErrInvalid, `"model"`},
		{"invalid UTF-8 tag value", Point{Measurement: "m", Tags: []Tag{{"tenant", "\xff"}}, Fields: ok, Time: t0}, ErrInvalid, "UTF-8"},
		{"time tag", Point{Measurement: "m", Tags: []Tag{{"time", "1"}}, Fields: ok, Time: t0}, ErrInvalid, `"time"`},
		{"time field", Point{Measurement: "m", Fields: []Field{{"time", 1.0}}, Time: t0}, ErrInvalid, `"time"`},
		{"empty field key", Point{Measurement: "m", Fields: []Field{{"", 1.0}}, Time: t0}, ErrInvalid, "field key"},
		{"duplicate field", Point{Measurement: "m", Fields: []Field{{"f", 1.0}, {"f", 2.0}}, Time: t0}, ErrInvalid, `field "f": invalid point: appears twice`},
		{"newline in string field", Point{Measurement: "m", Fields: []Field{{"request_id", "a\nb"}}, Time: t0}, ErrInvalid, `"request_id"`},
		{"invalid UTF-8 string field", Point{Measurement: "m", Fields: []Field{{"request_id", "a\xc3"}}, Time: t0}, ErrInvalid, `"request_id"`},
		{"string too long", Point{Measurement: "m", Fields: []Field{{"s", strings.Repeat("x", 65536)}}, Time: t0}, ErrInvalid, "65536 bytes"},
		{"series key too long", Point{Measurement: "m", Tags: []Tag{{"k", strings.Repeat("x", 65535)}}, Fields: ok, Time: t0}, ErrInvalid, "series key"},
		{"zero time", Point{Measurement: "m", Fields: ok}, ErrInvalid, "time"},
		{"time before 1677", Point{Measurement: "m", Fields: ok, Time: time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)}, ErrInvalid, "1600-01-01"},
		{"time after 2262", Point{Measurement: "m", Fields: ok, Time: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)}, ErrInvalid, "2300-01-01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte("keep")
			got, err := AppendLine(dst, tt.p)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("AppendLine() error = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("error %q does not name %s", err, tt.wantIn)
			}
			if string(got) != "keep" {
				t.Errorf("AppendLine() on error returned %q, want dst unchanged", got)
			}
		})
	}
}

func BenchmarkAppendLine(b *testing.B) {
	p, err := RequestPoint(schematest.Record())
	if err != nil {
		b.Fatal(err)
	}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = AppendLine(buf[:0], p); err != nil {
			b.Fatal(err)
		}
	}
}

// TestByteClasses checks the encoder's fast paths against its rules, for
// every byte alone and between others: the table of byte classes must say
// exactly what the special-character sets and the checks say.
func TestByteClasses(t *testing.T) {
	escape := func(s, special string) string {
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			if strings.IndexByte(special, s[i]) >= 0 {
				b.WriteByte('\\')
			}
			b.WriteByte(s[i])
		}
		return b.String()
	}
	control := func(r rune) bool { return r < 0x20 || r == 0x7f }
	for c := range 256 {
		for _, s := range []string{string([]byte{byte(c)}), "a" + string([]byte{byte(c)}) + "b", string([]byte{byte(c), 'x'})} {
			for _, e := range []struct {
				special string
				class   byteClass
			}{{measurementSpecial, escMeasurement}, {keySpecial, escKey}, {stringSpecial, escString}} {
				if got, want := string(appendEscaped(nil, s, e.class)), escape(s, e.special); got != want {
					t.Errorf("appendEscaped(%q, %q) = %q, want %q", s, e.special, got, want)
				}
			}
			badName := !utf8.ValidString(s) || strings.ContainsFunc(s, control) || strings.HasSuffix(s, `\`) ||
				strings.Contains(s, `\,`) || strings.Contains(s, `\=`) || strings.Contains(s, `\ `) || strings.Contains(s, `\"`)
			if err := checkName(s, keyNoBackslash); (err != nil) != badName {
				t.Errorf("checkName(%q) = %v, want an error: %v", s, err, badName)
			}
			badString := !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r != '\t' && control(r) })
			if err := checkString(s); (err != nil) != badString {
				t.Errorf("checkString(%q) = %v, want an error: %v", s, err, badString)
			}
		}
	}
}

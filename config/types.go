package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration that YAML may also write in days, weeks and
// (365-day) years: "100ms", "10s", "1h", "30d", "5y", "5.5y".
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Year is the length of a year in Duration arithmetic: 365 days.
const Year = 365 * 24 * time.Hour

// ParseDuration parses a Go duration, or a number followed by d, w or y.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	units := map[byte]time.Duration{'d': 24 * time.Hour, 'w': 7 * 24 * time.Hour, 'y': Year}
	if u, ok := units[s[len(s)-1]]; ok {
		f, err := strconv.ParseFloat(s[:len(s)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q: want e.g. 100ms, 10s, 1h, 30d, 5y", s)
		}
		return time.Duration(f * float64(u)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: want e.g. 100ms, 10s, 1h, 30d, 5y", s)
	}
	return d, nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	return setScalar(n, d, "duration", ParseDuration)
}

// MarshalYAML prints the duration the way it parses.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// String prints the duration as a config would write it, in the largest
// unit that holds it whole ("5y", "2w", "30d", "1h30m", "100ms"), so that
// ParseDuration reads it back to the same value.
func (d Duration) String() string {
	for _, u := range []struct {
		suffix string
		size   time.Duration
	}{{"y", Year}, {"w", 7 * 24 * time.Hour}, {"d", 24 * time.Hour}} {
		if d != 0 && time.Duration(d)%u.size == 0 {
			return strconv.FormatInt(int64(time.Duration(d)/u.size), 10) + u.suffix
		}
	}
	s := time.Duration(d).String()
	// Go writes every unit below the first: "1h0m0s" is "1h", "10m0s" "10m".
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// DefaultPromptTokenWeight is the prompt token weight of tokens weighting
// when none can be fitted yet (prompt_token_weight: auto, the fit warming
// up): an assumption, docs/methodology.md.
const DefaultPromptTokenWeight = 0.1

// TokenWeight is attribution.prompt_token_weight: a number, the weight of a
// prompt token against a completion token, or "auto": derived for every
// interval from the GPU's fitted cost model, DefaultPromptTokenWeight
// while it has none.
type TokenWeight struct {
	Auto  bool
	Value float64 // the weight; with Auto, the fallback
}

// AutoTokenWeight is prompt_token_weight: auto.
func AutoTokenWeight() TokenWeight { return TokenWeight{Auto: true, Value: DefaultPromptTokenWeight} }

// promptTokenWeightKey is the key of the one TokenWeight.
const promptTokenWeightKey = "attribution.prompt_token_weight"

// UnmarshalYAML implements yaml.Unmarshaler. Its errors name the key, also
// where the line does not (a list or mapping begun on the next line). An
// empty value never reaches it (YAML null): Validate rejects that.
func (w *TokenWeight) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return lineError(n, "want a number or auto, got a %s", kindName(n.Kind))
	}
	if n.Value == "auto" {
		*w = AutoTokenWeight()
		return nil
	}
	var f float64
	if err := n.Decode(&f); err != nil {
		return lineError(n, "want a number or auto, got %q", n.Value)
	}
	*w = TokenWeight{Value: f}
	return nil
}

// lineError is a value's decoding error as yaml.v3 gathers them: a
// *yaml.TypeError lets the decoder go on with the rest of the file (any
// other error stops it), and "line N: " is how Parse finds the line.
func lineError(n *yaml.Node, format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: "+format, append([]any{n.Line}, args...)...)}}
}

// MarshalYAML prints the weight the way it parses.
func (w TokenWeight) MarshalYAML() (any, error) {
	if w.Auto {
		return "auto", nil
	}
	return w.Value, nil
}

// String is "auto" or the number.
func (w TokenWeight) String() string {
	if w.Auto {
		return "auto"
	}
	return strconv.FormatFloat(w.Value, 'g', -1, 64)
}

// ByteSize is a size in bytes that YAML may write as 1048576, "512KiB", "1GiB", "1GB".
type ByteSize int64

// ParseByteSize parses a byte count with an optional binary or decimal unit.
func ParseByteSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   float64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
	}
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			f, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), 64)
			if err != nil || f < 0 {
				return 0, fmt.Errorf("invalid size %q: want e.g. 1048576, 512MiB, 1GiB", s)
			}
			return int64(f * u.mult), nil
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q: want e.g. 1048576, 512MiB, 1GiB", s)
	}
	return n, nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	return setScalar(n, b, "size", ParseByteSize)
}

// setScalar parses the scalar node n with parse into *dst, or leaves *dst
// as it is and returns an error naming n's line; a node of another kind is
// refused as not a what.
func setScalar[T, V ~int64](n *yaml.Node, dst *T, what string, parse func(string) (V, error)) error {
	if n.Kind != yaml.ScalarNode {
		return lineError(n, "want a %s, got a %s", what, kindName(n.Kind))
	}
	v, err := parse(n.Value)
	if err != nil {
		return lineError(n, "%v", err)
	}
	*dst = T(v)
	return nil
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "scalar"
	case yaml.AliasNode:
		return "alias"
	}
	return "document"
}

// DateLayout is how dates are written: 2024-03-01.
const DateLayout = "2006-01-02"

// Date is a calendar day, written 2024-03-01 (quoted or not), held as
// midnight UTC; the zero Date is unknown.
type Date struct{ time.Time }

// ParseDate parses a YYYY-MM-DD date.
func ParseDate(s string) (Date, error) {
	t, err := time.Parse(DateLayout, strings.TrimSpace(s))
	if err != nil {
		return Date{}, fmt.Errorf("invalid date %q: want YYYY-MM-DD, e.g. 2024-03-01", s)
	}
	return Date{t}, nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Date) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return lineError(n, "want a date such as 2024-03-01, got a %s", kindName(n.Kind))
	}
	v, err := ParseDate(n.Value)
	if err != nil {
		return lineError(n, "%v", err)
	}
	*d = v
	return nil
}

// MarshalYAML prints the date the way it parses; null when unknown.
func (d Date) MarshalYAML() (any, error) {
	if d.IsZero() {
		return nil, nil
	}
	return d.Format(DateLayout), nil
}

// String is the date as written, or "" when unknown.
func (d Date) String() string {
	if d.IsZero() {
		return ""
	}
	return d.Format(DateLayout)
}

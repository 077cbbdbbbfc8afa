package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// A key written with no value (`pue:`, `pue: ~`) decodes as YAML null,
// which leaves the key's default in place without a word. Where that
// default is a value of its own (pue 1.2, an interval of 100ms) the null is
// almost always a value forgotten or lost in an edit, and an error. Where
// the default is "nothing" — an empty string, a zero, an unset pointer, an
// empty section or list — null says just that, and is accepted
// (`carbon_file:`, `tenant_header:`, `preserve_host: null`).

// regionalKeys take their default from facility.region where it is set:
// null then says "the region's figure".
var regionalKeys = map[string]bool{"facility.carbon_g_per_kwh": true, "facility.water_offsite_l_per_kwh": true}

// emptyValues reports every key path in empty whose default is a value.
func (v *validator) emptyValues() {
	paths := make([]string, 0, len(v.c.empty))
	for p := range v.c.empty {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	// A new list entry's defaults: its zero value, as applyListDefaults
	// fills it for this file.
	d := Default()
	d.Proxy, d.Upstreams = v.c.Proxy, []Upstream{{}}
	d.applyListDefaults()
	def := reflect.ValueOf(d)
	for _, p := range paths {
		if strings.HasSuffix(p, "]") {
			// yaml.v3 drops a null list entry without a word.
			v.add(p, "has no value: write the entry, or remove the empty one")
			continue
		}
		if regionalKeys[p] && v.c.Facility.Region != "" {
			continue // null: the region's figure
		}
		if p == promptTokenWeightKey {
			v.add(p, "has no value: want a number or auto (leave the key out for the default, auto)")
			continue
		}
		if f, ok := fieldAt(def, p); ok && holdsValue(f.Type()) && !f.IsZero() {
			v.add(p, "has no value: write one, or leave the key out for its default (%s)", defaultText(f))
		}
	}
}

// defaultText prints a default the way the file would write it.
func defaultText(f reflect.Value) string {
	switch x := f.Interface().(type) {
	case ByteSize:
		for _, u := range []struct {
			unit string
			size ByteSize
		}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
			if x >= u.size && x%u.size == 0 {
				return fmt.Sprintf("%d%s", x/u.size, u.unit)
			}
		}
		return fmt.Sprint(int64(x))
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(f.Interface())
}

// fieldAt is the field at a key path ("a.b[2].c") of v, by the fields'
// yaml names; a list entry past the end of v's list is its last entry, or
// the zero entry where the list is empty (what a new entry starts from:
// emptyValues gives the lists of Default, which has none, the one entry
// of a new entry's defaults).
func fieldAt(v reflect.Value, path string) (reflect.Value, bool) {
	for part := range strings.SplitSeq(path, ".") {
		name, rest, _ := strings.Cut(part, "[")
		f, ok := fieldByYAML(v, name)
		if !ok {
			return reflect.Value{}, false
		}
		v = f
		for ; rest != ""; _, rest, _ = strings.Cut(rest, "[") {
			if v.Kind() != reflect.Slice {
				return reflect.Value{}, false
			}
			i, err := strconv.Atoi(strings.TrimSuffix(rest[:strings.IndexByte(rest+"]", ']')], "]"))
			switch {
			case err == nil && i < v.Len():
				v = v.Index(i)
			case v.Len() > 0:
				v = v.Index(v.Len() - 1)
			default:
				v = reflect.Zero(v.Type().Elem())
			}
		}
	}
	return v, true
}

func fieldByYAML(v reflect.Value, name string) (reflect.Value, bool) {
	if v.Kind() != reflect.Struct {
		return reflect.Value{}, false
	}
	t := v.Type()
	for i := range t.NumField() {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag == name {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// holdsValue: a scalar (numbers, strings, booleans, durations, sizes, and
// structs that decode themselves from a scalar), not a pointer, section,
// list or map.
func holdsValue(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Map, reflect.Interface:
		return false
	case reflect.Struct:
		return reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]())
	}
	return true
}

// valueProblems decodes, one by one, every value whose type parses itself
// (durations, sizes, the prompt token weight), so that a file with several
// bad ones gets a problem for each, under its key: the decoder stops at the
// first, and a list or mapping begun on the next line has no key on its
// line.
func valueProblems(n *yaml.Node, path string, out []Problem) []Problem {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			out = valueProblems(c, path, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := n.Content[i].Value
			if path != "" {
				p = path + "." + p
			}
			v := n.Content[i+1]
			f, ok := fieldAt(reflect.ValueOf(Config{}), p)
			var t reflect.Type
			if ok {
				t = f.Type()
				if t.Kind() == reflect.Pointer {
					t = t.Elem()
				}
			}
			if !ok || !reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]()) {
				out = valueProblems(v, p, out)
				continue
			}
			if v.ShortTag() == "!!null" {
				continue // emptyValues' business
			}
			if err := v.Decode(reflect.New(t).Interface()); err != nil {
				msg := err.Error()
				if te := (*yaml.TypeError)(nil); errors.As(err, &te) && len(te.Errors) == 1 {
					msg = te.Errors[0]
				}
				if m := lineRe.FindStringSubmatch(msg); m != nil {
					msg = m[2]
				}
				out = append(out, Problem{Line: v.Line, Key: p, Msg: msg})
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			out = valueProblems(c, fmt.Sprintf("%s[%d]", path, i), out)
		}
	}
	return out
}

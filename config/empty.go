package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// A key written with no value (`pue:`, `pue: ~`) decodes as YAML null,
// which leaves the key's default in place without a word: almost always a
// value forgotten or lost in an edit. It is an error for every key that
// holds a value. Null stays allowed where it means something: a pointer
// field (unset: the catalogue's or the automatic choice, as example.yaml
// writes `preserve_host: null`) and a section or list (empty: defaults).

// emptyValues reports every key path in empty that names a value.
func (v *validator) emptyValues() {
	paths := make([]string, 0, len(v.c.empty))
	for p := range v.c.empty {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		if p == promptTokenWeightKey {
			v.add(p, "has no value: want a number or auto (leave the key out for the default, auto)")
			continue
		}
		if t, ok := fieldType(reflect.TypeFor[Config](), p); ok && holdsValue(t) {
			v.add(p, "has no value: write one, or leave the key out for its default")
		}
	}
}

// fieldType is the Go type of the field at a key path ("a.b[2].c"), by
// the fields' yaml names.
func fieldType(t reflect.Type, path string) (reflect.Type, bool) {
	for part := range strings.SplitSeq(path, ".") {
		name, rest, _ := strings.Cut(part, "[")
		f, ok := fieldByYAML(t, name)
		if !ok {
			return nil, false
		}
		t = f
		for ; rest != ""; _, rest, _ = strings.Cut(rest, "[") {
			if t.Kind() != reflect.Slice {
				return nil, false
			}
			t = t.Elem()
		}
	}
	return t, true
}

func fieldByYAML(t reflect.Type, name string) (reflect.Type, bool) {
	if t.Kind() != reflect.Struct {
		return nil, false
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); tag == name {
			return f.Type, true
		}
	}
	return nil, false
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
			t, ok := fieldType(reflect.TypeFor[Config](), p)
			if ok && t.Kind() == reflect.Pointer {
				t = t.Elem()
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
				if ke := (*keyError)(nil); errors.As(err, &ke) {
					msg = ke.p.Msg
				} else if m := lineRe.FindStringSubmatch(msg); m != nil {
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

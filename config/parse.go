package config

// Reading a file: Load, Parse, and the problems they report, each with
// its file, line and key.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Problem is one thing wrong with a configuration file.
type Problem struct {
	File string
	Line int    // 0 when unknown
	Key  string // dotted key path, e.g. upstreams[0].target
	Msg  string
}

func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		b.WriteByte(':')
	}
	if p.Line > 0 {
		fmt.Fprintf(&b, "%d:", p.Line)
	}
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error is every problem found in one file.
type Error struct{ Problems []Problem }

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Load reads, decodes and validates a configuration file. gpuCount is the
// number of GPUs present, or -1 when unknown (GPU indices are then not checked).
func Load(path string, gpuCount int) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data, gpuCount)
}

var lineRe = regexp.MustCompile(`^line (\d+): (.*)$`)

// Parse decodes and validates configuration bytes; name is used in messages.
func Parse(name string, data []byte, gpuCount int) (*Config, error) {
	cfg := Default()
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, &Error{Problems: []Problem{yamlProblem(name, err.Error(), nil)}}
	}
	cfg.lines, cfg.empty, cfg.file = map[string]int{}, map[string]bool{}, name
	values := map[string]*yaml.Node{}
	indexLines(&root, "", cfg.lines, values)
	for p, v := range values {
		if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
			cfg.empty[p] = true
		}
	}
	if doc := docRoot(&root); doc != nil && doc.Kind != yaml.MappingNode {
		return nil, &Error{Problems: []Problem{{File: name, Line: doc.Line,
			Msg: "the file must be a mapping of keys (node, gpu, upstreams, ...)"}}}
	}
	// Values that parse themselves (durations, sizes, the prompt token
	// weight) are checked first, each under its key; the decoder then
	// passes over them (they keep their defaults) and reports the rest.
	problems := valueProblems(&root, "", nil)
	// The decoder reports those values again, with the same message on
	// the same line; another key's problem on that line (flow style) is
	// kept.
	type lineMsg struct {
		line int
		msg  string
	}
	reported, badKey := map[lineMsg]bool{}, map[string]bool{}
	for _, p := range problems {
		reported[lineMsg{p.Line, p.Msg}], badKey[p.Key] = true, true
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, &Error{Problems: []Problem{yamlProblem(name, err.Error(), cfg.lines)}}
		}
		// The decoder goes on past a value of the wrong type or an
		// unknown key, leaving the default: every one is reported.
		for _, e := range te.Errors {
			p := yamlProblem(name, e, cfg.lines)
			if k := keyWithValue(values, p); k != "" {
				p.Key = k
			}
			if !reported[lineMsg{p.Line, p.Msg}] {
				problems = append(problems, p)
				if p.Key != "" {
					badKey[p.Key] = true
				}
			}
		}
	}
	// A value reported above is at its default, which the file did not
	// write: it is not judged again, nor is another key judged against it
	// (a check that compares two keys names the other one).
	cfg.applyListDefaults()
	cfg.applyRegion()
validated:
	for _, p := range cfg.Validate(gpuCount) {
		for k := range badKey {
			if k == p.Key || mentions(p, k) {
				continue validated
			}
		}
		problems = append(problems, p)
	}
	for i := range problems {
		problems[i].File = name
	}
	if len(problems) > 0 {
		sortProblems(problems)
		return nil, &Error{Problems: problems}
	}
	return &cfg, nil
}

// mentions reports whether p's message names key: in full
// ("gpu.interval"), or by its last name where key is in p's section or
// list entry ("tdp_watts" for hardware[0].idle_watts).
func mentions(p Problem, key string) bool {
	names := []string{key}
	if i := strings.LastIndexByte(key, '.'); i > 0 && strings.HasPrefix(p.Key, key[:i+1]) {
		names = append(names, key[i+1:])
	}
	for _, name := range names {
		for rest := p.Msg; ; {
			i := strings.Index(rest, name)
			if i < 0 {
				break
			}
			before, after := rest[:i], rest[i+len(name):]
			if !endsInName(before) && (after == "" || !isNameByte(after[0])) {
				return true
			}
			rest = after
		}
	}
	return false
}

func endsInName(s string) bool { return s != "" && (isNameByte(s[len(s)-1]) || s[len(s)-1] == '.') }

func isNameByte(b byte) bool {
	return b == '_' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
}

// yamlProblem turns a yaml.v3 message into a Problem with its line and,
// where the line index knows it, the key path.
func yamlProblem(name, msg string, lines map[string]int) Problem {
	msg = strings.TrimPrefix(msg, "yaml: ")
	p := Problem{File: name, Msg: msg}
	m := lineRe.FindStringSubmatch(msg)
	if m == nil {
		return p
	}
	p.Line, _ = strconv.Atoi(m[1])
	p.Msg = m[2]
	if u := unknownRe.FindStringSubmatch(p.Msg); u != nil {
		p.Msg = fmt.Sprintf("unknown key %q (see config/example.yaml for the keys there are)", u[1])
		p.Key = pathAt(lines, p.Line, u[1])
		return p
	}
	p.Key = pathAt(lines, p.Line, "")
	return p
}

// pathAt finds the key path written on a line (ending in key, if given).
func pathAt(lines map[string]int, line int, key string) string {
	best := ""
	for path, l := range lines {
		if l != line || strings.HasSuffix(path, "]") {
			continue
		}
		if key != "" && !strings.HasSuffix(path, key) {
			continue
		}
		if len(path) > len(best) {
			best = path
		}
	}
	return best
}

// keyWithValue is the key of a wrong type's value on the problem's line
// ("cannot unmarshal !!int `5` into bool": the key whose value is 5), for
// a line with several keys; "" if none or the message names no value.
func keyWithValue(values map[string]*yaml.Node, p Problem) string {
	m := wrongTypeRe.FindStringSubmatch(p.Msg)
	if m == nil {
		return ""
	}
	// yaml.v3 shortens a long value to its first 7 bytes and "...".
	val, short := strings.CutSuffix(m[1], "...")
	best := ""
	for path, v := range values {
		if v.Line != p.Line || v.Kind != yaml.ScalarNode || strings.HasSuffix(path, "]") {
			continue
		}
		if v.Value == val || short && strings.HasPrefix(v.Value, val) {
			if best == "" || path < best {
				best = path
			}
		}
	}
	return best
}

func docRoot(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		return n.Content[0]
	}
	if n.Kind == 0 {
		return nil
	}
	return n
}

// applyListDefaults fills the defaults of list entries, which YAML decoding
// creates from scratch.
func (c *Config) applyListDefaults() {
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		if u.MaxBodyBytes == 0 {
			// 16MiB, or the whole body budget where that is smaller: a
			// body is never held beyond it.
			u.MaxBodyBytes = min(ByteSize(16<<20), max(c.Proxy.MaxBufferedBytes, 1<<20))
		}
		if u.IncludeUsage == nil {
			t := true
			u.IncludeUsage = &t
		}
		if u.ModelsRefresh == 0 {
			u.ModelsRefresh = Duration(DefaultModelsRefresh)
		}
	}
}

// indexLines records the line of every key path in the document, and the
// node of its value (of a list entry: the entry).
func indexLines(n *yaml.Node, path string, lines map[string]int, values map[string]*yaml.Node) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			indexLines(c, path, lines, values)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			p := k
			if path != "" {
				p = path + "." + k
			}
			lines[p], values[p] = n.Content[i].Line, n.Content[i+1]
			indexLines(n.Content[i+1], p, lines, values)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			lines[p], values[p] = c.Line, c
			indexLines(c, p, lines, values)
		}
	}
}

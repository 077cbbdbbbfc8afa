package dialect

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// The proxy's two edits, per request and per chunk of a stream that asked
// for usage because of the proxy: the benchmark's streamed request
// (dialect_bench_test.go) and one of the fake's chunks with "usage":null. Each is
// measured as the proxy does it (jsonedit) and as it would be done with
// tidwall/sjson, the library internal/jsonedit's comment says was not taken.
var benchNullChunk = "data: " + benchChunk[:len(benchChunk)-1] + `,"usage":null}` + "\n\n"

func BenchmarkAddIncludeUsage(b *testing.B) {
	body := []byte(benchStream)
	for _, edit := range []struct {
		name string
		f    func([]byte) ([]byte, bool)
	}{{"jsonedit", addIncludeUsage}, {"sjson", sjsonAddIncludeUsage}} {
		b.Run(edit.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := edit.f(body); !ok {
					b.Fatal("not edited")
				}
			}
		})
	}
}

func BenchmarkRemoveNullUsage(b *testing.B) {
	raw := []byte(benchNullChunk)
	want := "data: " + benchChunk + "\n\n"
	for _, edit := range []struct {
		name string
		f    func(dst, raw []byte) ([]byte, bool)
	}{
		{"jsonedit", func(dst, raw []byte) ([]byte, bool) {
			from, to, ok := NullUsageEvent(raw)
			return append(append(dst, raw[:from]...), raw[to:]...), ok
		}},
		{"sjson", sjsonRemoveNullUsage},
	} {
		b.Run(edit.name, func(b *testing.B) {
			var out []byte
			b.ReportAllocs()
			for b.Loop() {
				var ok bool
				if out, ok = edit.f(out[:0], raw); !ok || string(out) != want {
					b.Fatalf("edited %v to %q, want %q", ok, out, want)
				}
			}
		})
	}
}

// sjsonAddIncludeUsage is addIncludeUsage on gjson and sjson.
func sjsonAddIncludeUsage(body []byte) ([]byte, bool) {
	if !json.Valid(body) {
		return body, false
	}
	// sjson rewrites the space around the document: edit the object alone.
	obj := bytes.TrimLeft(body, " \t\r\n")
	lead := len(body) - len(obj)
	obj = bytes.TrimRight(obj, " \t\r\n")
	doc := gjson.ParseBytes(obj)
	if !doc.IsObject() {
		return body, false
	}
	switch so := doc.Get("stream_options"); {
	case !so.Exists() || so.Type == gjson.Null:
	case so.IsObject():
		if iu := so.Get("include_usage"); iu.Exists() && iu.Type != gjson.False && iu.Type != gjson.Null {
			return body, false
		}
	default:
		return body, false
	}
	edited, err := sjson.SetRawBytes(obj, "stream_options.include_usage", []byte("true"))
	if err != nil {
		return body, false
	}
	out := make([]byte, 0, len(body)-len(obj)+len(edited))
	out = append(append(out, body[:lead]...), edited...)
	return append(out, body[lead+len(obj):]...), true
}

// sjsonRemoveNullUsage appends raw, one "data:" event, to dst without its
// "usage":null, with gjson and sjson.
func sjsonRemoveNullUsage(dst, raw []byte) ([]byte, bool) {
	start := len("data: ")
	end := bytes.IndexByte(raw, '\n')
	doc := raw[start:end]
	if !gjson.ValidBytes(doc) {
		return dst, false
	}
	if r := gjson.GetBytes(doc, "usage"); !r.Exists() || r.Type != gjson.Null {
		return dst, false
	}
	edited, err := sjson.DeleteBytes(doc, "usage")
	if err != nil {
		return dst, false
	}
	return append(append(append(dst, raw[:start]...), edited...), raw[end:]...), true
}

package requests

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/collector/requests/dialect"
)

// Seed corpora are in testdata/fuzz/Fuzz*; `go test` runs them,
// `go test -fuzz FuzzSSE` explores from them.

// watchParts watches body written in two parts cut at cut. The clock is
// constant: firstEvent is 0 when a first token was seen, -1 when not.
func watchParts(d *dialect.Dialect, f framing, body []byte, limit, cut int) reading {
	bw := newBodyWatcher(d, f, limit, func() time.Time { return t0 })
	bw.write(body[:cut])
	bw.write(body[cut:])
	bw.close()
	r := reading{usage: bw.usage, hasUsage: bw.hasUsage, firstEvent: -1, done: bw.done, tokens: bw.tokens}
	if !bw.hasUsage {
		r.usage = dialect.Usage{}
	}
	if !bw.firstToken.IsZero() {
		r.firstEvent = 0
	}
	return r
}

// replay is what a watcher should read from the documents docs: the dialect's
// reading of each, usage merged, up to the end marker.
func replay(d *dialect.Dialect, f framing, docs []string) reading {
	want := reading{firstEvent: -1, usage: dialect.NoUsage}
	for _, e := range docs {
		if f == framingSSE && e == "[DONE]" {
			want.done = true
			break
		}
		dd := d.Document([]byte(e))
		if dd.HasUsage {
			want.usage.Merge(dd.Usage)
			want.hasUsage = true
		}
		if dd.Tokens > 0 {
			want.tokens += dd.Tokens
			want.firstEvent = 0
		}
		if dd.Final {
			want.done = true
			break
		}
	}
	if !want.hasUsage {
		want.usage = dialect.Usage{}
	}
	return want
}

// FuzzSSE: the SSE parser never panics, finds the same events however the
// stream is cut into writes, reads CRLF and a lone CR as LF, and the watcher
// keeps the merged usage before [DONE], the first token and the count.
func FuzzSSE(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n"), uint16(17), uint16(4096))
	f.Fuzz(func(t *testing.T, stream []byte, cut, limit uint16) {
		lim := 1 + int(limit)
		at := int(cut) % (len(stream) + 1)
		whole := documents(framingSSE, stream, lim, 0)
		if split := documents(framingSSE, stream, lim, at); !slices.Equal(whole, split) {
			t.Fatalf("events differ with the stream cut at %d:\nwhole %q\nsplit %q", at, whole, split)
		}
		for _, e := range whole {
			if len(e) > lim || e == "" {
				t.Fatalf("event of %d bytes handed on with a limit of %d", len(e), lim)
			}
		}
		if !bytes.Contains(stream, []byte("\r")) {
			big := len(stream) + 2 // nothing dropped
			lf := documents(framingSSE, stream, big, 0)
			crlf := bytes.ReplaceAll(stream, []byte("\n"), []byte("\r\n"))
			if got := documents(framingSSE, crlf, 2*big, at); !slices.Equal(lf, got) {
				t.Fatalf("CRLF read differently:\n  LF %q\nCRLF %q", lf, got)
			}
			cr := bytes.ReplaceAll(stream, []byte("\n"), []byte("\r"))
			if got := documents(framingSSE, cr, big, at); !slices.Equal(lf, got) {
				t.Fatalf("lone CR read differently:\nLF %q\nCR %q", lf, got)
			}
		}
		for _, path := range []string{"/v1/chat/completions", "/generate_stream", "/completion"} {
			d := dialect.Endpoints()[path].Dialect
			got := watchParts(d, framingSSE, stream, lim, 0)
			if split := watchParts(d, framingSSE, stream, lim, at); split != got {
				t.Fatalf("%s: watcher differs with the stream cut at %d: %+v, whole %+v", path, at, split, got)
			}
			if want := replay(d, framingSSE, whole); got != want {
				t.Fatalf("%s: watcher read %+v, want %+v from the events %q", path, got, want, whole)
			}
		}
	})
}

// FuzzNDJSON: the NDJSON reader finds the same lines however the stream is
// cut, and the Ollama watcher reads them as the dialect does one by one.
func FuzzNDJSON(f *testing.F) {
	f.Add([]byte("{\"message\":{\"content\":\"a\"},\"done\":false}\n{\"done\":true,\"prompt_eval_count\":3,\"eval_count\":1}\n"), uint16(9), uint16(4096))
	f.Fuzz(func(t *testing.T, stream []byte, cut, limit uint16) {
		lim := 1 + int(limit)
		at := int(cut) % (len(stream) + 1)
		whole := documents(framingNDJSON, stream, lim, 0)
		if split := documents(framingNDJSON, stream, lim, at); !slices.Equal(whole, split) {
			t.Fatalf("lines differ with the stream cut at %d:\nwhole %q\nsplit %q", at, whole, split)
		}
		for _, e := range whole {
			if len(e) > lim || strings.TrimSpace(e) != e || e == "" {
				t.Fatalf("line %q handed on with a limit of %d", e, lim)
			}
		}
		d := dialect.Endpoints()["/api/chat"].Dialect
		got := watchParts(d, framingNDJSON, stream, lim, at)
		if want := replay(d, framingNDJSON, whole); got != want {
			t.Fatalf("watcher read %+v, want %+v from the lines %q", got, want, whole)
		}
	})
}

// FuzzUsage: the usage extractor never panics, gives the same answer however
// the body is cut into writes, and reads a body that fits like a whole
// document. Past the limit it only ever reports counts >= 0 or -1.
func FuzzUsage(f *testing.F) {
	f.Add([]byte(`{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}`), uint16(9), uint16(30))
	f.Fuzz(func(t *testing.T, body []byte, cut, limit uint16) {
		lim := 1 + int(limit)
		at := int(cut) % (len(body) + 1)
		for _, path := range []string{"/v1/chat/completions", "/api/chat", "/generate", "/completion"} {
			d := dialect.Endpoints()[path].Dialect
			got := watchParts(d, framingJSON, body, lim, 0)
			if split := watchParts(d, framingJSON, body, lim, at); split != got {
				t.Fatalf("%s: differs with the body cut at %d: %+v, whole %+v", path, at, split, got)
			}
			if got.firstEvent != -1 || got.tokens != 0 {
				t.Fatalf("%s: a whole body set FirstToken or counted tokens: %+v", path, got)
			}
			if len(body) <= lim {
				dd := d.Document(body)
				want := reading{firstEvent: -1}
				if dd.HasUsage {
					want.usage, want.hasUsage = dialect.NoUsage, true
					want.usage.Merge(dd.Usage)
				}
				if got != want {
					t.Fatalf("%s: read %+v, want %+v as a whole document", path, got, want)
				}
			}
			for _, n := range []int64{got.usage.Prompt, got.usage.Completion, got.usage.Cached, got.usage.Reasoning} {
				if got.hasUsage && n < -1 {
					t.Fatalf("%s: count %d in %+v", path, n, got.usage)
				}
			}
			if got.hasUsage && got.usage.Prompt < 0 && got.usage.Completion < 0 && !got.usage.Invalid {
				t.Fatalf("%s: usage reported with neither prompt nor completion: %+v", path, got.usage)
			}
		}
	})
}

// FuzzFilter: a stream passes the include_usage filter unchanged, however it
// is cut into reads, unless it holds a usage-only chunk or "usage":null;
// and the filter never makes a stream longer.
func FuzzFilter(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n"), uint8(5))
	f.Fuzz(func(t *testing.T, stream []byte, step uint8) {
		n := 1 + int(step)
		out := filterAll(stream, n, 1<<16)
		if len(out) > len(stream) {
			t.Fatalf("filter made the stream longer: %q -> %q", stream, out)
		}
		if whole := filterAll(stream, len(stream)+1, 1<<16); !bytes.Equal(whole, out) {
			t.Fatalf("reads of %d bytes: %q, one read: %q", n, out, whole)
		}
		if !bytes.Contains(stream, []byte(`"usage"`)) && !bytes.Equal(out, stream) {
			t.Fatalf("a stream without usage changed: %q -> %q", stream, out)
		}
	})
}

// filterAll passes stream through a usage filter that reads n bytes at a time.
func filterAll(stream []byte, n, limit int) []byte {
	b := &watchedBody{
		ReadCloser: io.NopCloser(&stepReader{b: stream, n: n}),
		watch:      newBodyWatcher(openAI(), framingSSE, limit, func() time.Time { return t0 }),
		filter:     newUsageFilter(limit),
	}
	out, _ := io.ReadAll(b)
	return out
}

type stepReader struct {
	b []byte
	n int
}

func (r *stepReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), r.n)], r.b)
	r.b = r.b[k:]
	return k, nil
}

// FuzzFilterWatch: watching through the filter (which shows the watcher some
// events after it released them) reads a stream as watching it directly does.
func FuzzFilterWatch(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n"), uint8(5), uint16(200))
	f.Fuzz(func(t *testing.T, stream []byte, step uint8, limit uint16) {
		lim := 1 + int(limit)
		b := &watchedBody{
			ReadCloser: io.NopCloser(&stepReader{b: stream, n: 1 + int(step)}),
			watch:      newBodyWatcher(openAI(), framingSSE, lim, func() time.Time { return t0 }),
			filter:     newUsageFilter(lim),
		}
		io.ReadAll(b)
		b.settle()
		b.watch.close()
		got := reading{usage: b.watch.usage, hasUsage: b.watch.hasUsage, firstEvent: -1, done: b.watch.done, tokens: b.watch.tokens}
		if !got.hasUsage {
			got.usage = dialect.Usage{}
		}
		if !b.watch.firstToken.IsZero() {
			got.firstEvent = 0
		}
		if want := watchParts(openAI(), framingSSE, stream, lim, 0); got != want {
			t.Fatalf("through the filter %+v, directly %+v", got, want)
		}
	})
}

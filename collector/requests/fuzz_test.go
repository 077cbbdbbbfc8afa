package requests

import (
	"bytes"
	"slices"
	"testing"
	"time"
)

// Seed corpora are in testdata/fuzz/FuzzSSE and testdata/fuzz/FuzzUsage;
// `go test` runs them, `go test -fuzz FuzzSSE` explores from them.

// events is what an sseParser hands on for stream, written in two parts cut at cut.
func sseEvents(stream []byte, limit, cut int) []string {
	var out []string
	p := sseParser{limit: limit, onEvent: func(d []byte) { out = append(out, string(d)) }}
	p.write(stream[:cut])
	p.write(stream[cut:])
	p.close()
	return out
}

// meterParts meters body written in two parts cut at cut. The clock is
// constant: firstEvent is 0 when a first token was seen, -1 when not.
func meterParts(f framing, body []byte, limit, cut int) reading {
	m := newMeter(openAI(), f, limit, func() time.Time { return t0 })
	m.write(body[:cut])
	m.write(body[cut:])
	m.close()
	r := reading{usage: m.usage, hasUsage: m.hasUsage, firstEvent: -1, done: m.done}
	if !m.firstToken.IsZero() {
		r.firstEvent = 0
	}
	return r
}

// FuzzSSE: the SSE parser never panics, finds the same events however the
// stream is cut into writes, reads CRLF as LF, and the meter keeps the last
// usage before [DONE] and the first token's event.
func FuzzSSE(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n"), uint16(17), uint16(4096))
	f.Fuzz(func(t *testing.T, stream []byte, cut, limit uint16) {
		lim := 1 + int(limit)
		at := int(cut) % (len(stream) + 1)
		whole := sseEvents(stream, lim, 0)
		if split := sseEvents(stream, lim, at); !slices.Equal(whole, split) {
			t.Fatalf("events differ with the stream cut at %d:\nwhole %q\nsplit %q", at, whole, split)
		}
		for _, e := range whole {
			if len(e) > lim || e == "" {
				t.Fatalf("event of %d bytes handed on with a limit of %d", len(e), lim)
			}
		}
		if !bytes.Contains(stream, []byte("\r")) {
			big := len(stream) + 2 // nothing dropped
			crlf := bytes.ReplaceAll(stream, []byte("\n"), []byte("\r\n"))
			if lf, cr := sseEvents(stream, big, 0), sseEvents(crlf, 2*big, 0); !slices.Equal(lf, cr) {
				t.Fatalf("CRLF read differently:\n  LF %q\nCRLF %q", lf, cr)
			}
		}

		got := meterParts(framingSSE, stream, lim, 0)
		if split := meterParts(framingSSE, stream, lim, at); split != got {
			t.Fatalf("meter differs with the stream cut at %d: %+v, whole %+v", at, split, got)
		}
		want := reading{firstEvent: -1}
		for _, e := range whole {
			if e == "[DONE]" {
				want.done = true
				break
			}
			u, hasUsage, hasToken := openAIDocument([]byte(e))
			if hasUsage {
				want.usage, want.hasUsage = u, true
			}
			if hasToken {
				want.firstEvent = 0
			}
		}
		if got != want {
			t.Fatalf("meter read %+v, want %+v from the events %q", got, want, whole)
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
		got := meterParts(framingJSON, body, lim, 0)
		if split := meterParts(framingJSON, body, lim, at); split != got {
			t.Fatalf("differs with the body cut at %d: %+v, whole %+v", at, split, got)
		}
		if got.firstEvent != -1 {
			t.Fatalf("a whole body set FirstToken")
		}
		if len(body) <= lim {
			u, hasUsage, _ := openAIDocument(body)
			if want := (reading{usage: u, hasUsage: hasUsage, firstEvent: -1}); got != want {
				t.Fatalf("read %+v, want %+v as a whole document", got, want)
			}
		}
		for _, n := range []int64{got.usage.prompt, got.usage.completion, got.usage.cached, got.usage.reasoning} {
			if got.hasUsage && n < -1 {
				t.Fatalf("count %d in %+v", n, got.usage)
			}
		}
		if got.hasUsage && got.usage.prompt < 0 && got.usage.completion < 0 {
			t.Fatalf("usage reported with neither prompt nor completion: %+v", got.usage)
		}
	})
}

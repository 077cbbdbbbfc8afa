package requests

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/collector/requests/dialect"
	"github.com/deadlabour/deadlabour/internal/clip"
)

func openAI() *dialect.Dialect { return dialect.Endpoints()["/v1/chat/completions"].Dialect }

// collector is a dialect that keeps every document it is shown.
func collector(docs *[]string) *dialect.Dialect {
	return &dialect.Dialect{Document: func(b []byte) dialect.Doc {
		*docs = append(*docs, string(b))
		return dialect.Doc{}
	}}
}

// documents is what a watcher of framing f hands on as documents for stream,
// written in two parts cut at cut.
func documents(f framing, stream []byte, limit, cut int) []string {
	var out []string
	bw := newBodyWatcher(collector(&out), f, limit, func() time.Time { return t0 })
	bw.write(stream[:cut])
	bw.write(stream[cut:])
	bw.close()
	if bw.done && f == framingSSE && (len(out) == 0 || out[len(out)-1] != "[DONE]") {
		out = append(out, "[DONE]") // the watcher keeps [DONE] from the dialect
	}
	return out
}

var t0 = time.Unix(1700000000, 0)

// reading is what a watcher found, in a comparable form.
type reading struct {
	usage      dialect.Usage
	hasUsage   bool
	firstEvent int // index of the event that set FirstToken, -1 for none
	done       bool
	tokens     int64 // counted from the stream
}

// readAll watches parts one after the other; the clock reads the index of
// the part being written, so firstEvent says which part held the first token.
func readAll(f framing, limit int, parts []string) reading {
	var part int
	bw := newBodyWatcher(openAI(), f, limit, func() time.Time { return t0.Add(time.Duration(part) * time.Second) })
	for i, p := range parts {
		part = i
		bw.write([]byte(p))
	}
	bw.close()
	bw.close() // idempotent
	r := reading{usage: bw.usage, hasUsage: bw.hasUsage, firstEvent: -1, done: bw.done, tokens: bw.tokens}
	if !bw.hasUsage {
		r.usage = dialect.Usage{}
	}
	if !bw.firstToken.IsZero() {
		r.firstEvent = int(bw.firstToken.Sub(t0) / time.Second)
	}
	return r
}

// chunkings cuts s into whole, byte-by-byte and 7-byte parts.
func chunkings(s string) map[string][]string {
	out := map[string][]string{"whole": {s}}
	var bytewise, sevens []string
	for i := range len(s) {
		bytewise = append(bytewise, s[i:i+1])
	}
	for i := 0; i < len(s); i += 7 {
		sevens = append(sevens, s[i:min(i+7, len(s))])
	}
	out["bytewise"], out["sevens"] = bytewise, sevens
	return out
}

func u(prompt, completion, cached, reasoning int64) dialect.Usage {
	return dialect.Usage{Prompt: prompt, Completion: completion, Cached: cached, Reasoning: reasoning}
}

// rd is a reading with usage u; r0 one without usage.
func rd(u dialect.Usage, first int, done bool, tokens int64) reading {
	return reading{usage: u, hasUsage: true, firstEvent: first, done: done, tokens: tokens}
}

func r0(first int, done bool, tokens int64) reading {
	return reading{firstEvent: first, done: done, tokens: tokens}
}

func TestWatchJSON(t *testing.T) {
	full := `{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30,` +
		`"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":6}}}`
	padding := strings.Repeat("z", 300)
	none := r0(-1, false, 0)
	tests := []struct {
		name  string
		body  string
		limit int
		want  reading
	}{
		{"full usage", full, 1 << 20, rd(u(10, 20, 4, 6), -1, false, 0)},
		{"no details", `{"usage":{"prompt_tokens":3,"completion_tokens":4}}`, 1 << 20, rd(u(3, 4, -1, -1), -1, false, 0)},
		{"details null", `{"usage":{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":null}}`, 1 << 20, rd(u(3, 4, -1, -1), -1, false, 0)},
		{"embeddings shape", `{"data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}`, 1 << 20, rd(u(8, -1, -1, -1), -1, false, 0)},
		{"negative count", `{"usage":{"prompt_tokens":-3,"completion_tokens":4}}`, 1 << 20, rd(u(-1, 4, -1, -1), -1, false, 0)},
		{"a count of the wrong type", `{"usage":{"prompt_tokens":"3","completion_tokens":4}}`, 1 << 20, rd(u(-1, 4, -1, -1), -1, false, 0)},
		{"a fraction and a null", `{"usage":{"prompt_tokens":12.5,"completion_tokens":null}}`, 1 << 20, none},
		{"usage null", `{"usage":null}`, 1 << 20, none},
		{"key in another case", `{"Usage":{"prompt_tokens":3,"completion_tokens":4}}`, 1 << 20, none},
		{"key through an escape", `{"\u0075sage":{"prompt_tokens":3,"completion_tokens":4}}`, 1 << 20, none},
		{"usage empty", `{"usage":{}}`, 1 << 20, none},
		{"no usage", `{"choices":[{"text":"hello"}]}`, 1 << 20, none},
		{"broken JSON", `{"usage":{"prompt_tokens":3,`, 1 << 20, none},
		{"an error", `{"error":{"message":"no"}}`, 1 << 20, none},
		{"empty", ``, 1 << 20, none},
		{
			"over the limit, usage in the tail",
			`{"choices":[{"text":"` + padding + `"}],"usage":{"prompt_tokens":1,"completion_tokens":2}}`, 100,
			rd(u(1, 2, -1, -1), -1, false, 0),
		},
		{
			"over the limit, quoted usage in the text is not a key",
			`{"usage":{"prompt_tokens":5,"completion_tokens":5},"choices":[{"text":"` + padding + ` \"usage\": {\"prompt_tokens\": 99}"}]}`, 100,
			none,
		},
		{
			"over the limit, a later key that is not an object is skipped",
			`{"choices":[{"text":"` + padding + `"}],"usage":{"prompt_tokens":1,"completion_tokens":2},"x":{"usage":7}}`, 100,
			rd(u(1, 2, -1, -1), -1, false, 0),
		},
		{
			"over the limit, usage only at the start",
			`{"usage":{"prompt_tokens":1,"completion_tokens":2},"choices":[{"text":"` + padding + `"}]}`, 100,
			none,
		},
		{
			"over the limit, usage cut by the start of the tail",
			`{"choices":[{"text":"` + padding + `"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"pad":"` + padding + `"}}`, 100,
			none,
		},
	}
	for _, tt := range tests {
		for how, parts := range chunkings(tt.body) {
			t.Run(tt.name+"/"+how, func(t *testing.T) {
				if got := readAll(framingJSON, tt.limit, parts); got != tt.want {
					t.Errorf("got %+v, want %+v", got, tt.want)
				}
			})
		}
	}
}

// TestWatchJSONText: a whole body's generated text is measured for an
// estimate, and only when the body is a readable document.
func TestWatchJSONText(t *testing.T) {
	tests := []struct {
		body   string
		want   int64
		failed bool
	}{
		{`{"choices":[{"message":{"content":"hello world"}}]}`, 11, false},
		{`{"choices":[{"text":"abcd"},{"text":"efgh"}]}`, 8, false},
		{`{"choices":[{"message":{"content":""}}]}`, 0, false},
		{`{"choices":[{"message":{"content":"x"`, -1, false},
		{`{"error":{"message":"overloaded"}}`, 0, true},
		{`{"object":"error","message":"x"}`, 0, true},
	}
	for _, tt := range tests {
		bw := newBodyWatcher(openAI(), framingJSON, 1<<20, time.Now)
		bw.write([]byte(tt.body))
		bw.close()
		if bw.text != tt.want || bw.failed != tt.failed {
			t.Errorf("%s: text %d, failed %v; want %d, %v", tt.body, bw.text, bw.failed, tt.want, tt.failed)
		}
	}
}

func TestWatchSSE(t *testing.T) {
	const (
		role   = `data: {"choices":[{"delta":{"role":"assistant","content":""}}]}` + "\n\n"
		tok    = `data: {"choices":[{"delta":{"content":"x"}}]}` + "\n\n"
		final  = `data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":2}}}` + "\n\n"
		done   = "data: [DONE]\n\n"
		nulled = `data: {"choices":[{"delta":{"content":"x"}}],"usage":null}` + "\n\n"
	)
	want := rd(u(7, 3, 2, -1), 1, true, 2)
	tests := []struct {
		name   string
		events []string // each is one write; the clock reads its index
		limit  int
		want   reading
	}{
		{"OpenAI with include_usage", []string{role, tok, tok, final, done}, 1 << 20, want},
		{"usage null on every chunk", []string{role, nulled, nulled, final, done}, 1 << 20, want},
		{"CRLF", crlf([]string{role, tok, tok, final, done}), 1 << 20, want},
		{"lone CR", lonecr([]string{role, tok, tok, final, done}), 1 << 20, want},
		{"CRLF cut between CR and LF", []string{strings.TrimSuffix(crlf([]string{role})[0], "\n"), "\n", crlf([]string{tok})[0], tok, final, done}, 1 << 20,
			rd(u(7, 3, 2, -1), 2, true, 2)},
		{"keep-alive comments", []string{": ping\n\n", role, ":\n", tok, ": keep-alive\r\n\r\n", final, done}, 1 << 20,
			rd(u(7, 3, 2, -1), 3, true, 1)},
		{"no [DONE]", []string{role, tok, final}, 1 << 20, rd(u(7, 3, 2, -1), 1, false, 1)},
		{"no blank line at the end", []string{role, tok, strings.TrimSuffix(final, "\n\n")}, 1 << 20, rd(u(7, 3, 2, -1), 1, false, 1)},
		{"no newline at all at the end", []string{role, tok, strings.TrimSuffix(final, "\n\n")[:len(final)-2]}, 1 << 20, rd(u(7, 3, 2, -1), 1, false, 1)},
		{"no usage", []string{role, tok, tok, done}, 1 << 20, r0(1, true, 2)},
		{"data without a space", []string{`data:{"choices":[{"text":"a"}]}` + "\n\n"}, 1 << 20, r0(0, false, 1)},
		{"event and id fields", []string{"event: message\nid: 4\nretry: 10\n" + tok}, 1 << 20, r0(0, false, 1)},
		{"data over two lines", []string{"data: {\"choices\":\n", "data: [{\"text\":\"a\"}]}\n\n"}, 1 << 20, r0(1, false, 1)},
		{
			"cumulative usage: the last wins, never the sum",
			[]string{
				`data: {"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":7,"completion_tokens":1}}` + "\n\n",
				`data: {"choices":[{"delta":{"content":"b"}}],"usage":{"prompt_tokens":7,"completion_tokens":2}}` + "\n\n",
				`data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}` + "\n\n", done,
			}, 1 << 20, rd(u(7, 3, -1, -1), 0, true, 2),
		},
		{
			"a later report without a count keeps the earlier one",
			[]string{
				`data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":2}}}` + "\n\n",
				`data: {"choices":[],"usage":{"completion_tokens":4}}` + "\n\n",
			}, 1 << 20, rd(u(7, 4, 2, -1), -1, false, 0),
		},
		{"nothing after [DONE] counts", []string{tok, done, final}, 1 << 20, r0(0, true, 1)},
		{"reasoning is a token", []string{role, `data: {"choices":[{"delta":{"reasoning_content":"hm"}}]}` + "\n\n"}, 1 << 20, r0(1, false, 1)},
		{"a tool call is a token", []string{role, `data: {"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}` + "\n\n"}, 1 << 20, r0(1, false, 1)},
		{"empty tool calls are not", []string{`data: {"choices":[{"delta":{"tool_calls":[ ]}}]}` + "\n\n"}, 1 << 20, r0(-1, false, 0)},
		{"an event over the limit is skipped", []string{role, tok, final, done}, 100, r0(1, true, 1)},
		{"a line over the limit is skipped", []string{role, "data: " + strings.Repeat("x", 200) + "\n\n", tok}, 100, r0(2, false, 1)},
		{"an error event in a 200", []string{"event: error\ndata: {\"error\":\"overloaded\"}\n\n"}, 1 << 20, r0(-1, false, 0)},
		{"garbage", []string{"\x00\xff\n\n\n", "data: {{{\n\n"}, 1 << 20, r0(-1, false, 0)},
		{"llama-server's timings without usage", []string{role, tok,
			`data: {"choices":[{"delta":{},"finish_reason":"stop"}],"timings":{"cache_n":13,"prompt_n":40,"predicted_n":1}}` + "\n\n", done},
			1 << 20, rd(u(53, 1, 13, -1), 1, true, 1)},
		{"llama-server's timings beside usage", []string{role, tok,
			`data: {"choices":[],"timings":{"cache_n":13,"prompt_n":40,"predicted_n":1},"usage":{"completion_tokens":1,"prompt_tokens":53}}` + "\n\n", done},
			1 << 20, rd(u(53, 1, 13, -1), 1, true, 1)},
		{"a count over the bound", []string{role, tok, `data: {"choices":[],"timings":{"prompt_n":9223372036854775807,"cache_n":1}}` + "\n\n",
			final, done}, 1 << 20, rd(dialect.Usage{Prompt: 7, Completion: 3, Cached: 2, Reasoning: -1, Invalid: true}, 1, true, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := readAll(framingSSE, tt.limit, tt.events); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func crlf(events []string) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = strings.ReplaceAll(e, "\n", "\r\n")
	}
	return out
}

func lonecr(events []string) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = strings.ReplaceAll(e, "\n", "\r")
	}
	return out
}

// TestWatchFailed: error objects inside a 200 stream are noticed, in every
// dialect's shape.
func TestWatchFailed(t *testing.T) {
	tests := []struct {
		path, framing, body string
		failed              bool
	}{
		{"/v1/chat/completions", "sse", "data: {\"error\":{\"message\":\"boom\",\"code\":500}}\n\n", true},
		{"/v1/chat/completions", "sse", "data: {\"object\":\"error\",\"message\":\"boom\"}\n\n", true},
		{"/v1/chat/completions", "sse", "data: {\"choices\":[],\"error\":null}\n\n", false},
		{"/generate_stream", "sse", "data: {\"error\":\"Request failed during generation\",\"error_type\":\"generation\"}\n\n", true},
		{"/api/chat", "ndjson", "{\"message\":{\"content\":\"a\"},\"done\":false}\n{\"error\":\"model crashed\"}\n", true},
		{"/completion", "sse", "data: {\"error\":{\"code\":500,\"message\":\"x\"}}\n\n", true},
	}
	for _, tt := range tests {
		f := framingSSE
		if tt.framing == "ndjson" {
			f = framingNDJSON
		}
		bw := newBodyWatcher(dialect.Endpoints()[tt.path].Dialect, f, 1<<20, time.Now)
		bw.write([]byte(tt.body))
		bw.close()
		if bw.failed != tt.failed {
			t.Errorf("%s %q: failed = %v, want %v", tt.path, tt.body, bw.failed, tt.failed)
		}
	}
}

// TestNativeDialects reads the native streams and bodies of Ollama, TGI and
// llama.cpp, as those servers write them.
func TestNativeDialects(t *testing.T) {
	tests := []struct {
		name, path string
		f          framing
		body       string
		want       reading
	}{
		{
			"ollama chat stream", "/api/chat", framingNDJSON,
			`{"model":"m","message":{"role":"assistant","content":"The"},"done":false}` + "\n" +
				`{"model":"m","message":{"role":"assistant","content":" sky"},"done":false}` + "\n" +
				`{"model":"m","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"total_duration":5589157167,` +
				`"load_duration":3013701500,"prompt_eval_count":26,"prompt_eval_duration":325953000,"eval_count":2,"eval_duration":1817470000}` + "\n",
			rd(u(26, 2, -1, -1), 0, true, 2),
		},
		{
			"ollama generate stream, prompt count missing (cached)", "/api/generate", framingNDJSON,
			`{"response":"a","done":false}` + "\r\n" + `{"thinking":"hm","done":false}` + "\r\n" + `{"response":"","done":true,"eval_count":2}`,
			rd(u(-1, 2, -1, -1), 0, true, 2),
		},
		{
			"ollama stream without counts", "/api/generate", framingNDJSON,
			`{"response":"a","done":false}` + "\n" + `{"response":"b","done":false}` + "\n" + `{"response":"","done":true}` + "\n",
			r0(0, true, 2),
		},
		{
			"ollama whole", "/api/chat", framingJSON,
			`{"message":{"role":"assistant","content":"hello"},"done":true,"prompt_eval_count":5,"eval_count":7}`,
			rd(u(5, 7, -1, -1), -1, false, 0),
		},
		{
			"tgi generate whole with details", "/generate", framingJSON,
			`{"generated_text":"abc","details":{"finish_reason":"length","generated_tokens":3,"seed":null,"prefill":[],"tokens":[]}}`,
			rd(u(-1, 3, -1, -1), -1, false, 0),
		},
		{
			"tgi stream", "/generate_stream", framingSSE,
			`data:{"index":1,"token":{"id":1,"text":"a","logprob":-1,"special":false},"generated_text":null,"details":null}` + "\n\n" +
				`data:{"index":2,"token":{"id":2,"text":"</s>","logprob":-1,"special":true},"generated_text":"a","details":{"finish_reason":"eos_token","generated_tokens":2,"seed":null,"input_length":9}}` + "\n\n",
			rd(u(9, 2, -1, -1), 0, true, 2),
		},
		{
			"tgi stream without details", "/generate_stream", framingSSE,
			`data:{"index":1,"token":{"id":1,"text":"a","logprob":-1,"special":false},"generated_text":null,"details":null}` + "\n\n" +
				`data:{"index":2,"token":{"id":2,"text":"b","logprob":-1,"special":false},"generated_text":"ab","details":null}` + "\n\n",
			r0(0, true, 2),
		},
		{
			"llama.cpp stream, cumulative counts", "/completion", framingSSE,
			`data: {"content":"a","tokens":[5],"stop":false,"tokens_predicted":1,"tokens_evaluated":4}` + "\n\n" +
				`data: {"content":"bc","tokens":[6,7],"stop":false,"tokens_predicted":3,"tokens_evaluated":4}` + "\n\n" +
				`data: {"content":"","stop":true,"tokens_predicted":3,"tokens_evaluated":4,"timings":{"prompt_n":1,"cache_n":3,"predicted_n":3}}` + "\n\n",
			rd(u(4, 3, 3, -1), 0, true, 3),
		},
		{
			"llama.cpp whole, timings only", "/completion", framingJSON,
			`{"content":"abc","stop":true,"timings":{"prompt_n":2,"cache_n":5,"predicted_n":3}}`,
			rd(u(7, 3, 5, -1), -1, false, 0),
		},
	}
	for _, tt := range tests {
		for how, parts := range chunkings(tt.body) {
			t.Run(tt.name+"/"+how, func(t *testing.T) {
				var part int
				bw := newBodyWatcher(dialect.Endpoints()[tt.path].Dialect, tt.f, 1<<20, func() time.Time { return t0.Add(time.Duration(part) * time.Second) })
				for i, p := range parts {
					part = i
					bw.write([]byte(p))
				}
				bw.close()
				got := reading{usage: bw.usage, hasUsage: bw.hasUsage, firstEvent: -1, done: bw.done, tokens: bw.tokens}
				if !bw.hasUsage {
					got.usage = dialect.Usage{}
				}
				if !bw.firstToken.IsZero() {
					got.firstEvent = 0 // the clock reads the part, which depends on the chunking
				}
				if got != tt.want {
					t.Errorf("got %+v, want %+v", got, tt.want)
				}
			})
		}
	}
}

// TestWatchDecodes: a gzip or deflate body is watched through a decoder on
// the side.
func TestWatchDecodes(t *testing.T) {
	body := []byte(`data: {"choices":[{"delta":{"content":"x"}}]}` + "\n\n" + `data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":1}}` + "\n\ndata: [DONE]\n\n")
	for _, coding := range []string{codingGzip, codingDeflate} {
		var z bytes.Buffer
		var w io.WriteCloser = gzip.NewWriter(&z)
		if coding == codingDeflate {
			w = zlib.NewWriter(&z)
		}
		w.Write(body)
		w.Close()
		bw := newBodyWatcher(openAI(), framingSSE, 1<<20, time.Now)
		bw.decode(coding)
		for _, c := range z.Bytes() {
			bw.write([]byte{c})
		}
		bw.close()
		if !bw.hasUsage || bw.usage != u(7, 1, -1, -1) || bw.tokens != 1 || !bw.done {
			t.Errorf("%s: usage %+v (%v), tokens %d, done %v", coding, bw.usage, bw.hasUsage, bw.tokens, bw.done)
		}
	}
	// A broken stream: the decoder gives up, writes never block.
	bw := newBodyWatcher(openAI(), framingSSE, 1<<20, time.Now)
	bw.decode(codingGzip)
	bw.write(bytes.Repeat([]byte("not gzip"), 10000))
	bw.close()
	if bw.hasUsage {
		t.Error("usage read from garbage")
	}
}

func TestFramingOf(t *testing.T) {
	tests := []struct {
		contentType string
		want        framing
	}{
		{"application/json", framingJSON},
		{"application/json; charset=utf-8", framingJSON},
		{"text/event-stream", framingSSE},
		{"text/event-stream; charset=utf-8", framingSSE},
		{"application/x-ndjson", framingNDJSON},
		{"text/plain", framingNone},
		{"", framingNone},
	}
	for _, tt := range tests {
		h := http.Header{}
		h.Set("Content-Type", tt.contentType)
		if got := framingOf(h); got != tt.want {
			t.Errorf("framingOf(%q) = %d, want %d", tt.contentType, got, tt.want)
		}
	}
	for ce, want := range map[string]string{"": "", "identity": "", "gzip": "gzip", "X-Gzip": "gzip", "deflate": "deflate", "br": "br", "zstd": "zstd"} {
		h := http.Header{}
		if ce != "" {
			h.Set("Content-Encoding", ce)
		}
		if got := codingOf(h); got != want {
			t.Errorf("codingOf(%q) = %q, want %q", ce, got, want)
		}
	}
}

func TestClip(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 5, "abc"},
		{"abcdef", 3, "abc"},
		{"aé", 2, "a"}, // é is two bytes: not split
		{"a\xffb", 5, "a\uFFFDb"},
	}
	for _, tt := range tests {
		if got := clip.String(tt.in, tt.n); got != tt.want {
			t.Errorf("clip.String(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

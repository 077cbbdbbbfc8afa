package requests

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func openAI() *dialect { return endpoints()["/v1/chat/completions"].dialect }

var t0 = time.Unix(1700000000, 0)

// reading is what a meter found, in a comparable form.
type reading struct {
	usage      usage
	hasUsage   bool
	firstEvent int // index of the event that set FirstToken, -1 for none
	done       bool
}

// readAll meters parts one after the other; the clock reads the index of
// the part being written, so firstEvent says which part held the first token.
func readAll(f framing, limit int, parts []string) reading {
	var part int
	m := newMeter(openAI(), f, limit, func() time.Time { return t0.Add(time.Duration(part) * time.Second) })
	for i, p := range parts {
		part = i
		m.write([]byte(p))
	}
	m.close()
	m.close() // idempotent
	r := reading{usage: m.usage, hasUsage: m.hasUsage, firstEvent: -1, done: m.done}
	if !m.firstToken.IsZero() {
		r.firstEvent = int(m.firstToken.Sub(t0) / time.Second)
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

func u(prompt, completion, cached, reasoning int64) usage {
	return usage{prompt: prompt, completion: completion, cached: cached, reasoning: reasoning}
}

func TestMeterJSON(t *testing.T) {
	full := `{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30,` +
		`"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":6}}}`
	padding := strings.Repeat("z", 300)
	tests := []struct {
		name  string
		body  string
		limit int
		want  reading
	}{
		{"full usage", full, 1 << 20, reading{u(10, 20, 4, 6), true, -1, false}},
		{"no details", `{"usage":{"prompt_tokens":3,"completion_tokens":4}}`, 1 << 20, reading{u(3, 4, -1, -1), true, -1, false}},
		{"details null", `{"usage":{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":null}}`, 1 << 20, reading{u(3, 4, -1, -1), true, -1, false}},
		{"embeddings shape", `{"data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}`, 1 << 20, reading{u(8, -1, -1, -1), true, -1, false}},
		{"negative count", `{"usage":{"prompt_tokens":-3,"completion_tokens":4}}`, 1 << 20, reading{u(-1, 4, -1, -1), true, -1, false}},
		{"a count of the wrong type", `{"usage":{"prompt_tokens":"3","completion_tokens":4}}`, 1 << 20, reading{u(-1, 4, -1, -1), true, -1, false}},
		{"a fraction and a null", `{"usage":{"prompt_tokens":12.5,"completion_tokens":null}}`, 1 << 20, reading{firstEvent: -1}},
		{"usage null", `{"usage":null}`, 1 << 20, reading{firstEvent: -1}},
		{"key in another case", `{"Usage":{"prompt_tokens":3,"completion_tokens":4}}`, 1 << 20, reading{firstEvent: -1}},
		{"key through an escape", `{"\u0075sage":{"prompt_tokens":3,"completion_tokens":4}}`, 1 << 20, reading{firstEvent: -1}},
		{"usage empty", `{"usage":{}}`, 1 << 20, reading{firstEvent: -1}},
		{"no usage", `{"choices":[{"text":"hello"}]}`, 1 << 20, reading{firstEvent: -1}},
		{"broken JSON", `{"usage":{"prompt_tokens":3,`, 1 << 20, reading{firstEvent: -1}},
		{"an error", `{"error":{"message":"no"}}`, 1 << 20, reading{firstEvent: -1}},
		{"empty", ``, 1 << 20, reading{firstEvent: -1}},
		{
			"over the limit, usage in the tail",
			`{"choices":[{"text":"` + padding + `"}],"usage":{"prompt_tokens":1,"completion_tokens":2}}`, 100,
			reading{u(1, 2, -1, -1), true, -1, false},
		},
		{
			"over the limit, quoted usage in the text is not a key",
			`{"usage":{"prompt_tokens":5,"completion_tokens":5},"choices":[{"text":"` + padding + ` \"usage\": {\"prompt_tokens\": 99}"}]}`, 100,
			reading{firstEvent: -1},
		},
		{
			"over the limit, a later key that is not an object is skipped",
			`{"choices":[{"text":"` + padding + `"}],"usage":{"prompt_tokens":1,"completion_tokens":2},"x":{"usage":7}}`, 100,
			reading{u(1, 2, -1, -1), true, -1, false},
		},
		{
			"over the limit, usage only at the start",
			`{"usage":{"prompt_tokens":1,"completion_tokens":2},"choices":[{"text":"` + padding + `"}]}`, 100,
			reading{firstEvent: -1},
		},
		{
			"over the limit, usage cut by the start of the tail",
			`{"choices":[{"text":"` + padding + `"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"pad":"` + padding + `"}}`, 100,
			reading{firstEvent: -1},
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

func TestMeterSSE(t *testing.T) {
	const (
		role   = `data: {"choices":[{"delta":{"role":"assistant","content":""}}]}` + "\n\n"
		tok    = `data: {"choices":[{"delta":{"content":"x"}}]}` + "\n\n"
		final  = `data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":2}}}` + "\n\n"
		done   = "data: [DONE]\n\n"
		nulled = `data: {"choices":[{"delta":{"content":"x"}}],"usage":null}` + "\n\n"
	)
	want := reading{u(7, 3, 2, -1), true, 1, true}
	tests := []struct {
		name   string
		events []string // each is one write; the clock reads its index
		limit  int
		want   reading
	}{
		{"OpenAI with include_usage", []string{role, tok, tok, final, done}, 1 << 20, want},
		{"usage null on every chunk", []string{role, nulled, nulled, final, done}, 1 << 20, want},
		{"CRLF", crlf([]string{role, tok, tok, final, done}), 1 << 20, want},
		{"keep-alive comments", []string{": ping\n\n", role, ":\n", tok, ": keep-alive\r\n\r\n", final, done}, 1 << 20,
			reading{u(7, 3, 2, -1), true, 3, true}},
		{"no [DONE]", []string{role, tok, final}, 1 << 20, reading{u(7, 3, 2, -1), true, 1, false}},
		{"no blank line at the end", []string{role, tok, strings.TrimSuffix(final, "\n\n")}, 1 << 20, reading{u(7, 3, 2, -1), true, 1, false}},
		{"no newline at all at the end", []string{role, tok, strings.TrimSuffix(final, "\n\n")[:len(final)-2]}, 1 << 20, reading{u(7, 3, 2, -1), true, 1, false}},
		{"no usage", []string{role, tok, tok, done}, 1 << 20, reading{firstEvent: 1, done: true}},
		{"data without a space", []string{`data:{"choices":[{"text":"a"}]}` + "\n\n"}, 1 << 20, reading{firstEvent: 0}},
		{"event and id fields", []string{"event: message\nid: 4\nretry: 10\n" + tok}, 1 << 20, reading{firstEvent: 0}},
		{"data over two lines", []string{"data: {\"choices\":\n", "data: [{\"text\":\"a\"}]}\n\n"}, 1 << 20, reading{firstEvent: 1}},
		{
			"cumulative usage: the last wins, never the sum",
			[]string{
				`data: {"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":7,"completion_tokens":1}}` + "\n\n",
				`data: {"choices":[{"delta":{"content":"b"}}],"usage":{"prompt_tokens":7,"completion_tokens":2}}` + "\n\n",
				`data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}` + "\n\n", done,
			}, 1 << 20, reading{u(7, 3, -1, -1), true, 0, true},
		},
		{"nothing after [DONE] counts", []string{tok, done, final}, 1 << 20, reading{firstEvent: 0, done: true}},
		{"reasoning is a token", []string{role, `data: {"choices":[{"delta":{"reasoning_content":"hm"}}]}` + "\n\n"}, 1 << 20, reading{firstEvent: 1}},
		{"a tool call is a token", []string{role, `data: {"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}` + "\n\n"}, 1 << 20, reading{firstEvent: 1}},
		{"empty tool calls are not", []string{`data: {"choices":[{"delta":{"tool_calls":[ ]}}]}` + "\n\n"}, 1 << 20, reading{firstEvent: -1}},
		{"an event over the limit is skipped", []string{role, tok, final, done}, 100, reading{firstEvent: 1, done: true}},
		{"a line over the limit is skipped", []string{role, "data: " + strings.Repeat("x", 200) + "\n\n", tok}, 100, reading{firstEvent: 2}},
		{"an error event in a 200", []string{"event: error\ndata: {\"error\":\"overloaded\"}\n\n"}, 1 << 20, reading{firstEvent: -1}},
		{"garbage", []string{"\x00\xff\n\n\n", "data: {{{\n\n"}, 1 << 20, reading{firstEvent: -1}},
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

func TestFramingOf(t *testing.T) {
	tests := []struct {
		contentType, encoding string
		want                  framing
	}{
		{"application/json", "", framingJSON},
		{"application/json; charset=utf-8", "", framingJSON},
		{"text/event-stream", "", framingSSE},
		{"text/event-stream; charset=utf-8", "identity", framingSSE},
		{"text/event-stream", "gzip", framingNone},
		{"application/json", "br", framingNone},
		{"text/plain", "", framingNone},
		{"", "", framingNone},
		{"application/x-ndjson", "", framingNone},
	}
	for _, tt := range tests {
		h := http.Header{}
		h.Set("Content-Type", tt.contentType)
		if tt.encoding != "" {
			h.Set("Content-Encoding", tt.encoding)
		}
		if got := framingOf(h); got != tt.want {
			t.Errorf("framingOf(%q, %q) = %d, want %d", tt.contentType, tt.encoding, got, tt.want)
		}
	}
}

func TestRequestFields(t *testing.T) {
	tests := []struct {
		body, model string
		stream      bool
	}{
		{`{"model":"m","stream":true}`, "m", true},
		{`{"stream":false,"model":"a/b"}`, "a/b", false},
		{`{"model":"m","stream":"yes"}`, "m", false},
		{`{"model":7}`, "", false},
		{`{"model":"m"`, "", false},
		{``, "", false},
	}
	for _, tt := range tests {
		if model, stream := openAIRequest([]byte(tt.body)); model != tt.model || stream != tt.stream {
			t.Errorf("openAIRequest(%s) = %q, %v; want %q, %v", tt.body, model, stream, tt.model, tt.stream)
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
		if got := clip(tt.in, tt.n); got != tt.want {
			t.Errorf("clip(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

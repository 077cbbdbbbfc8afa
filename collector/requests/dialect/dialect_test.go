package dialect

import (
	"net/http"
	"testing"
)

// TestOpenAIRequestDuplicateStreamOptions: with duplicate stream_options
// members the last one counts, whole, as the upstream reads it; the
// include_usage edit is made where the request is read as not asking, and
// the edited request, read the same way, asks.
func TestOpenAIRequestDuplicateStreamOptions(t *testing.T) {
	for _, tt := range []struct {
		body  string
		asked bool
	}{
		{`{"model":"m","stream":true,"stream_options":{"include_usage":true},"stream_options":{}}`, false},
		{`{"model":"m","stream":true,"stream_options":{"include_usage":true},"stream_options":null}`, false},
		{`{"model":"m","stream":true,"stream_options":{},"stream_options":{"include_usage":true}}`, true},
		{`{"model":"m","stream":true,"stream_options":{"include_usage":false},"stream_options":{"continuous_usage_stats":true}}`, true},
		{`{"model":"m","stream":true,"stream_options":{"include_usage":true,"include_usage":false}}`, false},
	} {
		r := openAIRequest([]byte(tt.body))
		if r.Asked != tt.asked || r.Model != "m" || !r.Stream {
			t.Errorf("%s: %+v, want model m, stream, asked %v", tt.body, r, tt.asked)
		}
		edit, edited := IncludeUsageEdit([]byte(tt.body))
		if tt.asked {
			continue
		}
		if !edited {
			t.Errorf("%s: not edited, though usage was not asked", tt.body)
			continue
		}
		// The edited body, read as the upstream reads it (the last
		// member wins), asks for usage.
		out := edit.Apply([]byte(tt.body))
		if r := openAIRequest(out); !r.Asked || r.Model != "m" || !r.Stream {
			t.Errorf("%s: edited to %s, read %+v, want model m, stream, asked", tt.body, out, r)
		}
	}
}

func TestTGIHeaders(t *testing.T) {
	h := http.Header{}
	if _, ok := tgiHeader(h); ok {
		t.Error("no headers read as counts")
	}
	h.Set("X-Prompt-Tokens", "12")
	h.Set("X-Generated-Tokens", "x")
	if got, ok := tgiHeader(h); !ok || got != (Usage{Prompt: 12, Completion: -1, Cached: -1, Reasoning: -1}) {
		t.Errorf("got %+v, %v; want prompt 12 only", got, ok)
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
		if r := openAIRequest([]byte(tt.body)); r.Model != tt.model || r.Stream != tt.stream {
			model, stream := r.Model, r.Stream
			t.Errorf("openAIRequest(%s) = %q, %v; want %q, %v", tt.body, model, stream, tt.model, tt.stream)
		}
	}
}

// TestTimingsAreCounts: llama-server's timings are the server's counts,
// in OpenAI-style chunks as in its native answers: prompt_n + cache_n is
// the prompt; a usage block beside them wins, count by count.
func TestTimingsAreCounts(t *testing.T) {
	openAI := Endpoints()["/v1/chat/completions"].Dialect
	llama := Endpoints()["/completion"].Dialect
	for _, tt := range []struct {
		d    *Dialect
		doc  string
		want Usage
	}{
		{openAI, `{"choices":[{"delta":{},"finish_reason":"stop"}],"timings":{"cache_n":13,"prompt_n":40,"predicted_n":9,"prompt_ms":2.5}}`, Usage{53, 9, 13, -1, false}},
		{openAI, `{"choices":[],"timings":{"cache_n":13,"prompt_n":40,"predicted_n":9},"usage":{"prompt_tokens":50,"completion_tokens":9}}`, Usage{50, 9, 13, -1, false}},
		{openAI, `{"choices":[],"timings":{"prompt_n":40},"usage":{"prompt_tokens":50}}`, Usage{50, -1, -1, -1, false}},
		{openAI, `{"choices":[],"timings":{"prompt_n":40}}`, Usage{}}, // prompt_n alone is not the prompt
		{llama, `{"content":"","stop":true,"timings":{"prompt_n":1,"cache_n":3,"predicted_n":3}}`, Usage{4, 3, 3, -1, false}},
	} {
		dd := tt.d.Document([]byte(tt.doc))
		if dd.Usage != tt.want || dd.HasUsage != (tt.want != Usage{}) {
			t.Errorf("%s %s: usage %+v (has %v), want %+v", tt.d.Name, tt.doc, dd.Usage, dd.HasUsage, tt.want)
		}
	}
}

// TestCountsBounded: a count over MaxTokens, or a sum of counts that would
// overflow, makes the report invalid with its counts unknown.
func TestCountsBounded(t *testing.T) {
	invalid := NoUsage
	invalid.Invalid = true
	eps := Endpoints()
	for _, tt := range []struct {
		path, doc string
	}{
		{"/completion", `{"content":"","stop":true,"timings":{"prompt_n":9223372036854775807,"cache_n":1}}`},
		{"/completion", `{"content":"","stop":true,"tokens_evaluated":3,"timings":{"prompt_n":2,"cache_n":1,"predicted_n":1099511627777}}`},
		{"/v1/chat/completions", `{"choices":[],"timings":{"prompt_n":9223372036854775807,"cache_n":1}}`},
		{"/v1/chat/completions", `{"choices":[],"timings":{"prompt_n":1,"cache_n":1},"usage":{"prompt_tokens":1099511627777}}`},
		{"/v1/chat/completions", `{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":9223372036854775807}}}`},
		{"/api/chat", `{"done":true,"prompt_eval_count":1099511627777,"eval_count":1}`},
		{"/generate_stream", `{"token":{"text":"a"},"generated_text":"a","details":{"generated_tokens":1099511627777}}`},
	} {
		dd := eps[tt.path].Dialect.Document([]byte(tt.doc))
		if dd.Usage != invalid || !dd.HasUsage {
			t.Errorf("%s %s: usage %+v (has %v), want invalid", tt.path, tt.doc, dd.Usage, dd.HasUsage)
		}
	}
	if dd := eps["/completion"].Dialect.Document([]byte(`{"timings":{"prompt_n":1099511627776,"cache_n":0,"predicted_n":0}}`)); dd.Usage.Invalid || dd.Usage.Prompt != MaxTokens {
		t.Errorf("MaxTokens itself read as %+v, want a count", dd.Usage)
	}
	h := http.Header{"X-Prompt-Tokens": {"1099511627777"}}
	if u, ok := tgiHeader(h); !ok || u != invalid {
		t.Errorf("TGI header over the bound: %+v, %v; want invalid", u, ok)
	}
	u := NoUsage
	u.Merge(invalid)
	u.Merge(Usage{Prompt: 1, Completion: 2, Cached: -1, Reasoning: -1})
	if !u.Invalid {
		t.Error("a later report made an invalid usage valid again")
	}
}

// TestRequestModelFromPrefix: a body with bytes after its JSON object keeps
// its model (and nothing else: it gets no edit).
func TestRequestModelFromPrefix(t *testing.T) {
	for path, ep := range Endpoints() {
		for _, body := range []string{`{"model":"m","stream":true}garbage`, `{"model":"m","stream":true} {"model":"n"}`, "{\"model\":\"m\",\"stream\":7}\x00"} {
			if r := ep.Dialect.Request([]byte(body)); r.Model != "m" || r.Asked {
				t.Errorf("%s %q: %+v, want model m", path, body, r)
			}
		}
		if r := ep.Dialect.Request([]byte(`{"model":"m"`)); r.Model != "" {
			t.Errorf("%s: a cut body read model %q", path, r.Model)
		}
	}
	if r := openAIRequest([]byte(`{"model":"m","stream":true}x`)); r.Stream {
		t.Errorf("a body that is not one document read as streamed: %+v", r)
	}
}

// TestUsageChunkEvent: a usage-only chunk goes whole when it holds nothing
// but what every chunk repeats; else only its usage member goes.
func TestUsageChunkEvent(t *testing.T) {
	for _, tt := range []struct {
		event, want string // want "" : the whole event goes
	}{
		{"data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n", ""},
		{"data: {\"id\":\"x\",\"choices\":[ ],\"system_fingerprint\":\"b1\",\"service_tier\":\"default\",\"obfuscation\":\"ab\",\"usage\":{\"prompt_tokens\":1}}\r\n\r\n", ""},
		{"data: {\"usage\":{\"prompt_tokens\":1},\"choices\":null}\n\n", ""},
		{"data: {\"choices\":[],\"created\":1,\"id\":\"x\",\"model\":\"m\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":\"b1\",\"timings\":{\"cache_n\":1,\"prompt_n\":2},\"usage\":{\"prompt_tokens\":3}}\n\n",
			"data: {\"choices\":[],\"created\":1,\"id\":\"x\",\"model\":\"m\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":\"b1\",\"timings\":{\"cache_n\":1,\"prompt_n\":2}}\n\n"},
		{"data: {\"usage\":{\"prompt_tokens\":3}, \"x-vendor\":1}\n\n", "data: {\"x-vendor\":1}\n\n"},
		{"data: {\"usage\":{\"prompt_tokens\":3},\"usage\":{},\"timings\":{}}\n\n", ""},    // two usage members
		{"data: {\"choices\":[],\"timings\":{},\"usage\":{\"prompt_tokens\":3}}x\n\n", ""}, // not one JSON document
		{"data: {\"timings\":{},\"usage\":{}}\ndata: {}\n\n", ""},                          // two data lines
	} {
		from, to, whole := UsageChunkEvent([]byte(tt.event))
		got := ""
		if !whole {
			got = tt.event[:from] + tt.event[to:]
		}
		if got != tt.want {
			t.Errorf("%q: left %q, want %q", tt.event, got, tt.want)
		}
	}
}

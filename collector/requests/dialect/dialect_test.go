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

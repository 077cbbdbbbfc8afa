package requests

import "testing"

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
		if r.asked != tt.asked || r.model != "m" || !r.stream {
			t.Errorf("%s: %+v, want model m, stream, asked %v", tt.body, r, tt.asked)
		}
		edit, edited := includeUsageEdit([]byte(tt.body))
		if tt.asked {
			continue
		}
		if !edited {
			t.Errorf("%s: not edited, though usage was not asked", tt.body)
			continue
		}
		// The edited body, read as the upstream reads it (the last
		// member wins), asks for usage.
		out := edit.apply([]byte(tt.body))
		if r := openAIRequest(out); !r.asked || r.model != "m" || !r.stream {
			t.Errorf("%s: edited to %s, read %+v, want model m, stream, asked", tt.body, out, r)
		}
	}
}

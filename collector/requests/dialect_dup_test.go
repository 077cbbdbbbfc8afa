package requests

import "testing"

// TestOpenAIRequestDuplicateStreamOptions: with duplicate stream_options
// members the last one counts, whole, as the upstream reads it; the
// include_usage edit is made where the request is read as not asking.
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
		if _, edited := includeUsageEdit([]byte(tt.body)); !tt.asked && !edited {
			t.Errorf("%s: not edited, though usage was not asked", tt.body)
		}
	}
}

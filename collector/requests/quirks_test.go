package requests

import "testing"

// TestFilterKeepsWhatUsageChunkCarries: llama-server, asked for usage,
// moves its timings onto the usage chunk; the filter takes the usage
// member out of it and leaves the rest for the client. A usage chunk with
// nothing else goes whole.
func TestFilterKeepsWhatUsageChunkCarries(t *testing.T) {
	const (
		tok    = `data: {"choices":[{"delta":{"content":"x"},"index":0}],"created":1,"id":"c","model":"m","object":"chat.completion.chunk"}` + "\n\n"
		finish = `data: {"choices":[{"delta":{},"finish_reason":"stop","index":0}],"created":1,"id":"c","model":"m","object":"chat.completion.chunk"}` + "\n\n"
		head   = `data: {"choices":[],"created":1,"id":"c","model":"m","object":"chat.completion.chunk","system_fingerprint":"b10573",`
		times  = `"timings":{"cache_n":13,"predicted_n":1,"prompt_n":40}`
		usage  = `"usage":{"completion_tokens":1,"prompt_tokens":53,"total_tokens":54}`
		done   = "data: [DONE]\n\n"
	)
	for _, tt := range []struct{ name, in, want string }{
		{"timings kept", tok + finish + head + times + "," + usage + "}\n\n" + done, tok + finish + head + times + "}\n\n" + done},
		{"nothing else", tok + finish + head + usage + "}\n\n" + done, tok + finish + done},
	} {
		for _, step := range []int{1, 7, 1 << 16} {
			if got := string(filterAll([]byte(tt.in), step, 1<<16)); got != tt.want {
				t.Errorf("%s, reads of %d: got\n%s\nwant\n%s", tt.name, step, got, tt.want)
			}
		}
	}
}

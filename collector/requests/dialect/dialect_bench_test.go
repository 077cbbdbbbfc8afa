package dialect

import "testing"

// What the proxy reads of a request and an answer, per request: the proxy
// benchmark's chat completion (benchChat, as in collector/requests'
// bench_test.go) and the fake's answer to it.
const (
	benchChat   = `{"model":"bench","max_tokens":16,"messages":[{"role":"user","content":"how much does this answer cost?"}]}`
	benchStream = `{"model":"bench","stream":true,"max_tokens":16,"messages":[{"role":"user","content":"how much does this answer cost?"}]}`

	benchAnswer = `{"id":"chatcmpl-6f2617231c3df6b6","object":"chat.completion","created":1700000000,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":" transfers value no faster than it wears out each answer dead labour stored in the machine"},"finish_reason":"length"}],"usage":{"prompt_tokens":11,"completion_tokens":16,"total_tokens":27,"prompt_tokens_details":{"cached_tokens":5},"completion_tokens_details":{"reasoning_tokens":0}}}`
	benchChunk  = `{"id":"chatcmpl-68885929035d0de6","object":"chat.completion.chunk","created":1700000000,"model":"bench","choices":[{"index":0,"delta":{"content":" value"},"finish_reason":null}]}`
)

func BenchmarkReadRequest(b *testing.B) {
	body := []byte(benchChat)
	b.ReportAllocs()
	for b.Loop() {
		if r := openAIRequest(body); r.Model != "bench" {
			b.Fatal(r)
		}
	}
}

func BenchmarkReadAnswer(b *testing.B) {
	body := []byte(benchAnswer)
	b.ReportAllocs()
	for b.Loop() {
		if d := openAIDocument(body); !d.HasUsage {
			b.Fatal(d)
		}
	}
}

func BenchmarkReadChunk(b *testing.B) {
	body := []byte(benchChunk)
	b.ReportAllocs()
	for b.Loop() {
		if d := openAIDocument(body); d.Tokens != 1 {
			b.Fatal(d)
		}
	}
}

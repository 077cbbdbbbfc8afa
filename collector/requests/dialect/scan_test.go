package dialect

import "testing"

// The fast reader must read what servers send, or the proxy pays for
// encoding/json on every request again (FuzzFastJSON checks that what it
// reads is right).
func TestFastJSONReadsCommonDocuments(t *testing.T) {
	for _, req := range []string{benchChat, benchStream,
		`{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"system","content":"Be brief.\nReally."},{"role":"user","content":[{"type":"text","text":"caf\u00e9 – ok?"}]}],"stream":true,"stream_options":{"include_usage":true},"temperature":0.7,"max_tokens":256,"tools":[]}`,
	} {
		if _, ok := fastOpenAIRequest([]byte(req)); !ok {
			t.Errorf("fast reader gave up on the request %s", req)
		}
	}
	for _, doc := range []string{benchAnswer, benchChunk,
		`{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":11,"total_tokens":27,"completion_tokens":16}}`,
		`{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"ab","reasoning_content":null},"logprobs":null,"finish_reason":null}],"usage":null}`,
		`{"object":"error","message":"model not found","type":"NotFoundError","param":null,"code":404}`,
		`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-2e-3]}],"model":"e","usage":{"prompt_tokens":5,"total_tokens":5}}`,
	} {
		if _, ok := fastOpenAIDocument([]byte(doc)); !ok {
			t.Errorf("fast reader gave up on the document %s", doc)
		}
	}
}

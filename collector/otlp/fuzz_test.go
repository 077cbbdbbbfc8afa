package otlp

import (
	"net/http"
	"testing"
)

// fuzzSeeds are bodies of every shape the receiver reads, and some it
// refuses.
func fuzzSeeds(t testing.TB, encode func(testing.TB, traceSet) []byte) [][]byte {
	bad := vllmSpan("", 1)
	delete(bad.attrs, "gen_ai.request.id")
	sets := []traceSet{
		{resourceSpec{service("vllm"), []spanSpec{vllmSpan("chatcmpl-1", 1), httpSpan(1)}}},
		{resourceSpec{service("sglang"), []spanSpec{sglangSpan("0123456789abcdef", 1)}}},
		{resourceSpec{service("vllm"), []spanSpec{bad}}, resourceSpec{service("stranger"), []spanSpec{vllmSpan("x", 1)}}},
		{resourceSpec{service("vllm"), contentSpans()}},
		{},
	}
	var out [][]byte
	for _, s := range sets {
		out = append(out, encode(t, s))
	}
	return out
}

type traceSet []resourceSpec

// fuzzHTTP checks one body: no panic; an answer of 200 or a 4xx with a
// message.
func fuzzHTTP(t *testing.T, body []byte, header map[string]string) {
	r, _, _ := newReceiver(t, Options{MaxBodyBytes: 1 << 20})
	w := post(r, body, header)
	switch {
	case w.Code == http.StatusOK:
		exportResponse(t, w)
	case w.Code >= 400 && w.Code < 500:
		if st := statusOf(t, w); st.GetMessage() == "" {
			t.Fatalf("%d without a message", w.Code)
		}
	default:
		t.Fatalf("status %d", w.Code)
	}
}

func FuzzHTTPProtobuf(f *testing.F) {
	for _, b := range fuzzSeeds(f, func(t testing.TB, s traceSet) []byte { return protoBody(t, build(s...)) }) {
		f.Add(b)
	}
	f.Add([]byte("\x0a\x05\x0a\x03\x0a\x01"))
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzHTTP(t, body, nil)
	})
}

func FuzzHTTPJSON(f *testing.F) {
	for _, b := range fuzzSeeds(f, func(t testing.TB, s traceSet) []byte { return jsonBody(t, build(s...)) }) {
		f.Add(b)
	}
	f.Add([]byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"llm_request","startTimeUnixNano":"1","endTimeUnixNano":"0"}]}]}]}`))
	f.Add([]byte(`{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"vllm"}}]},` +
		`"scopeSpans":[{"spans":[{"name":"llm_request","startTimeUnixNano":"9","endTimeUnixNano":"1",` +
		`"attributes":[{"key":"gen_ai.request.id","value":{"intValue":"7"}},{"key":"gen_ai.latency.e2e","value":{"doubleValue":"NaN"}}]}]}]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzHTTP(t, body, map[string]string{"Content-Type": contentJSON})
	})
}

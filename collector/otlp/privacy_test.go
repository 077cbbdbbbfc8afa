package otlp

import (
	"fmt"
	"strings"
	"testing"
)

// marker stands for a prompt's or a completion's text: it must reach no
// log line, no mapped request and no answer.
const marker = "MARKER-7f3a-the-users-secret-prompt"

// contentSpans are spans full of content, as a server with content
// capture sends them: a vLLM span, a GenAI span, one without an id
// (rejected), and a span named with the content (ignored).
func contentSpans() []spanSpec {
	content := map[string]any{
		"gen_ai.prompt":              marker,
		"gen_ai.completion":          marker,
		"gen_ai.input.messages":      `[{"role":"user","parts":[{"type":"text","content":"` + marker + `"}]}]`,
		"gen_ai.output.messages":     `[{"role":"assistant","parts":[{"type":"text","content":"` + marker + `"}]}]`,
		"gen_ai.system_instructions": marker,
	}
	events := map[string]map[string]any{
		"gen_ai.content.prompt":                     {"gen_ai.prompt": marker},
		"gen_ai.content.completion":                 {"gen_ai.completion": marker},
		"gen_ai.client.inference.operation.details": {"gen_ai.input.messages": marker},
	}
	v := vllmSpan("chatcmpl-private", 1)
	g := spanSpec{name: "chat llama", kind: 3, start: at(1), end: at(2), attrs: map[string]any{
		"gen_ai.operation.name": "chat", "gen_ai.response.id": "chatcmpl-g", "gen_ai.usage.input_tokens": 5}}
	noID := vllmSpan("", 1)
	delete(noID.attrs, "gen_ai.request.id")
	named := spanSpec{name: marker, kind: 2, start: at(1), end: at(2), attrs: map[string]any{"http.route": marker}}
	spans := []spanSpec{v, g, noID, named}
	for i := range spans {
		for k, val := range content {
			spans[i].attrs[k] = val
		}
		spans[i].events = events
	}
	return spans
}

func TestContentNeverKept(t *testing.T) {
	for _, protocol := range []string{"http", "grpc"} {
		t.Run(protocol, func(t *testing.T) {
			r, rec, logs := newReceiver(t, Options{})
			httpAddr, grpcAddr := serve(t, r)
			exp := exporter(t, protocol, map[string]string{"http": httpAddr, "grpc": grpcAddr}[protocol], "")
			// The span without an id is rejected: the exporter reports
			// the partial success as an error.
			if err := emit(t, exp, "vllm", contentSpans()...); err == nil || !strings.Contains(err.Error(), "1 without a request id") {
				t.Fatal(err)
			}
			// From a service no source matches: rejected, and warned about.
			if err := emit(t, exp, "stranger", contentSpans()...); err == nil || !strings.Contains(err.Error(), "3 inference span(s) rejected") {
				t.Fatal(err)
			}
			got := rec.requests()
			if len(got) != 2 {
				t.Fatalf("%d requests, want 2", len(got))
			}
			if s := fmt.Sprintf("%+v %#v", got, got); strings.Contains(s, marker) {
				t.Errorf("the content reached a mapped request: %s", s)
			}
			if strings.Contains(logs.String(), marker) {
				t.Errorf("the content reached the log: %s", logs)
			}
			if !strings.Contains(logs.String(), "rejected") {
				t.Errorf("nothing logged: the test logs nothing it could leak into: %q", logs)
			}
		})
	}
	// The answers too: a partial success names reasons, never content.
	r, _, logs := newReceiver(t, Options{})
	w := post(r, protoBody(t, build(resourceSpec{service("vllm"), contentSpans()})), nil)
	if w.Code != 200 || strings.Contains(w.Body.String(), marker) || strings.Contains(logs.String(), marker) {
		t.Errorf("answer %d %q", w.Code, w.Body)
	}
}

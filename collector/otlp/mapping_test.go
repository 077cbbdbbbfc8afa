package otlp

import (
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/deadlabour/deadlabour/estimator"
)

func TestMapVLLM(t *testing.T) {
	r, rec, _ := newReceiver(t, Options{})
	out := r.export(build(resourceSpec{service("vllm"), []spanSpec{vllmSpan("chatcmpl-abc123", 1), httpSpan(1)}}))
	if out.err != nil || out.rejected != 0 {
		t.Fatalf("outcome %+v", out)
	}
	got := rec.requests()
	if len(got) != 1 {
		t.Fatalf("%d requests, want 1", len(got))
	}
	q := got[0]
	want := estimator.Span{ID: "abc123", Key: q.Key, Upstream: "vllm-llama", Model: "llama-8b",
		Start: at(1), FirstToken: at(1.5), Scheduled: at(1.25), End: at(3), Status: "200",
		PromptTokens: 812, CompletionTokens: 150, CachedTokens: -1, ReasoningTokens: -1, UsageSource: estimator.UsageTrace,
		Devices: []string{"0", "1"}, Served: true}
	if !spanEqual(q.Span, want) {
		t.Errorf("span\n got %+v\nwant %+v", q.Span, want)
	}
	if q.RawID != "chatcmpl-abc123" || q.Dialect != DialectVLLM || q.Late || !strings.HasPrefix(q.Key, "otlp/") {
		t.Errorf("request %+v", q)
	}
	if s := r.Stats(); s.Received != 2 || s.Used != 1 || s.Ignored != 1 || s.Rejected != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestMapSGLang(t *testing.T) {
	r, rec, _ := newReceiver(t, Options{})
	thread := spanSpec{name: "Tokenizer (host:1234abcd | pid:77)", kind: ptrace.SpanKindInternal, start: at(1), end: at(2.6),
		attrs: map[string]any{"host_id": "1234abcd", "pid": 77, "thread_label": "Tokenizer"}}
	out := r.export(build(resourceSpec{service("sglang"), []spanSpec{sglangSpan("4f1c2a9be0d8", 1), thread}}))
	got := rec.requests()
	if out.rejected != 0 || len(got) != 1 {
		t.Fatalf("outcome %+v, %d requests", out, len(got))
	}
	// The prefill counts from the dispatch, queue included: no scheduled time.
	want := estimator.Span{ID: "4f1c2a9be0d8", Key: got[0].Key, Upstream: "sglang-qwen", Model: "Qwen/Qwen2.5-7B-Instruct",
		Start: at(1), FirstToken: at(1.4), End: at(2.6), Status: "200",
		PromptTokens: 300, CompletionTokens: 64, CachedTokens: 128, ReasoningTokens: -1, UsageSource: estimator.UsageTrace,
		Devices: []string{"2"}, Served: true}
	if !spanEqual(got[0].Span, want) || got[0].Dialect != DialectSGLang {
		t.Errorf("span\n got %+v\nwant %+v", got[0].Span, want)
	}
	// With time_in_queue, the scheduling time is known.
	sp := sglangSpan("4f1c2a9be0d9", 1)
	sp.attrs["gen_ai.latency.time_in_queue"] = 0.1
	r.export(build(resourceSpec{service("sglang"), []spanSpec{sp}}))
	if got := rec.requests(); len(got) != 2 || !got[1].Scheduled.Equal(at(1.1)) {
		t.Errorf("with time_in_queue: %+v", got[len(got)-1].Span)
	}
}

func TestMapGenAI(t *testing.T) {
	r, rec, _ := newReceiver(t, Options{})
	chat := spanSpec{name: "chat llama", kind: ptrace.SpanKindClient, start: at(1), end: at(2), attrs: map[string]any{
		"gen_ai.operation.name": "chat", "gen_ai.request.model": "llama", "gen_ai.response.model": "llama-3.1",
		"gen_ai.response.id": "chatcmpl-zz9", "gen_ai.usage.input_tokens": 40, "gen_ai.usage.output_tokens": 7,
		"gen_ai.usage.cache_read.input_tokens": 32}}
	embed := spanSpec{name: "embeddings e5", kind: ptrace.SpanKindServer, start: at(1), end: at(1.1), attrs: map[string]any{
		"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "e5", "gen_ai.response.id": "emb-1", "gen_ai.usage.input_tokens": 12}}
	internal := chat
	internal.kind = ptrace.SpanKindInternal // an agent framework's own span
	tool := chat
	tool.attrs = map[string]any{"gen_ai.operation.name": "execute_tool", "gen_ai.response.id": "x"}
	res := map[string]any{"service.name": "chat-gateway", "host.name": "gpu-node-01"}
	out := r.export(build(resourceSpec{res, []spanSpec{chat, embed, internal, tool}}))
	got := rec.requests()
	if out.rejected != 0 || len(got) != 2 {
		t.Fatalf("outcome %+v, %d requests", out, len(got))
	}
	want := estimator.Span{ID: "zz9", Key: got[0].Key, Upstream: "gateway", Model: "llama-3.1", Start: at(1), End: at(2), Status: "200",
		PromptTokens: 40, CompletionTokens: 7, CachedTokens: 32, ReasoningTokens: -1, UsageSource: estimator.UsageTrace,
		Devices: []string{"3"}, Served: true}
	if !spanEqual(got[0].Span, want) || got[0].Dialect != DialectGenAI {
		t.Errorf("span\n got %+v\nwant %+v", got[0].Span, want)
	}
	if e := got[1].Span; e.ID != "emb-1" || e.Model != "e5" || e.PromptTokens != 12 || e.CompletionTokens != -1 {
		t.Errorf("embeddings %+v", e)
	}
	// The same resource on another host matches no source: rejected.
	res["host.name"] = "gpu-node-02"
	if out := r.export(build(resourceSpec{res, []spanSpec{chat}})); out.rejected != 1 || !strings.Contains(out.message, "no source") {
		t.Errorf("other host: %+v", out)
	}
}

// Spans that cannot be used are rejected with their reasons; spans that
// are no inference request are ignored, whatever their source.
func TestMapRejects(t *testing.T) {
	r, rec, logs := newReceiver(t, Options{})
	noID := vllmSpan("", 1)
	delete(noID.attrs, "gen_ai.request.id")
	noTimes := vllmSpan("a", 1)
	noTimes.start = time.Time{}
	backwards := vllmSpan("b", 1)
	backwards.end = at(0.5)
	longID := vllmSpan(strings.Repeat("x", 300), 1)
	ctrl := vllmSpan("bad\nid", 1)
	out := r.export(build(
		resourceSpec{service("vllm"), []spanSpec{noID, noTimes, backwards, longID, ctrl, vllmSpan("ok", 1)}},
		resourceSpec{service("stranger"), []spanSpec{vllmSpan("c", 1), httpSpan(1)}},
		resourceSpec{map[string]any{}, []spanSpec{httpSpan(1)}},
	))
	if out.rejected != 6 || len(rec.requests()) != 1 {
		t.Fatalf("outcome %+v, %d used", out, len(rec.requests()))
	}
	for _, want := range []string{"6 inference span(s) rejected", "1 without a request id", "1 without a start or an end time",
		"1 ending before it starts", "2 with a request id longer than 256 bytes or not printable", "1 from a resource no source matches"} {
		if !strings.Contains(out.message, want) {
			t.Errorf("message %q lacks %q", out.message, want)
		}
	}
	if s := r.Stats(); s.Received != 9 || s.Used != 1 || s.Rejected != 6 || s.Ignored != 2 {
		t.Errorf("stats %+v", s)
	}
	if !strings.Contains(logs.String(), "service.name=stranger") {
		t.Errorf("no warning about the unknown service: %s", logs)
	}
	// Warned once.
	r.export(build(resourceSpec{service("stranger"), []spanSpec{vllmSpan("d", 1)}}))
	if n := strings.Count(logs.String(), "no source matches; they are rejected"); n != 1 {
		t.Errorf("%d warnings, want 1", n)
	}
}

func TestMapDetails(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*spanSpec)
		check func(estimator.Span) bool
	}{
		{"completion id prefix", func(s *spanSpec) { s.attrs["gen_ai.request.id"] = "cmpl-77" }, func(s estimator.Span) bool { return s.ID == "77" }},
		{"bare prefix kept", func(s *spanSpec) { s.attrs["gen_ai.request.id"] = "cmpl-" }, func(s estimator.Span) bool { return s.ID == "cmpl-" }},
		{"no model: the source's", func(s *spanSpec) { delete(s.attrs, "gen_ai.response.model") },
			func(s estimator.Span) bool { return s.Model == "meta-llama/Llama-3.1-8B-Instruct" }},
		{"status error", func(s *spanSpec) { s.err = true }, func(s estimator.Span) bool { return s.Status == StatusError }},
		{"http status", func(s *spanSpec) { s.err, s.attrs["http.response.status_code"] = true, 499 },
			func(s estimator.Span) bool { return s.Status == "499" }},
		{"no end: start + e2e", func(s *spanSpec) { s.end = time.Time{} }, func(s estimator.Span) bool { return s.End.Equal(at(3)) }},
		{"no tokens", func(s *spanSpec) {
			delete(s.attrs, "gen_ai.usage.prompt_tokens")
			s.attrs["gen_ai.usage.completion_tokens"] = "many"
		}, func(s estimator.Span) bool {
			return s.PromptTokens == -1 && s.CompletionTokens == -1 && s.UsageSource == estimator.UsageUnknown
		}},
		{"no prefill: start + queue", func(s *spanSpec) { delete(s.attrs, "gen_ai.latency.time_in_model_prefill") },
			func(s estimator.Span) bool { return s.Scheduled.Equal(at(1.2)) }},
		{"prefill longer than ttft: the start", func(s *spanSpec) { s.attrs["gen_ai.latency.time_in_model_prefill"] = 0.6 },
			func(s estimator.Span) bool { return s.Scheduled.Equal(at(1)) }},
		{"zero prefill: unknown", func(s *spanSpec) { s.attrs["gen_ai.latency.time_in_model_prefill"] = 0.0 },
			func(s estimator.Span) bool { return s.Scheduled.IsZero() }},
		{"ttft past the end: unknown", func(s *spanSpec) { s.attrs["gen_ai.latency.time_to_first_token"] = 5.0 },
			func(s estimator.Span) bool { return s.FirstToken.IsZero() && s.Scheduled.Equal(at(1.2)) }},
		{"negative latency ignored", func(s *spanSpec) { s.attrs["gen_ai.latency.time_to_first_token"] = -1.0 },
			func(s estimator.Span) bool { return s.FirstToken.IsZero() }},
		{"integer tokens as doubles", func(s *spanSpec) { s.attrs["gen_ai.usage.prompt_tokens"] = 812.0 },
			func(s estimator.Span) bool { return s.PromptTokens == 812 }},
		{"fractional tokens unknown", func(s *spanSpec) { s.attrs["gen_ai.usage.prompt_tokens"] = 8.5 },
			func(s estimator.Span) bool { return s.PromptTokens == -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, rec, _ := newReceiver(t, Options{})
			sp := vllmSpan("chatcmpl-x", 1)
			tc.edit(&sp)
			r.export(build(resourceSpec{service("vllm"), []spanSpec{sp}}))
			got := rec.requests()
			if len(got) != 1 || !tc.check(got[0].Span) {
				t.Errorf("%+v", got)
			}
		})
	}
}

func TestSourceMatch(t *testing.T) {
	r, rec, _ := newReceiver(t, Options{Sources: []Source{
		{ServiceName: "vllm", ServiceInstanceID: "b", Upstream: "vllm-b", Devices: []string{"1"}},
		{ServiceName: "vllm", Upstream: "vllm-any", Devices: []string{"0"}},
	}})
	for _, inst := range []string{"b", "a", ""} {
		res := service("vllm")
		if inst != "" {
			res["service.instance.id"] = inst
		}
		r.export(build(resourceSpec{res, []spanSpec{vllmSpan("x-"+inst, 1)}}))
	}
	got := rec.requests()
	if len(got) != 3 || got[0].Upstream != "vllm-b" || got[1].Upstream != "vllm-any" || got[2].Upstream != "vllm-any" {
		t.Errorf("%+v", got)
	}
}

func TestLate(t *testing.T) {
	r, rec, _ := newReceiver(t, Options{LateAfter: 5 * time.Second}) // now: 10 s
	r.export(build(resourceSpec{service("vllm"), []spanSpec{vllmSpan("old", 1), vllmSpan("new", 4)}}))
	got := rec.requests()
	if len(got) != 2 || !got[0].Late || got[1].Late || r.Stats().Late != 1 || !got[0].Received.Equal(at(10)) {
		t.Errorf("late: %+v %+v, stats %+v", got[0], got[1], r.Stats())
	}
}

func TestNewRefuses(t *testing.T) {
	rec := &recorder{}
	for _, o := range []Options{{}, {Sources: []Source{{ServiceName: "x"}}}, {Sources: []Source{{Upstream: "x"}}}} {
		if _, err := New(o, rec); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	if _, err := New(Options{Sources: testSources}, nil); err == nil {
		t.Error("no recorder: no error")
	}
}

func spanEqual(a, b estimator.Span) bool {
	if len(a.Devices) != len(b.Devices) {
		return false
	}
	for i := range a.Devices {
		if a.Devices[i] != b.Devices[i] {
			return false
		}
	}
	a.Devices, b.Devices = nil, nil
	return a.Start.Equal(b.Start) && a.End.Equal(b.End) && a.FirstToken.Equal(b.FirstToken) && a.Scheduled.Equal(b.Scheduled) &&
		eqRest(a, b)
}

func eqRest(a, b estimator.Span) bool {
	a.Start, a.End, a.FirstToken, a.Scheduled = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	b.Start, b.End, b.FirstToken, b.Scheduled = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return a.ID == b.ID && a.Key == b.Key && a.Upstream == b.Upstream && a.Model == b.Model && a.Tenant == b.Tenant &&
		a.Status == b.Status && a.PromptTokens == b.PromptTokens && a.CompletionTokens == b.CompletionTokens &&
		a.CachedTokens == b.CachedTokens && a.ReasoningTokens == b.ReasoningTokens && a.UsageSource == b.UsageSource &&
		a.Served == b.Served
}

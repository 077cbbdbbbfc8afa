package otlp

import (
	"bytes"
	"compress/gzip"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/deadlabour/deadlabour/internal/testlog"
)

// recorder keeps what it is given, or refuses with err.
type recorder struct {
	mu  sync.Mutex
	got []Request
	err error
}

func (r *recorder) Record(b []Request) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.got = append(r.got, b...)
	return nil
}

func (r *recorder) requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.got...)
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * 1e9)) }

var testSources = []Source{
	{ServiceName: "vllm", Upstream: "vllm-llama", Devices: []string{"0", "1"}, Model: "meta-llama/Llama-3.1-8B-Instruct"},
	{ServiceName: "sglang", Upstream: "sglang-qwen", Devices: []string{"2"}},
	{ServiceName: "chat-gateway", HostName: "gpu-node-01", Upstream: "gateway", Devices: []string{"3"}},
}

// newReceiver makes a receiver over testSources logging to a buffer.
func newReceiver(t testing.TB, opts Options) (*Receiver, *recorder, *testlog.Buffer) {
	t.Helper()
	if opts.Sources == nil {
		opts.Sources = testSources
	}
	var logs testlog.Buffer
	opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if opts.Now == nil {
		opts.Now = func() time.Time { return at(10) }
	}
	rec := &recorder{}
	r, err := New(opts, rec)
	if err != nil {
		t.Fatal(err)
	}
	return r, rec, &logs
}

// spanSpec is one span to put in a test export.
type spanSpec struct {
	name       string
	kind       ptrace.SpanKind
	start, end time.Time
	attrs      map[string]any
	err        bool // status ERROR
	events     map[string]map[string]any
}

// resourceSpec is one resource and its spans.
type resourceSpec struct {
	attrs map[string]any
	spans []spanSpec
}

func putAll(m pcommon.Map, attrs map[string]any) {
	for k, v := range attrs {
		switch v := v.(type) {
		case string:
			m.PutStr(k, v)
		case int:
			m.PutInt(k, int64(v))
		case float64:
			m.PutDouble(k, v)
		case bool:
			m.PutBool(k, v)
		default:
			panic("putAll: unknown type")
		}
	}
}

func build(resources ...resourceSpec) ptrace.Traces {
	td := ptrace.NewTraces()
	for ri, rsSpec := range resources {
		rs := td.ResourceSpans().AppendEmpty()
		putAll(rs.Resource().Attributes(), rsSpec.attrs)
		ss := rs.ScopeSpans().AppendEmpty()
		for i, s := range rsSpec.spans {
			sp := ss.Spans().AppendEmpty()
			sp.SetName(s.name)
			sp.SetKind(s.kind)
			sp.SetTraceID(pcommon.TraceID{1, byte(ri), byte(i)})
			sp.SetSpanID(pcommon.SpanID{2, byte(ri), byte(i)})
			if !s.start.IsZero() {
				sp.SetStartTimestamp(pcommon.NewTimestampFromTime(s.start))
			}
			if !s.end.IsZero() {
				sp.SetEndTimestamp(pcommon.NewTimestampFromTime(s.end))
			}
			putAll(sp.Attributes(), s.attrs)
			if s.err {
				sp.Status().SetCode(ptrace.StatusCodeError)
			}
			for name, attrs := range s.events {
				ev := sp.Events().AppendEmpty()
				ev.SetName(name)
				putAll(ev.Attributes(), attrs)
			}
		}
	}
	return td
}

func service(name string) map[string]any { return map[string]any{"service.name": name} }

// vllmSpan is an llm_request span as vLLM's output processor makes it:
// arrival at start, 0.2 s queued (from 0.05 s after arrival), prefill
// 0.25 s, first token at 0.5 s, decode 1.5 s, end at 2 s.
func vllmSpan(id string, start float64) spanSpec {
	return spanSpec{name: "llm_request", kind: ptrace.SpanKindServer, start: at(start), end: at(start + 2),
		attrs: map[string]any{
			"gen_ai.request.id":                      id,
			"gen_ai.response.model":                  "llama-8b",
			"gen_ai.request.max_tokens":              256,
			"gen_ai.request.temperature":             0.7,
			"gen_ai.request.top_p":                   0.9,
			"gen_ai.request.n":                       1,
			"gen_ai.usage.prompt_tokens":             812,
			"gen_ai.usage.completion_tokens":         150,
			"gen_ai.latency.time_in_queue":           0.2,
			"gen_ai.latency.time_to_first_token":     0.5,
			"gen_ai.latency.e2e":                     2.0,
			"gen_ai.latency.time_in_model_prefill":   0.25,
			"gen_ai.latency.time_in_model_decode":    1.5,
			"gen_ai.latency.time_in_model_inference": 1.75,
		}}
}

// sglangSpan is SGLang's root span of a request (unified role): first
// token at 0.4 s, end at 1.6 s; prefill counted from dispatch.
func sglangSpan(rid string, start float64) spanSpec {
	return spanSpec{name: " Req " + rid[:8], kind: ptrace.SpanKindInternal, start: at(start), end: at(start + 1.6),
		attrs: map[string]any{
			"rid":                                    rid,
			"module":                                 "sglang::request",
			"gen_ai.request.id":                      rid,
			"gen_ai.usage.prompt_tokens":             300,
			"gen_ai.usage.completion_tokens":         64,
			"gen_ai.usage.cached_tokens":             128,
			"gen_ai.request.max_tokens":              64,
			"gen_ai.response.model":                  "Qwen/Qwen2.5-7B-Instruct",
			"gen_ai.response.finish_reasons":         `["length"]`,
			"gen_ai.latency.time_to_first_token":     0.4,
			"gen_ai.latency.e2e":                     1.6,
			"gen_ai.latency.time_in_model_decode":    1.2,
			"gen_ai.latency.time_in_model_inference": 1.55,
			"gen_ai.latency.time_in_model_prefill":   0.35,
		}}
}

// httpSpan is another instrumentation's HTTP server span: not an
// inference request.
func httpSpan(start float64) spanSpec {
	return spanSpec{name: "POST /v1/chat/completions", kind: ptrace.SpanKindServer, start: at(start), end: at(start + 2),
		attrs: map[string]any{"http.request.method": "POST", "http.route": "/v1/chat/completions", "http.response.status_code": 200}}
}

func protoBody(t testing.TB, td ptrace.Traces) []byte {
	t.Helper()
	b, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func jsonBody(t testing.TB, td ptrace.Traces) []byte {
	t.Helper()
	b, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

// post sends a body to the handler and returns the answer.
func post(r *Receiver, body []byte, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, TracesPath, bytes.NewReader(body))
	req.Header.Set("Content-Type", contentProto)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	r.Handler().ServeHTTP(w, req)
	return w
}

// exportResponse decodes a 200 answer.
func exportResponse(t testing.TB, w *httptest.ResponseRecorder) ptraceotlp.ExportResponse {
	t.Helper()
	resp := ptraceotlp.NewExportResponse()
	var err error
	if w.Header().Get("Content-Type") == contentJSON {
		err = resp.UnmarshalJSON(w.Body.Bytes())
	} else {
		err = resp.UnmarshalProto(w.Body.Bytes())
	}
	if err != nil {
		t.Fatalf("answer %d does not decode: %v", w.Code, err)
	}
	return resp
}

var errBroken = errors.New("broken")

package daemon

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/engine"
)

// otlpDaemon is a daemon made (not run) with an OTLP/HTTP listener.
func otlpDaemon(t *testing.T, httpListen string) (*Daemon, error) {
	t.Helper()
	cfg, err := config.Parse("d.yaml", []byte(fmt.Sprintf(`node: t
admin: {listen: ""}
spool: {dir: %s}
models: [{name: llama-8b}]
upstreams: [{name: traced, listen: "127.0.0.1:0", target: "http://127.0.0.1:1", gpus: [0]}]
otlp:
  http_listen: %q
  sources: [{service_name: vllm, upstream: traced, model: llama-8b}]
`, t.TempDir(), httpListen)), -1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	d, err := New(ctx, cfg, "h100:1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		// Not run: what New opened is closed here.
		t.Cleanup(func() {
			d.closeListeners()
			d.closeOTLP()
			if d.gpu != nil {
				d.gpu.Close()
			}
		})
	}
	return d, err
}

// An OTLP port already in use fails the start, naming the setting.
func TestOTLPPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = otlpDaemon(t, ln.Addr().String())
	if err == nil {
		t.Fatal("started with the OTLP port in use")
	}
	if msg := err.Error(); !strings.Contains(msg, "otlp.http_listen") || !strings.Contains(msg, ln.Addr().String()) {
		t.Errorf("error %q; want one naming otlp.http_listen and the address", msg)
	}
}

// otlpBody is an export request: n vLLM request spans and one span of
// another instrumentation (not an inference request).
func otlpBody(t *testing.T, n int, withID bool) []byte {
	t.Helper()
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "vllm")
	ss := rs.ScopeSpans().AppendEmpty()
	now := time.Now()
	for i := range n + 1 {
		sp := ss.Spans().AppendEmpty()
		sp.SetTraceID(pcommon.TraceID{1, byte(i)})
		sp.SetSpanID(pcommon.SpanID{2, byte(i)})
		sp.SetKind(ptrace.SpanKindServer)
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(-2 * time.Second)))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(now))
		a := sp.Attributes()
		if i == n {
			sp.SetName("POST /v1/chat/completions")
			a.PutStr("http.request.method", "POST")
			continue
		}
		sp.SetName("llm_request")
		if withID {
			a.PutStr("gen_ai.request.id", fmt.Sprintf("q-%d", i))
		}
		a.PutInt("gen_ai.usage.prompt_tokens", 100)
		a.PutInt("gen_ai.usage.completion_tokens", 20)
		a.PutDouble("gen_ai.latency.time_in_queue", 0.1)
		a.PutDouble("gen_ai.latency.time_to_first_token", 0.5)
		a.PutDouble("gen_ai.latency.e2e", 2)
	}
	b, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// otlpCounters are the daemon's OTLP counters as /metrics has them.
func otlpCounters(t *testing.T, m prometheus.Collector) map[string]float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 32)
	m.Collect(ch)
	close(ch)
	out := map[string]float64{}
	for x := range ch {
		var pb dto.Metric
		if err := x.Write(&pb); err != nil {
			t.Fatal(err)
		}
		name := x.Desc().String()
		name = name[strings.Index(name, `"`)+1:]
		name = name[:strings.Index(name, `"`)]
		out[name+"{"+pb.GetLabel()[0].GetValue()+"}"] = pb.GetCounter().GetValue()
	}
	return out
}

// Through the daemon's receiver: a full trace queue answers 429 with
// Retry-After and counts the batch dropped; with room the spans are used,
// the other instrumentation's ignored, and those without a request id
// rejected (the other instrumentation's spans are ignored in every batch,
// the refused one too); deadlabour_otlp_spans_total and _exports_total
// move with each.
func TestOTLPQueueFullAndCounters(t *testing.T) {
	d, err := otlpDaemon(t, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.otlp.traces.Cap = 1
	m := &otlpMetrics{recv: d.otlp.recv, engine: func() *engine.Engine { return nil }}
	post := func(body []byte) *http.Response {
		req := httptest.NewRequest(http.MethodPost, "/v1/traces", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-protobuf")
		w := httptest.NewRecorder()
		d.otlp.recv.Handler().ServeHTTP(w, req)
		return w.Result()
	}
	if r := post(otlpBody(t, 2, true)); r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Fatalf("queue of 1, 2 spans: status %d, Retry-After %q; want 429 with Retry-After", r.StatusCode, r.Header.Get("Retry-After"))
	}
	c := otlpCounters(t, m)
	if c["deadlabour_otlp_spans_total{dropped}"] != 2 || c["deadlabour_otlp_spans_total{used}"] != 0 || c["deadlabour_otlp_exports_total{refused}"] != 1 {
		t.Errorf("after a full queue: %v; want 2 dropped, none used, 1 export refused", c)
	}
	d.otlp.traces.Cap = 0
	if r := post(otlpBody(t, 2, true)); r.StatusCode != http.StatusOK {
		t.Fatalf("with room: status %d", r.StatusCode)
	}
	if r := post(otlpBody(t, 1, false)); r.StatusCode != http.StatusOK {
		t.Fatalf("a span without a request id: status %d, want 200 (partial success)", r.StatusCode)
	}
	c = otlpCounters(t, m)
	for k, want := range map[string]float64{"received": 8, "used": 2, "ignored": 3, "rejected": 1, "dropped": 2} {
		if got := c["deadlabour_otlp_spans_total{"+k+"}"]; got != want {
			t.Errorf("deadlabour_otlp_spans_total{outcome=%q} = %v, want %v (%v)", k, got, want, c)
		}
	}
	if c["deadlabour_otlp_exports_total{ok}"] != 2 {
		t.Errorf("exports ok %v, want 2", c["deadlabour_otlp_exports_total{ok}"])
	}
	if d.otlp.traces.Len() != 2 {
		t.Errorf("%d spans queued for the engine, want 2", d.otlp.traces.Len())
	}
}

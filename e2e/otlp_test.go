package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/influxtest"
)

type spanCollector struct{ spans []sdktrace.ReadOnlySpan }

func (c *spanCollector) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (c *spanCollector) OnEnd(s sdktrace.ReadOnlySpan)                   { c.spans = append(c.spans, s) }
func (c *spanCollector) Shutdown(context.Context) error                  { return nil }
func (c *spanCollector) ForceFlush(context.Context) error                { return nil }

// exportVLLM exports vLLM-shaped llm_request spans with the official SDK.
func exportVLLM(t *testing.T, exp sdktrace.SpanExporter, reqs []tracedReq) {
	t.Helper()
	tp := sdktrace.NewTracerProvider(sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "vllm-e2e"))))
	c := &spanCollector{}
	tp.RegisterSpanProcessor(c)
	for _, r := range reqs {
		e2e := r.end.Sub(r.start).Seconds()
		_, sp := tp.Tracer("vllm").Start(context.Background(), "llm_request", trace.WithTimestamp(r.start), trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("gen_ai.request.id", "chatcmpl-"+r.id), attribute.Int("gen_ai.usage.prompt_tokens", 812),
				attribute.Int("gen_ai.usage.completion_tokens", 150), attribute.Float64("gen_ai.latency.time_in_queue", e2e*0.3),
				attribute.Float64("gen_ai.latency.time_to_first_token", e2e*0.5), attribute.Float64("gen_ai.latency.e2e", e2e)))
		sp.End(trace.WithTimestamp(r.end))
	}
	if err := exp.ExportSpans(context.Background(), c.spans); err != nil {
		t.Fatal(err)
	}
	_ = tp.Shutdown(context.Background())
	_ = exp.Shutdown(context.Background())
}

type tracedReq struct {
	id         string
	start, end time.Time
}

// A traced upstream behind the proxy on simulated H100s: each proxied
// request is one record (the proxy's status and tenant, the trace's
// tokens, usage_source trace), requests only the trace saw are recorded
// too, over OTLP/HTTP and OTLP/gRPC, and every joule is in a record or
// idle.
func TestOTLPTracesMergeWithTheProxy(t *testing.T) {
	influx := influxtest.Start(t)
	up, err := fakeupstream.Start(context.Background(), fakeupstream.Options{TokenDelay: 2 * time.Millisecond, DefaultMaxTokens: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	cfg := fmt.Sprintf(`node: e2e
gpu: {interval: 50ms, report_interval: 1s}
admin: {listen: ""}
influx: {url: %s, bucket: %s, flush_interval: 100ms}
spool: {dir: %s}
models: [{name: llama-8b}]
upstreams:
  - {name: traced, listen: "127.0.0.1:0", target: %s, gpus: [0, 1]}
otlp:
  http_listen: "127.0.0.1:0"
  grpc_listen: "127.0.0.1:0"
  max_delay: 2s
  sources: [{service_name: vllm-e2e, upstream: traced, model: llama-8b}]
`, influx.URL(), influx.Bucket(), t.TempDir(), up.URL())
	d := startDaemon(t, cfg, "h100:2")
	httpAddr, grpcAddr := d.OTLPAddrs()
	if httpAddr == "" || grpcAddr == "" {
		t.Fatalf("OTLP listeners %q %q", httpAddr, grpcAddr)
	}
	var proxied []tracedReq
	for i := range 6 {
		body, _ := json.Marshal(map[string]any{"model": "llama-8b", "max_tokens": 8, "messages": []map[string]string{{"role": "user", "content": "hi"}}})
		r := tracedReq{id: fmt.Sprintf("otl-%02d", i), start: time.Now()}
		if status, _ := call(t, d.proxyURL("traced"), body, r.id); status != 200 {
			t.Fatalf("%s: status %d", r.id, status)
		}
		r.end = time.Now()
		proxied = append(proxied, r)
	}
	now := time.Now()
	alone := []tracedReq{{"only-a", now.Add(-300 * time.Millisecond), now.Add(-100 * time.Millisecond)}, {"only-b", now.Add(-200 * time.Millisecond), now.Add(-50 * time.Millisecond)}}
	ctx := context.Background()
	hexp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(httpAddr), otlptracehttp.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	gexp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(grpcAddr), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	exportVLLM(t, hexp, append(proxied[:3:3], alone[0]))
	exportVLLM(t, gexp, append(proxied[3:], alone[1]))
	time.Sleep(300 * time.Millisecond)
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}

	rows := influx.Rows(t, `SELECT request_id, prompt_tokens, completion_tokens, usage_source, status, tenant, history_truncated FROM deadlabour_request`)
	if len(rows) != len(proxied)+len(alone) {
		t.Fatalf("%d records, want %d: %v", len(rows), len(proxied)+len(alone), rows)
	}
	for _, r := range rows {
		id, _ := r.String("request_id")
		p, _ := r.Int("prompt_tokens")
		c, _ := r.Int("completion_tokens")
		if p != 812 || c != 150 || r["usage_source"] != "trace" {
			t.Errorf("%s: %d + %d tokens, usage_source %v; want the trace's 812 + 150", id, p, c, r["usage_source"])
		}
		if id[:3] == "otl" && (r["status"] != "200" || r["tenant"] == nil || r["tenant"] == "") {
			t.Errorf("%s: status %v tenant %v, want the proxy's", id, r["status"], r["tenant"])
		}
	}
	// Conservation on the two GPUs.
	var measured float64
	for i := range 2 {
		first, last, _ := d.Simulation().Device(i).CounterReads()
		measured += float64(last-first) / 1000
	}
	rec := influx.Rows(t, `SELECT sum(gpu_energy_j) AS e FROM deadlabour_request`)
	idle := influx.Rows(t, `SELECT sum(energy_j) AS e FROM deadlabour_idle WHERE device = '0' OR device = '1'`)
	a, _ := rec[0].Float("e")
	b, _ := idle[0].Float("e")
	if math.Abs(a+b-measured) > 1e-9*measured {
		t.Errorf("records %.9g + idle %.9g J = %.9g, counters advanced %.9g J", a, b, a+b, measured)
	}
}

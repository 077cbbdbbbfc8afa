package e2e

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/influxtest"
)

// Queue time is not charged: two requests of the same wall time, tokens
// and phases but for their queue, each alone on its GPU (both idle at the
// same power). The one that waited 1.5 s of its 2 s in the server's queue
// is charged only for the 0.5 s it was on the GPU: a quarter of the other.
func TestOTLPQueueTimeUncharged(t *testing.T) {
	influx := influxtest.Start(t)
	up, err := fakeupstream.Start(context.Background(), fakeupstream.Options{})
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
  - {name: unqueued, listen: "127.0.0.1:0", target: %s, gpus: [0]}
  - {name: queued, listen: "127.0.0.1:0", target: %s, gpus: [1]}
otlp:
  http_listen: "127.0.0.1:0"
  grpc_listen: ""
  max_delay: 3s
  sources:
    - {service_name: vllm-a, upstream: unqueued, model: llama-8b}
    - {service_name: vllm-b, upstream: queued, model: llama-8b}
`, influx.URL(), influx.Bucket(), t.TempDir(), up.URL(), up.URL())
	d := startDaemon(t, cfg, "h100:2")
	httpAddr, _ := d.OTLPAddrs()
	time.Sleep(2500 * time.Millisecond) // meter intervals before the requests
	end := time.Now().Add(-200 * time.Millisecond)
	start := end.Add(-2 * time.Second)
	for _, sp := range []struct {
		service, id string
		queue       float64
	}{{"vllm-a", "plain", 0}, {"vllm-b", "waited", 1.5}} {
		exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpoint(httpAddr), otlptracehttp.WithInsecure())
		if err != nil {
			t.Fatal(err)
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", sp.service))))
		c := &spanCollector{}
		tp.RegisterSpanProcessor(c)
		// Prefill 0.1 s after the queue, then decoding to the end.
		_, s := tp.Tracer("vllm").Start(context.Background(), "llm_request", trace.WithTimestamp(start), trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("gen_ai.request.id", "chatcmpl-"+sp.id), attribute.Int("gen_ai.usage.prompt_tokens", 100),
				attribute.Int("gen_ai.usage.completion_tokens", 40), attribute.Float64("gen_ai.latency.time_in_queue", sp.queue),
				attribute.Float64("gen_ai.latency.time_in_model_prefill", 0.1), attribute.Float64("gen_ai.latency.time_to_first_token", sp.queue+0.1),
				attribute.Float64("gen_ai.latency.e2e", 2)))
		s.End(trace.WithTimestamp(end))
		if err := exp.ExportSpans(context.Background(), c.spans); err != nil {
			t.Fatal(err)
		}
		_ = tp.Shutdown(context.Background())
		_ = exp.Shutdown(context.Background())
	}
	time.Sleep(500 * time.Millisecond)
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, r := range influx.Rows(t, `SELECT request_id, gpu_energy_j, history_truncated FROM deadlabour_request`) {
		id, _ := r.String("request_id")
		got[id], _ = r.Float("gpu_energy_j")
		if r["history_truncated"] == true {
			t.Errorf("%s: truncated, but it came within otlp.max_delay", id)
		}
	}
	plain, waited := got["plain"], got["waited"]
	if plain <= 0 || waited <= 0 {
		t.Fatalf("records %v, want both charged", got)
	}
	if ratio := waited / plain; math.Abs(ratio-0.25) > 0.05 {
		t.Errorf("the queued request is charged %.4g J, the other %.4g J: ratio %.3f, want 0.25 (its 0.5 s on the GPU of 2 s)", waited, plain, ratio)
	}
}

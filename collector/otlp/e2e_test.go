package otlp

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/deadlabour/deadlabour/estimator"
)

// serve runs the receiver's HTTP and gRPC servers on free loopback ports.
func serve(t *testing.T, r *Receiver) (httpAddr, grpcAddr string) {
	t.Helper()
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: r.Handler(), ReadHeaderTimeout: 5 * time.Second}
	gs := grpc.NewServer(r.GRPCServerOptions()...)
	r.RegisterGRPC(gs)
	go func() { _ = hs.Serve(hl) }()
	go func() { _ = gs.Serve(gl) }()
	t.Cleanup(func() {
		gs.Stop()
		_ = hs.Close()
	})
	return hl.Addr().String(), gl.Addr().String()
}

// exporter is an official OpenTelemetry exporter to the receiver.
func exporter(t *testing.T, protocol, addr, token string) sdktrace.SpanExporter {
	t.Helper()
	ctx := context.Background()
	headers := map[string]string{}
	if token != "" {
		headers["Authorization"] = "Bearer " + token
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch protocol {
	case "http":
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(addr), otlptracehttp.WithInsecure(),
			otlptracehttp.WithCompression(otlptracehttp.GzipCompression), otlptracehttp.WithHeaders(headers),
			otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}))
	case "grpc":
		exp, err = otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(addr), otlptracegrpc.WithInsecure(),
			otlptracegrpc.WithCompressor("gzip"), otlptracegrpc.WithHeaders(headers),
			otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}))
	}
	if err != nil {
		t.Fatal(err)
	}
	return exp
}

// emit exports spans as the SDK does, with the resource service.name.
func emit(t *testing.T, exp sdktrace.SpanExporter, serviceName string, specs ...spanSpec) error {
	t.Helper()
	tp := sdktrace.NewTracerProvider(sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", serviceName))))
	tracer := tp.Tracer("test")
	collect := &collector{}
	tp.RegisterSpanProcessor(collect)
	for _, s := range specs {
		kind := map[int32]trace.SpanKind{1: trace.SpanKindInternal, 2: trace.SpanKindServer, 3: trace.SpanKindClient}[int32(s.kind)]
		_, sp := tracer.Start(context.Background(), s.name, trace.WithTimestamp(s.start), trace.WithSpanKind(kind),
			trace.WithAttributes(sdkAttrs(s.attrs)...))
		for name, attrs := range s.events {
			sp.AddEvent(name, trace.WithAttributes(sdkAttrs(attrs)...))
		}
		sp.End(trace.WithTimestamp(s.end))
	}
	err := exp.ExportSpans(context.Background(), collect.spans)
	_ = tp.Shutdown(context.Background())
	return err
}

type collector struct{ spans []sdktrace.ReadOnlySpan }

func (c *collector) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (c *collector) OnEnd(s sdktrace.ReadOnlySpan)                   { c.spans = append(c.spans, s) }
func (c *collector) Shutdown(context.Context) error                  { return nil }
func (c *collector) ForceFlush(context.Context) error                { return nil }

func sdkAttrs(m map[string]any) []attribute.KeyValue {
	var kv []attribute.KeyValue
	for k, v := range m {
		switch v := v.(type) {
		case string:
			kv = append(kv, attribute.String(k, v))
		case int:
			kv = append(kv, attribute.Int(k, v))
		case float64:
			kv = append(kv, attribute.Float64(k, v))
		case bool:
			kv = append(kv, attribute.Bool(k, v))
		}
	}
	return kv
}

// The official exporters, over HTTP (protobuf, gzip) and gRPC (gzip),
// with spans shaped as vLLM's and SGLang's: one request each, exact.
func TestEndToEnd(t *testing.T) {
	for _, protocol := range []string{"http", "grpc"} {
		t.Run(protocol, func(t *testing.T) {
			r, rec, _ := newReceiver(t, Options{Token: "tok"})
			httpAddr, grpcAddr := serve(t, r)
			addr := map[string]string{"http": httpAddr, "grpc": grpcAddr}[protocol]
			exp := exporter(t, protocol, addr, "tok")
			defer func() { _ = exp.Shutdown(context.Background()) }()
			if err := emit(t, exp, "vllm", vllmSpan("chatcmpl-e2e-"+protocol, 1), httpSpan(1)); err != nil {
				t.Fatal(err)
			}
			thread := spanSpec{name: "Scheduler [TP 0]", kind: 1, start: at(2), end: at(3), attrs: map[string]any{"tp_rank": 0}}
			if err := emit(t, exp, "sglang", sglangSpan("0123456789abcdef", 2), thread); err != nil {
				t.Fatal(err)
			}
			got := rec.requests()
			if len(got) != 2 {
				t.Fatalf("%d requests, want 2: %+v", len(got), got)
			}
			v, s := got[0], got[1]
			wantV := estimator.Span{ID: "e2e-" + protocol, Key: v.Key, Upstream: "vllm-llama", Model: "llama-8b",
				Start: at(1), Scheduled: at(1.25), FirstToken: at(1.5), End: at(3), Status: "200",
				PromptTokens: 812, CompletionTokens: 150, CachedTokens: -1, ReasoningTokens: -1, UsageSource: estimator.UsageTrace,
				Devices: []string{"0", "1"}, Served: true}
			if !spanEqual(v.Span, wantV) || v.RawID != "chatcmpl-e2e-"+protocol || len(v.TraceID) != 32 || len(v.SpanID) != 16 {
				t.Errorf("vLLM\n got %+v\nwant %+v", v, wantV)
			}
			wantS := estimator.Span{ID: "0123456789abcdef", Key: s.Key, Upstream: "sglang-qwen", Model: "Qwen/Qwen2.5-7B-Instruct",
				Start: at(2), FirstToken: at(2.4), End: at(3.6), Status: "200",
				PromptTokens: 300, CompletionTokens: 64, CachedTokens: 128, ReasoningTokens: -1, UsageSource: estimator.UsageTrace,
				Devices: []string{"2"}, Served: true}
			if !spanEqual(s.Span, wantS) {
				t.Errorf("SGLang\n got %+v\nwant %+v", s, wantS)
			}
			if st := r.Stats(); st.Exports != 2 || st.Received != 4 || st.Used != 2 || st.Ignored != 2 || st.Rejected != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestEndToEndRefusals(t *testing.T) {
	for _, protocol := range []string{"http", "grpc"} {
		t.Run(protocol, func(t *testing.T) {
			r, rec, _ := newReceiver(t, Options{Token: "tok"})
			httpAddr, grpcAddr := serve(t, r)
			addr := map[string]string{"http": httpAddr, "grpc": grpcAddr}[protocol]
			wrong := exporter(t, protocol, addr, "nope")
			err := emit(t, wrong, "vllm", vllmSpan("a", 1))
			if err == nil || (protocol == "grpc" && status.Code(errors.Unwrap(err)) != codes.Unauthenticated && !strings.Contains(err.Error(), "Unauthenticated")) ||
				(protocol == "http" && !strings.Contains(err.Error(), "401")) {
				t.Errorf("wrong token: %v", err)
			}
			rec.err = &FullError{RetryAfter: 3 * time.Second}
			right := exporter(t, protocol, addr, "tok")
			err = emit(t, right, "vllm", vllmSpan("b", 1))
			if err == nil || (protocol == "http" && !strings.Contains(err.Error(), "retry-able")) ||
				(protocol == "grpc" && !strings.Contains(err.Error(), "Unavailable")) {
				t.Errorf("full: %v", err)
			}
			rec.err = nil
			if err := emit(t, right, "vllm", vllmSpan("c", 1)); err != nil || len(rec.requests()) != 1 {
				t.Errorf("after: %v, %d", err, len(rec.requests()))
			}
		})
	}
}

// The gRPC answers in detail: partial success, RetryInfo.
func TestGRPCAnswers(t *testing.T) {
	r, rec, _ := newReceiver(t, Options{})
	g := &grpcServer{r: r}
	bad := vllmSpan("", 1)
	delete(bad.attrs, "gen_ai.request.id")
	req := ptraceotlp.NewExportRequestFromTraces(build(resourceSpec{service("vllm"), []spanSpec{vllmSpan("a", 1), bad}}))
	resp, err := g.Export(context.Background(), req)
	if err != nil || resp.PartialSuccess().RejectedSpans() != 1 || !strings.Contains(resp.PartialSuccess().ErrorMessage(), "without a request id") {
		t.Errorf("partial success: %v %d %q", err, resp.PartialSuccess().RejectedSpans(), resp.PartialSuccess().ErrorMessage())
	}
	rec.err = &FullError{RetryAfter: 2 * time.Second}
	_, err = g.Export(context.Background(), req)
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || len(st.Details()) != 1 {
		t.Fatalf("full: %v", err)
	}
	if ri, ok := st.Details()[0].(*errdetails.RetryInfo); !ok || ri.GetRetryDelay().AsDuration() != 2*time.Second {
		t.Errorf("retry info %v", st.Details()[0])
	}
	rec.err = errBroken
	if _, err := g.Export(context.Background(), req); status.Code(err) != codes.Unavailable {
		t.Errorf("broken: %v", err)
	}
}

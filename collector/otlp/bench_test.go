package otlp

import (
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

type discard struct{}

func (discard) Record([]Request) error { return nil }

// BenchmarkIngest decodes and maps OTLP/HTTP protobuf bodies of 512 spans
// (vLLM's llm_request shape, BatchSpanProcessor's default batch) as the
// handler does, without the network: spans/s is per core.
func BenchmarkIngest(b *testing.B) {
	const n = 512
	specs := make([]spanSpec, n)
	for i := range specs {
		specs[i] = vllmSpan(fmt.Sprintf("chatcmpl-%08x", i), float64(i)/100)
	}
	body := protoBody(b, build(resourceSpec{service("vllm"), specs}))
	r, err := New(Options{Sources: testSources, Now: func() time.Time { return at(10) }}, discard{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		er := ptraceotlp.NewExportRequest()
		if err := er.UnmarshalProto(body); err != nil {
			b.Fatal(err)
		}
		if out := r.export(er.Traces()); out.err != nil || out.rejected != 0 {
			b.Fatal(out)
		}
	}
	b.ReportMetric(float64(b.N)*n/b.Elapsed().Seconds(), "spans/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/span")
}

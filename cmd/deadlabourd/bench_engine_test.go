package main

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/deadlabour/deadlabour/estimator"
)

// BenchmarkEngineRecord is the daemon's CPU per request on the record side,
// without HTTP: the span queue, the ledger (begin, end, settle), the record's
// point, its line protocol and the spool commit with fsync. The daemon runs
// in-process on one simulated H100 with the default timings and no InfluxDB;
// the benchmark hands it the begin and end of b.N finished requests, as the
// proxy does, and waits until every record was queued for the spool and a
// commit passed. Reported: the process's CPU (user and system, all
// goroutines) per request.
//
//	go test ./cmd/deadlabourd -run '^$' -bench EngineRecord -benchtime 100000x
func BenchmarkEngineRecord(b *testing.B) {
	d := startDaemon(b, fmt.Sprintf(`node: bench
admin:
  listen: ""
spool:
  dir: %s
upstreams:
  - name: up
    listen: 127.0.0.1:0
    target: http://127.0.0.1:9
    gpus: [0]
`, b.TempDir()), "h100:1")
	time.Sleep(300 * time.Millisecond) // the first polls
	recorded := func() float64 {
		var m dto.Metric
		if err := d.obs.requests.WithLabelValues("up", "200").Write(&m); err != nil {
			b.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	devices := []string{"0"}
	b.ReportAllocs()
	cpu := processCPU()
	n := 0
	for b.Loop() {
		id := fmt.Sprintf("bench-%09d", n)
		n++
		start := nowFunc()
		d.queue.Begin(id, "up", start, devices)
		d.queue.End(estimator.Span{ID: id, Upstream: "up", Model: "bench", Tenant: "0123456789abcdef",
			Start: start, End: start.Add(time.Millisecond), Devices: devices, Status: "200", Served: true,
			PromptTokens: 13, CompletionTokens: 16, CachedTokens: -1, ReasoningTokens: -1,
			UsageSource: estimator.UsageReported})
		if n%2000 == 0 {
			time.Sleep(10 * time.Millisecond) // a pace the engine keeps up with, as under load
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for recorded() < float64(n) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := recorded(); got < float64(n) {
		b.Fatalf("%v of %d records made", got, n)
	}
	time.Sleep(2 * d.cfg.Spool.FsyncInterval.D()) // one commit at least
	b.ReportMetric(float64(processCPU()-cpu)/float64(time.Microsecond)/float64(n), "cpu_us/record")
}

// processCPU is the user and system CPU this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

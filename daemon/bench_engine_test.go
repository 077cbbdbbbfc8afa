package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/engine"
	"github.com/deadlabour/deadlabour/estimator"
)

// BenchmarkEngineRecord is the daemon's work per request on the record
// side, without HTTP: the span queue, the ledger (begin, end, settle), the
// record's point, its line protocol and the spool. The daemon is built as
// `run` builds it (one simulated H100, default timings, no InfluxDB), but
// its poll loop is driven here on a clock of its own: 1,000 requests end
// in every 100 ms poll, the GPU reports about 40 J per poll, and each op is one
// request begun and ended as the proxy does, with its share of a poll.
// ns/op is the engine's own time (deterministic); cpu_us/record is the
// whole process's CPU per record, the spool's commits with fsync (in the
// background, every 200 ms) and the GC included.
//
//	go test ./daemon -run '^$' -bench EngineRecord -count 6
func BenchmarkEngineRecord(b *testing.B) {
	cfg, err := config.Parse("bench.yaml", []byte(fmt.Sprintf(`node: bench
admin:
  listen: ""
spool:
  dir: %s
upstreams:
  - name: up
    listen: 127.0.0.1:0
    target: http://127.0.0.1:9
    gpus: [0]
`, b.TempDir())), -1)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, err := New(ctx, cfg, "h100:1", slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	d.closeListeners()
	defer d.gpu.Close()
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		d.writer.Run(ctx)
	}()
	defer func() {
		cancel()
		<-writerDone
		d.writer.Close(context.Background())
	}()

	const perPoll = 1000
	opts := d.engine.Options
	opts.GPU, opts.Host, opts.Alive = &benchMeter{device: "0", joules: 40}, hostBenchMeter{&benchMeter{device: estimator.HostDevice, joules: 10}}, nil
	e := engine.New(opts)
	now := time.Unix(1_800_000_000, 0)
	e.Tick(ctx, now)
	devices := []string{"0"}
	ids := make([]string, 20*perPoll) // reused once recorded, 20 polls later
	for i := range ids {
		ids[i] = fmt.Sprintf("bench-%06d", i)
	}
	recorded := d.writer.Stats().Enqueued
	b.ReportAllocs()
	cpu := processCPU()
	n := 0
	for b.Loop() {
		id := ids[n%len(ids)]
		start := now.Add(time.Duration(n%perPoll) * 100 * time.Microsecond)
		d.queue.Begin(estimator.Span{ID: id, Upstream: "up", Start: start, Devices: devices})
		d.queue.End(estimator.Span{ID: id, Upstream: "up", Model: "bench", Tenant: "0123456789abcdef",
			Start: start, End: start.Add(time.Millisecond), Devices: devices, Status: "200", Served: true,
			PromptTokens: 13, CompletionTokens: 16, CachedTokens: -1, ReasoningTokens: -1,
			UsageSource: estimator.UsageReported})
		if n++; n%perPoll == 0 {
			now = now.Add(100 * time.Millisecond)
			e.Tick(ctx, now)
		}
	}
	for range 10 { // the settle delay: every request recorded
		now = now.Add(100 * time.Millisecond)
		e.Tick(ctx, now)
	}
	time.Sleep(2 * cfg.Spool.FsyncInterval.D()) // and committed
	b.ReportMetric(float64(processCPU()-cpu)/float64(time.Microsecond)/float64(n), "cpu_us/record")
	if got := d.writer.Stats().Enqueued - recorded; got < uint64(n) {
		b.Fatalf("%d points queued for %d requests", got, n)
	}
}

// benchMeter is a GPU or host meter that reports about the same energy at
// every poll.
type benchMeter struct {
	device string
	joules float64
	last   time.Time
	polls  int
}

func (m *benchMeter) interval(now time.Time) (estimator.Interval, bool) {
	// A counter in mJ, as NVML's: shares of it have all their digits.
	m.polls++
	joules := m.joules + float64(m.polls%997)/1000
	iv := estimator.Interval{Device: m.device, Start: m.last, End: now, Joules: joules, Method: estimator.MethodCounter}
	ok := !m.last.IsZero()
	m.last = now
	return iv, ok
}

func (m *benchMeter) Poll(now time.Time) ([]estimator.Interval, []estimator.DeviceSample) {
	if iv, ok := m.interval(now); ok {
		return []estimator.Interval{iv}, nil
	}
	return nil, nil
}

// hostBenchMeter is a benchMeter as the host meter.
type hostBenchMeter struct{ *benchMeter }

func (m hostBenchMeter) Poll(_ context.Context, now time.Time) (estimator.Interval, bool, error) {
	iv, ok := m.interval(now)
	return iv, ok, nil
}

// processCPU is the user and system CPU this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

package e2e

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/influxtest"
)

// BenchmarkRecordLatency: the time from a request's end (the client has
// the whole answer) to its record being queryable in InfluxDB, under a
// steady load through the daemon with the default timings (gpu.interval
// 100ms, attribution.settle_delay 500ms, spool.fsync_interval 200ms,
// influx.flush_interval 1s). InfluxDB is polled every 20 ms for new request
// ids. Reported: p50, p99 and max (target p99 <= 2 s). Run by
// `make bench-sink`.
func BenchmarkRecordLatency(b *testing.B) {
	const (
		rate     = 50 // requests per second
		duration = 20 * time.Second
	)
	influx := influxtest.Start(b)
	fake := startFake(b)
	cfg := fmt.Sprintf(`node: bench
admin:
  listen: ""
influx:
  url: %s
  bucket: %s
spool:
  dir: %s
upstreams:
  - name: up
    listen: 127.0.0.1:0
    target: %s
    gpus: [0, 1]
`, influx.URL(), influx.Bucket(), b.TempDir(), fake.URL())
	var lat []time.Duration
	for b.Loop() {
		d := startDaemon(b, cfg, "h100:2")
		seen := map[string]time.Time{}
		var mu sync.Mutex
		stopPoll := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stopPoll:
					return
				case <-time.After(20 * time.Millisecond):
				}
				rows := influx.Rows(b, "SELECT request_id FROM deadlabour_request WHERE time > now() - 30s")
				now := time.Now()
				mu.Lock()
				for _, r := range rows {
					id, _ := r.String("request_id")
					if _, ok := seen[id]; !ok {
						seen[id] = now
					}
				}
				mu.Unlock()
			}
		})
		l := startLoad(d.proxyURL("up"), "lat", time.Second/rate)
		time.Sleep(duration)
		ended := l.halt()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			n := len(seen)
			mu.Unlock()
			if n >= len(ended) || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		close(stopPoll)
		wg.Wait()
		if err := d.stop(); err != nil {
			b.Fatal(err)
		}
		for id, end := range ended {
			at, ok := seen[id]
			if !ok {
				b.Fatalf("request %s never became queryable", id)
			}
			lat = append(lat, at.Sub(end))
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	b.ReportMetric(q(0.5).Seconds(), "p50_s")
	b.ReportMetric(q(0.99).Seconds(), "p99_s")
	b.ReportMetric(lat[len(lat)-1].Seconds(), "max_s")
	b.Logf("%d requests: end to queryable p50 %v, p99 %v, max %v", len(lat), q(0.5).Round(time.Millisecond),
		q(0.99).Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
}

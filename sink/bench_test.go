package sink

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/schema"
)

// BenchmarkSinkThroughput: points per second into one local InfluxDB, in
// one run, of a raw line-protocol batch writer (the baseline: encode, gzip,
// POST /api/v2/write, batch after batch) and of the Writer with its spool
// (Enqueue, group commit with fsync, our sender), alternating rounds.
// Each round writes the same request records into a measurement of its
// own and ends when InfluxDB counts them all. Reported: both rates and their
// ratio (target >= 0.9), medians of the rounds, and the CPU this process
// spent per point in each (InfluxDB shares the machine: what the sink
// spends more is taken from it). Run by `make bench-sink`.
func BenchmarkSinkThroughput(b *testing.B) {
	const (
		points = 60_000
		batch  = 5000 // influx.batch_size's default
		rounds = 3
	)
	s := influxtest.Start(b)
	recs := records(points)
	var raw, spooled, rawCPU, sinkCPU []float64
	for i := 0; b.Loop(); i++ {
		for r := range rounds {
			c := cpuTime()
			raw = append(raw, rawRound(b, s, recs, batch, fmt.Sprintf("raw_%d_%d", i, r)))
			rawCPU = append(rawCPU, (cpuTime()-c).Seconds()/points*1e6)
			c = cpuTime()
			spooled = append(spooled, sinkRound(b, s, recs, batch, fmt.Sprintf("sink_%d_%d", i, r)))
			sinkCPU = append(sinkCPU, (cpuTime()-c).Seconds()/points*1e6)
		}
	}
	rawMed, sinkMed := median(raw), median(spooled)
	b.ReportMetric(rawMed, "raw_points/s")
	b.ReportMetric(sinkMed, "sink_points/s")
	b.ReportMetric(sinkMed/rawMed, "sink/raw")
	b.ReportMetric(median(rawCPU), "raw_cpu_us/point")
	b.ReportMetric(median(sinkCPU), "sink_cpu_us/point")
	b.Logf("raw points/s %.0f, sink points/s %.0f (medians of %d rounds each): ratio %.3f; CPU of this process per point: raw %.1f us, sink %.1f us",
		rawMed, sinkMed, len(raw), sinkMed/rawMed, median(rawCPU), median(sinkCPU))
}

// cpuTime is the user and system CPU this process has used (InfluxDB is
// another process).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// pointsOf are recs as request points of measurement m.
func pointsOf(b *testing.B, recs []estimator.Record, m string) []schema.Point {
	pts := make([]schema.Point, len(recs))
	for i, r := range recs {
		p, err := schema.RequestPoint(r)
		if err != nil {
			b.Fatal(err)
		}
		p.Measurement = m
		pts[i] = p
	}
	return pts
}

// waitStored waits until InfluxDB counts n points of m.
func waitStored(b *testing.B, s *influxtest.Server, m string, n int) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		rows := s.Rows(b, "SELECT count(request_id) FROM "+influxtest.QuoteIdent(m))
		if len(rows) == 1 {
			if c, _ := rows[0].Int("count"); c == int64(n) {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: not all %d points stored after 5 minutes", m, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rawRound: encode, gzip and POST batches one after the other.
func rawRound(b *testing.B, s *influxtest.Server, recs []estimator.Record, batch int, m string) float64 {
	pts := pointsOf(b, recs, m)
	u := s.URL() + "/api/v2/write?" + url.Values{"bucket": {s.Bucket()}, "precision": {"ns"}}.Encode()
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	start := time.Now()
	var body, zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	var line []byte
	for from := 0; from < len(pts); from += batch {
		body.Reset()
		for _, p := range pts[from:min(from+batch, len(pts))] {
			var err error
			if line, err = schema.AppendLine(line[:0], p); err != nil {
				b.Fatal(err)
			}
			body.Write(line)
			body.WriteByte('\n')
		}
		zbuf.Reset()
		zw.Reset(&zbuf)
		zw.Write(body.Bytes())
		zw.Close()
		req, _ := http.NewRequest(http.MethodPost, u, bytes.NewReader(zbuf.Bytes()))
		req.Header.Set("Content-Encoding", "gzip")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			b.Fatalf("raw write: %s", resp.Status)
		}
	}
	waitStored(b, s, m, len(pts))
	return float64(len(pts)) / time.Since(start).Seconds()
}

// sinkRound: the same points handed to a Writer with its spool, as fast
// as Enqueue takes them; they are committed (fsynced) to the spool and sent
// in full batches (points is a multiple of batch). The rate counts from the
// first Enqueue to the last point stored.
func sinkRound(b *testing.B, s *influxtest.Server, recs []estimator.Record, batch int, m string) float64 {
	pts := pointsOf(b, recs, m)
	w, err := NewWriter(Options{Dir: b.TempDir(), URL: s.URL(), Bucket: s.Bucket(), BatchSize: batch}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { w.Run(ctx) })
	start := time.Now()
	for from := 0; from < len(pts); from += batch {
		if err := w.Enqueue(pts[from:min(from+batch, len(pts))]...); err != nil {
			b.Fatal(err)
		}
	}
	waitStored(b, s, m, len(pts))
	rate := float64(len(pts)) / time.Since(start).Seconds()
	cancel()
	wg.Wait()
	if n, err := w.Close(context.Background()); n != 0 || err != nil {
		b.Fatalf("Close() = %d, %v", n, err)
	}
	return rate
}

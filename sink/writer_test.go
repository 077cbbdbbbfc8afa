package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/influxtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fastOptions retry and flush quickly so the tests take little time.
func fastOptions(url, bucket string) Options {
	return Options{URL: url, Bucket: bucket, FlushInterval: 20 * time.Millisecond,
		Timeout: 2 * time.Second, BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond}
}

func newWriter(t *testing.T, opts Options) *Writer {
	t.Helper()
	w, err := NewWriter(opts, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// run starts w's sender; it is stopped by Close or at the end of the test.
func run(t *testing.T, w *Writer) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := w.Run(ctx); err != nil {
			t.Errorf("Run() = %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

func closeWriter(t *testing.T, w *Writer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if n, err := w.Close(ctx); n != 0 || err != nil {
		t.Fatalf("Close() = %d, %v; want 0 undelivered", n, err)
	}
}

// records makes n distinct records whose floats are arbitrary finite bit
// patterns; every third has unknown token counts and no first token.
func records(n int) []estimator.Record {
	rng := rand.New(rand.NewPCG(7, uint64(n)))
	anyFloat := func() float64 {
		for {
			if f := math.Float64frombits(rng.Uint64()); !math.IsNaN(f) && !math.IsInf(f, 0) {
				return f
			}
		}
	}
	out := make([]estimator.Record, n)
	for i := range out {
		r := testRecord()
		r.ID = fmt.Sprintf("req-%04d", i)
		r.Tenant = fmt.Sprintf("t%d", i%5)
		r.Time = r.Time.Add(time.Duration(i))
		r.GPUEnergyJ, r.CO2eG, r.WaterL, r.DeadLabourCost = anyFloat(), anyFloat(), anyFloat(), rng.Float64()
		r.CompletionTokens = rng.Int64N(4096)
		if i%3 == 0 {
			r.PromptTokens, r.CachedTokens, r.ReasoningTokens = -1, -1, -1
			r.FirstToken = time.Time{}
			r.UsageSource = estimator.UsageUnknown
		}
		out[i] = r
	}
	return out
}

func requestPoints(t *testing.T, recs []estimator.Record) []Point {
	t.Helper()
	pts := make([]Point, len(recs))
	for i, r := range recs {
		p, err := RequestPoint(r)
		if err != nil {
			t.Fatal(err)
		}
		pts[i] = p
	}
	return pts
}

// checkStored compares what InfluxDB returns for measurement with the
// points written: every tag, every field (floats bit for bit), no field
// more, and the time. key names the string field that identifies a point.
func checkStored(t *testing.T, s *influxtest.Server, pts []Point, key string) {
	t.Helper()
	rows := s.Rows(t, "SELECT * FROM "+influxtest.QuoteIdent(pts[0].Measurement))
	if len(rows) != len(pts) {
		t.Fatalf("%d rows stored, want %d", len(rows), len(pts))
	}
	byKey := map[string]influxtest.Row{}
	for _, r := range rows {
		k, _ := r.String(key)
		byKey[k] = r
	}
	for _, p := range pts {
		var id string
		for _, f := range p.Fields {
			if f.Key == key {
				id = f.Value.(string)
			}
		}
		row, ok := byKey[id]
		if !ok {
			t.Errorf("point %s=%q not stored", key, id)
			continue
		}
		want := map[string]bool{"time": true}
		if got, _ := row.Time(); !got.Equal(p.Time) {
			t.Errorf("%s: time %d, want %d", id, got.UnixNano(), p.Time.UnixNano())
		}
		for _, tg := range p.Tags {
			if tg.Value == "" {
				continue
			}
			want[tg.Key] = true
			if got, _ := row.String(tg.Key); got != tg.Value {
				t.Errorf("%s: tag %s = %q, want %q", id, tg.Key, got, tg.Value)
			}
		}
		for _, f := range p.Fields {
			want[f.Key] = true
			var got any
			var ok bool
			switch v := f.Value.(type) {
			case float64:
				var g float64
				g, ok = row.Float(f.Key)
				ok = ok && math.Float64bits(g) == math.Float64bits(v)
				got = g
			case int64:
				got, ok = row.Int(f.Key)
				ok = ok && got == v
			case string:
				got, ok = row.String(f.Key)
				ok = ok && got == v
			case bool:
				got, ok = row.Bool(f.Key)
				ok = ok && got == v
			}
			if !ok {
				t.Errorf("%s: field %s = %v (%v), want %v", id, f.Key, got, row[f.Key], f.Value)
			}
		}
		for col := range row {
			if !want[col] {
				t.Errorf("%s: column %s = %v stored, want it absent", id, col, row[col])
			}
		}
	}
}

func TestWriterDeliversRecordsExactly(t *testing.T) {
	s := influxtest.Start(t)
	opts := fastOptions(s.URL(), s.Bucket())
	opts.BatchSize = 64
	w := newWriter(t, opts)
	run(t, w)

	const n = 500
	pts := requestPoints(t, records(n))
	// Four producers at once, as the proxy's handlers would.
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < n; i += 4 {
				if err := w.Enqueue(pts[i]); err != nil {
					t.Errorf("Enqueue(%d) = %v", i, err)
				}
			}
		})
	}
	wg.Wait()
	closeWriter(t, w)

	rows := s.Rows(t, "SELECT count(request_id) FROM deadlabour_request")
	if got, ok := rows[0].Int("count"); len(rows) != 1 || !ok || got != n {
		t.Fatalf("count(request_id) = %v, want %d", rows, n)
	}
	checkStored(t, s, pts, "request_id")
	if unknown := s.Count(t, MeasurementRequest, "prompt_tokens >= 0"); unknown != n-(n+2)/3 {
		t.Errorf("%d points with prompt_tokens, want %d (unknown ones left out)", unknown, n-(n+2)/3)
	}
	if st := w.Stats(); st.Written != n || st.Queued != 0 || st.Dropped+st.Invalid+st.Rejected != 0 {
		t.Errorf("Stats() = %+v, want %d written and nothing else", st, n)
	}
}

// TestWriterEscapingThroughInfluxDB: the encoder's escaping means the same
// to the real server as to the line-protocol parser the fuzz test uses.
func TestWriterEscapingThroughInfluxDB(t *testing.T) {
	s := influxtest.Start(t)
	w := newWriter(t, fastOptions(s.URL(), s.Bucket()))
	names := []string{`plain`, `a b`, `a,b`, `a=b`, `a"b`, `a\b`, `a\\b`, `\x`, ` lead`, `trail `, `é λ ☃`, `a=b,c d"e\f`}
	pts := make([]Point, len(names))
	for i, name := range names {
		pts[i] = Point{
			Measurement: `m e,a"s\ure`,
			Tags:        []Tag{{"t" + name, name}, {"host", "h"}},
			Fields: []Field{
				{"id", fmt.Sprint(i)},
				{"f" + name, name + "\t\"\\" + name},
				{"g" + name, float64(i) + 0.5},
			},
			Time: time.Unix(1_772_366_400, int64(i)),
		}
	}
	if err := w.Enqueue(pts...); err != nil {
		t.Fatal(err)
	}
	closeWriter(t, w)
	checkStored(t, s, pts, "id")
}

func TestWriterWaitsForInfluxDB(t *testing.T) {
	s := influxtest.Start(t)
	s.Stop(t)
	w := newWriter(t, fastOptions(s.URL(), s.Bucket()))
	run(t, w)
	pts := requestPoints(t, records(50))
	if err := w.Enqueue(pts...); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two failed writes", func() bool { return w.Stats().Failures >= 2 })
	if st := w.Stats(); st.Queued != 50 || st.Written != 0 {
		t.Fatalf("Stats() while InfluxDB is down = %+v, want 50 queued", st)
	}
	s.Restart(t)
	s.WaitCount(t, MeasurementRequest, "", 50, 10*time.Second)
	closeWriter(t, w)
	checkStored(t, s, pts, "request_id")
}

func TestWriterRejectsNonFinite(t *testing.T) {
	s := influxtest.Start(t)
	w := newWriter(t, fastOptions(s.URL(), s.Bucket()))
	recs := records(3)
	recs[1].GPUEnergyJ = math.NaN()
	pts := make([]Point, 3)
	for i, r := range recs {
		pts[i], _ = RequestPoint(r)
	}
	err := w.Enqueue(pts...)
	if !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), `"gpu_energy_j"`) {
		t.Errorf("Enqueue() error = %v, want ErrNonFinite naming gpu_energy_j", err)
	}
	closeWriter(t, w)
	checkStored(t, s, []Point{pts[0], pts[2]}, "request_id")
	if st := w.Stats(); st.Invalid != 1 || st.Written != 2 {
		t.Errorf("Stats() = %+v, want 1 invalid, 2 written", st)
	}
}

// TestWriterDropsWhatInfluxDBRefuses: a point InfluxDB refuses (a field
// type conflict) is found among its batch, dropped and counted; the others
// arrive and the queue does not wedge.
func TestWriterDropsWhatInfluxDBRefuses(t *testing.T) {
	s := influxtest.Start(t)
	s.Write(t, `conflict v="a string" 1772366400000000000`)
	opts := fastOptions(s.URL(), s.Bucket())
	opts.BatchSize = 16
	w := newWriter(t, opts)
	run(t, w)
	var pts []Point
	for i := range 16 {
		pts = append(pts, Point{Measurement: "ok", Fields: []Field{{"i", int64(i)}}, Time: time.Unix(1_772_366_400, int64(i))})
	}
	pts[11] = Point{Measurement: "conflict", Fields: []Field{{"v", 1.5}}, Time: time.Unix(1_772_366_401, 0)}
	if err := w.Enqueue(pts...); err != nil {
		t.Fatal(err)
	}
	s.WaitCount(t, "ok", "", 15, 10*time.Second)
	waitFor(t, "the refused point dropped", func() bool { return w.Stats().Queued == 0 })
	if err := w.Enqueue(Point{Measurement: "ok", Fields: []Field{{"i", int64(99)}}, Time: time.Unix(1_772_366_500, 0)}); err != nil {
		t.Fatal(err)
	}
	s.WaitCount(t, "ok", "", 16, 10*time.Second)
	closeWriter(t, w)
	if st := w.Stats(); st.Rejected != 1 || st.Written != 16 {
		t.Errorf("Stats() = %+v, want 1 rejected, 16 written", st)
	}
}

func TestWriterBatching(t *testing.T) {
	s := influxtest.Start(t)
	points := func(from, n int) []Point {
		var pts []Point
		for i := from; i < from+n; i++ {
			pts = append(pts, Point{Measurement: "b", Fields: []Field{{"i", int64(i)}}, Time: time.Unix(1_772_366_400, int64(i))})
		}
		return pts
	}

	t.Run("by count", func(t *testing.T) {
		opts := fastOptions(s.URL(), s.Bucket())
		opts.BatchSize, opts.FlushInterval = 10, time.Hour
		w := newWriter(t, opts)
		run(t, w)
		if err := w.Enqueue(points(0, 25)...); err != nil {
			t.Fatal(err)
		}
		s.WaitCount(t, "b", "", 20, 10*time.Second)
		time.Sleep(100 * time.Millisecond)
		if st := w.Stats(); st.Queued != 5 || st.Written != 20 {
			t.Errorf("Stats() = %+v, want two full batches written and 5 points waiting", st)
		}
		closeWriter(t, w)
		s.WaitCount(t, "b", "", 25, time.Second)
	})
	t.Run("by interval", func(t *testing.T) {
		opts := fastOptions(s.URL(), s.Bucket())
		opts.BatchSize, opts.FlushInterval = 1000, 50*time.Millisecond
		w := newWriter(t, opts)
		run(t, w)
		if err := w.Enqueue(points(100, 3)...); err != nil {
			t.Fatal(err)
		}
		s.WaitCount(t, "b", "i >= 100", 3, 5*time.Second)
		closeWriter(t, w)
	})
}

func TestWriterQueueFullAndClose(t *testing.T) {
	// Nothing listens on port 1: every write fails.
	opts := fastOptions("http://127.0.0.1:1", "db/rp")
	opts.MaxQueue = 10
	w := newWriter(t, opts)
	pts := make([]Point, 15)
	for i := range pts {
		pts[i] = Point{Measurement: "m", Fields: []Field{{"i", int64(i)}}, Time: time.Unix(0, int64(i))}
	}
	err := w.Enqueue(pts...)
	if !errors.Is(err, ErrQueueFull) || !strings.Contains(err.Error(), "5 points dropped") {
		t.Errorf("Enqueue(15 into 10) error = %v, want ErrQueueFull with 5 dropped", err)
	}
	if st := w.Stats(); st.Queued != 10 || st.Dropped != 5 {
		t.Errorf("Stats() = %+v, want 10 queued, 5 dropped", st)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	n, err := w.Close(ctx)
	if n != 10 || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close() = %d, %v; want 10 undelivered and the deadline", n, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close() took %v, want it to stop at its 200 ms deadline", d)
	}
	if w.Stats().Failures == 0 {
		t.Errorf("Close() did not try to write")
	}
	if err := w.Enqueue(pts[0]); !errors.Is(err, ErrClosed) {
		t.Errorf("Enqueue after Close = %v, want ErrClosed", err)
	}
	if err := w.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
	if n, err := w.Close(context.Background()); n != 10 || err != nil {
		t.Errorf("second Close() = %d, %v; want 10, nil", n, err)
	}
}

func TestWriterRunTwice(t *testing.T) {
	w := newWriter(t, fastOptions("http://127.0.0.1:1", "db/rp"))
	run(t, w)
	waitFor(t, "Run to start", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.runDone != nil
	})
	if err := w.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("second Run() = %v, want ErrClosed", err)
	}
	closeWriter(t, w)
}

func TestNewWriterValidates(t *testing.T) {
	good := Options{URL: "http://127.0.0.1:8086", Bucket: "deadlabour/autogen"}
	tests := []struct {
		name   string
		modify func(*Options)
		wantIn string
	}{
		{"no URL", func(o *Options) { o.URL = "" }, "Options.URL"},
		{"no scheme", func(o *Options) { o.URL = "127.0.0.1:8086" }, "Options.URL"},
		{"bad scheme", func(o *Options) { o.URL = "udp://127.0.0.1:8089" }, `"udp://127.0.0.1:8089"`},
		{"no bucket", func(o *Options) { o.Bucket = "" }, "Options.Bucket"},
		{"negative batch", func(o *Options) { o.BatchSize = -1 }, "Options.BatchSize"},
		{"negative queue", func(o *Options) { o.MaxQueue = -1 }, "Options.MaxQueue"},
		{"negative flush", func(o *Options) { o.FlushInterval = -time.Second }, "Options.FlushInterval"},
		{"negative timeout", func(o *Options) { o.Timeout = -time.Second }, "Options.Timeout"},
		{"backoff upside down", func(o *Options) { o.BackoffMin, o.BackoffMax = time.Minute, time.Second }, "BackoffMin 1m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good
			tt.modify(&o)
			_, err := NewWriter(o, nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("NewWriter() error = %v, want one naming %s", err, tt.wantIn)
			}
		})
	}

	w, err := NewWriter(good, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(context.Background())
	want := Options{URL: good.URL, Bucket: good.Bucket, BatchSize: DefaultBatchSize, FlushInterval: DefaultFlushInterval,
		MaxQueue: DefaultMaxQueue, Timeout: DefaultTimeout, BackoffMin: DefaultBackoffMin, BackoffMax: DefaultBackoffMax}
	if w.opts != want {
		t.Errorf("options with defaults = %+v, want %+v", w.opts, want)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkEnqueue is the cost the proxy pays per record: encoding and a
// queue push, no network.
func BenchmarkEnqueue(b *testing.B) {
	w, err := NewWriter(Options{URL: "http://127.0.0.1:1", Bucket: "db/rp", MaxQueue: 1 << 20}, nil)
	if err != nil {
		b.Fatal(err)
	}
	p, err := RequestPoint(testRecord())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%(1<<19) == 0 {
			w.mu.Lock()
			w.q.drop(w.q.len())
			w.mu.Unlock()
		}
		if err := w.Enqueue(p); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w.Close(ctx)
}

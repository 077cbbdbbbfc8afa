package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/internal/schematest"
	"github.com/deadlabour/deadlabour/internal/testlog"
	"github.com/deadlabour/deadlabour/internal/testutil/basic"
	"github.com/deadlabour/deadlabour/schema"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fastOptions retry and flush quickly so the tests take little time; the
// spool is in a fresh directory.
func fastOptions(t testing.TB, url, bucket string) Options {
	return Options{Dir: t.TempDir(), URL: url, Bucket: bucket, FlushInterval: 20 * time.Millisecond,
		FsyncInterval: 10 * time.Millisecond, Timeout: 2 * time.Second,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond}
}

// newTestLogger logs to the test's output and, if buf is not nil, to buf
// at info and above.
func newTestLogger(t *testing.T, buf *testlog.Buffer) *slog.Logger {
	h := slog.Handler(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	if buf != nil {
		h = teeHandler{h, slog.NewTextHandler(buf, nil)}
	}
	return slog.New(h)
}

type teeHandler struct{ a, b slog.Handler }

func (t teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return t.a.Enabled(ctx, l) || t.b.Enabled(ctx, l)
}

func (t teeHandler) Handle(ctx context.Context, r slog.Record) error {
	var err error
	for _, h := range []slog.Handler{t.a, t.b} {
		if h.Enabled(ctx, r.Level) {
			err = errors.Join(err, h.Handle(ctx, r.Clone()))
		}
	}
	return err
}

func (t teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return teeHandler{t.a.WithAttrs(as), t.b.WithAttrs(as)}
}
func (t teeHandler) WithGroup(g string) slog.Handler {
	return teeHandler{t.a.WithGroup(g), t.b.WithGroup(g)}
}

func newWriter(t *testing.T, opts Options) *Writer {
	t.Helper()
	w, err := NewWriter(opts, newTestLogger(t, nil))
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
		r := schematest.Record()
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

func requestPoints(t *testing.T, recs []estimator.Record) []schema.Point {
	t.Helper()
	pts := make([]schema.Point, len(recs))
	for i, r := range recs {
		p, err := schema.RequestPoint(r)
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
func checkStored(t *testing.T, s *influxtest.Server, pts []schema.Point, key string) {
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
	opts := fastOptions(t, s.URL(), s.Bucket())
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
	if unknown := s.Count(t, schema.MeasurementRequest, "prompt_tokens >= 0"); unknown != n-(n+2)/3 {
		t.Errorf("%d points with prompt_tokens, want %d (unknown ones left out)", unknown, n-(n+2)/3)
	}
	if st := w.Stats(); st.Sent != n || st.SpoolPoints != 0 || st.Dropped+st.DeadLettered != 0 || st.State != StateOK {
		t.Errorf("Stats() = %+v, want %d sent and nothing else", st, n)
	}
}

// TestWriterEscapingThroughInfluxDB: the encoder's escaping means the same
// to the real server as to the line-protocol parser the fuzz test uses.
func TestWriterEscapingThroughInfluxDB(t *testing.T) {
	s := influxtest.Start(t)
	w := newWriter(t, fastOptions(t, s.URL(), s.Bucket()))
	names := []string{`plain`, `a b`, `a,b`, `a=b`, `a"b`, `a\b`, `a\\b`, `\x`, ` lead`, `trail `, `é λ ☃`, `a=b,c d"e\f`}
	pts := make([]schema.Point, len(names))
	for i, name := range names {
		pts[i] = schema.Point{
			Measurement: `m e,a"s\ure`,
			Tags:        []schema.Tag{{Key: "t" + name, Value: name}, {Key: "host", Value: "h"}},
			Fields: []schema.Field{
				{Key: "id", Value: fmt.Sprint(i)},
				{Key: "f" + name, Value: name + "\t\"\\" + name},
				{Key: "g" + name, Value: float64(i) + 0.5},
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
	w := newWriter(t, fastOptions(t, s.URL(), s.Bucket()))
	run(t, w)
	pts := requestPoints(t, records(50))
	if err := w.Enqueue(pts...); err != nil {
		t.Fatal(err)
	}
	basic.WaitFor(t, "two failed writes", 10*time.Second, func() bool { return w.Stats().Retries >= 2 })
	if st := w.Stats(); st.SpoolPoints != 50 || st.Sent != 0 || st.State != StateRetrying || st.Reason == "" || st.OldestUndelivered <= 0 {
		t.Fatalf("Stats() while InfluxDB is down = %+v, want 50 spooled, retrying and why", st)
	}
	s.Restart(t)
	s.WaitCount(t, schema.MeasurementRequest, "", 50, 10*time.Second)
	closeWriter(t, w)
	checkStored(t, s, pts, "request_id")
}

func TestWriterRejectsNonFinite(t *testing.T) {
	s := influxtest.Start(t)
	w := newWriter(t, fastOptions(t, s.URL(), s.Bucket()))
	recs := records(3)
	recs[1].GPUEnergyJ = math.NaN()
	pts := make([]schema.Point, 3)
	for i, r := range recs {
		pts[i], _ = schema.RequestPoint(r)
	}
	err := w.Enqueue(pts...)
	if !errors.Is(err, schema.ErrNonFinite) || !strings.Contains(err.Error(), `"gpu_energy_j"`) {
		t.Errorf("Enqueue() error = %v, want ErrNonFinite naming gpu_energy_j", err)
	}
	closeWriter(t, w)
	checkStored(t, s, []schema.Point{pts[0], pts[2]}, "request_id")
	if st := w.Stats(); st.DroppedBy["cost/invalid"] != 1 || st.Dropped != 1 || st.Sent != 2 {
		t.Errorf("Stats() = %+v, want 1 invalid, 2 sent", st)
	}
}

func TestWriterBatching(t *testing.T) {
	s := influxtest.Start(t)
	points := func(from, n int) []schema.Point {
		var pts []schema.Point
		for i := from; i < from+n; i++ {
			pts = append(pts, schema.Point{Measurement: "b", Fields: []schema.Field{{Key: "i", Value: int64(i)}}, Time: time.Unix(1_772_366_400, int64(i))})
		}
		return pts
	}

	t.Run("by count", func(t *testing.T) {
		opts := fastOptions(t, s.URL(), s.Bucket())
		opts.BatchSize, opts.FlushInterval = 10, time.Hour
		w := newWriter(t, opts)
		run(t, w)
		if err := w.Enqueue(points(0, 25)...); err != nil {
			t.Fatal(err)
		}
		s.WaitCount(t, "b", "", 20, 10*time.Second)
		// The second batch is resolved a little after InfluxDB has it; the
		// five left wait for a batch of ten or an hour.
		basic.WaitFor(t, "two full batches sent and 5 points waiting", 10*time.Second, func() bool {
			st := w.Stats()
			return st.SpoolPoints == 5 && st.Sent == 20
		})
		if n := s.Count(t, "b", ""); n != 20 {
			t.Errorf("%d points in InfluxDB before Close, want the two full batches of 10", n)
		}
		closeWriter(t, w)
		s.WaitCount(t, "b", "", 25, time.Second)
	})
	t.Run("by interval", func(t *testing.T) {
		opts := fastOptions(t, s.URL(), s.Bucket())
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

// telemetryPoints are n deadlabour_gpu-like points, the kind dropped first.
func telemetryPoints(from, n int) []schema.Point {
	pts := make([]schema.Point, n)
	for i := range pts {
		pts[i] = schema.Point{Measurement: schema.MeasurementGPU, Tags: []schema.Tag{{Key: "gpu", Value: "0"}, {Key: "host", Value: "h"}},
			Fields: []schema.Field{{Key: "i", Value: int64(from + i)}, {Key: "pad", Value: strings.Repeat("t", 200)}}, Time: time.Unix(1_772_366_400, int64(from+i))}
	}
	return pts
}

// TestWriterCloseLeavesTheRestOnDisk: Close with InfluxDB down flushes
// until its deadline and leaves every point in the spool; the next Writer
// on the same directory delivers them, each exactly once.
func TestWriterCloseLeavesTheRestOnDisk(t *testing.T) {
	s := influxtest.Start(t)
	s.Stop(t)
	opts := fastOptions(t, s.URL(), s.Bucket())
	w := newWriter(t, opts)
	run(t, w)
	pts := requestPoints(t, records(120))
	if err := w.Enqueue(pts[:100]...); err != nil {
		t.Fatal(err)
	}
	basic.WaitFor(t, "a failed write", 10*time.Second, func() bool { return w.Stats().Retries >= 1 })
	if err := w.Enqueue(pts[100:]...); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	n, err := w.Close(ctx)
	if n != 120 || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close() = %d, %v; want 120 left in the spool and the deadline", n, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close() took %v, want it to stop at its 200 ms deadline", d)
	}
	if err := w.Enqueue(pts[0]); !errors.Is(err, ErrClosed) {
		t.Errorf("Enqueue after Close = %v, want ErrClosed", err)
	}
	if err := w.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
	if n, err := w.Close(context.Background()); n != 120 || err != nil {
		t.Errorf("second Close() = %d, %v; want 120, nil", n, err)
	}

	s.Restart(t)
	w2 := newWriter(t, opts)
	if st := w2.Stats(); st.SpoolPoints != 120 || st.SpoolRecords != 120 {
		t.Fatalf("reopened spool: %+v, want the 120 records", st)
	}
	closeWriter(t, w2)
	checkStored(t, s, pts, "request_id")
	if st := w2.Stats(); st.Sent != 120 || st.SpoolPoints != 0 {
		t.Errorf("Stats() = %+v, want 120 sent, the spool empty", st)
	}
}

// TestWriterSpoolOnly: without InfluxDB the spool keeps everything; the
// running Writer serves it with ScanSpool, ReadSpool refuses while it runs
// and reads it once it is closed.
func TestWriterSpoolOnly(t *testing.T) {
	dir := t.TempDir()
	w := newWriter(t, Options{Dir: dir, FsyncInterval: 10 * time.Millisecond})
	run(t, w)
	pts := append(requestPoints(t, records(30)), telemetryPoints(0, 5)...)
	if err := w.Enqueue(pts...); err != nil {
		t.Fatal(err)
	}
	want := make([]string, len(pts))
	for i, p := range pts {
		want[i], _ = schema.Line(p)
	}
	basic.WaitFor(t, "the commit", 10*time.Second, func() bool {
		var n int
		w.ScanSpool(func(string) bool { n++; return true })
		return n == len(pts)
	})
	var scanned []string
	if err := w.ScanSpool(func(l string) bool { scanned = append(scanned, l); return true }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(scanned, want) {
		t.Errorf("ScanSpool = %d lines, want the %d enqueued, in order", len(scanned), len(want))
	}
	st := w.Stats()
	if st.State != StateDisabled || !strings.Contains(st.Reason, "influx.url is empty") || st.SpoolPoints != 35 || st.SpoolRecords != 30 {
		t.Errorf("Stats() = %+v, want disabled, 35 points, 30 records", st)
	}
	for _, err := range ReadSpool(dir) {
		if !errors.Is(err, ErrSpoolBusy) || !strings.Contains(err.Error(), "GET /v1/spool") {
			t.Errorf("ReadSpool while running: %v, want ErrSpoolBusy pointing to GET /v1/spool", err)
		}
	}
	if n, err := w.Close(context.Background()); n != 35 || err != nil {
		t.Errorf("Close() = %d, %v; want 35 kept, no error", n, err)
	}
	var read []string
	for line, err := range ReadSpool(dir) {
		if err != nil {
			t.Fatal(err)
		}
		read = append(read, line)
	}
	if !slices.Equal(read, want) {
		t.Errorf("ReadSpool = %q, want %q", read, want)
	}
	for _, err := range ReadSpool(t.TempDir()) {
		if err == nil || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("ReadSpool of an empty directory: %v, want not exist", err)
		}
	}
}

// TestWriterSpoolFull: at spool.max_bytes the oldest telemetry is evicted
// for records, then new telemetry is refused, then new records; every
// point is either in the spool or counted as dropped, by kind.
func TestWriterSpoolFull(t *testing.T) {
	opts := Options{Dir: t.TempDir(), MaxBytes: 64 << 10, FsyncInterval: time.Hour}
	w := newWriter(t, opts)
	defer w.Close(context.Background())
	tel := telemetryPoints(0, 400) // about 100 KB: more than fits
	err := w.Enqueue(tel...)
	if !errors.Is(err, ErrSpoolFull) {
		t.Fatalf("Enqueue(100 KB of telemetry into 64 KiB) = %v, want ErrSpoolFull", err)
	}
	if err := w.commit(); err != nil {
		t.Fatal(err)
	}
	st := w.Stats()
	telKept := st.SpoolPoints
	if telKept == 0 || telKept == 400 || st.DroppedBy["telemetry/spool_full"] != uint64(400-telKept) || st.SpoolBytes > opts.MaxBytes {
		t.Fatalf("after telemetry: %+v, want some kept, the rest dropped, within %d bytes", st, opts.MaxBytes)
	}

	// Records evict the oldest telemetry.
	recs := requestPoints(t, records(60))
	if err := w.Enqueue(recs[:30]...); err != nil {
		t.Fatal(err)
	}
	if err := w.commit(); err != nil {
		t.Fatal(err)
	}
	st = w.Stats()
	if st.SpoolRecords != 30 || st.SpoolBytes > opts.MaxBytes || st.DroppedBy["telemetry/spool_full"] <= uint64(400-telKept) {
		t.Fatalf("after 30 records: %+v, want 30 records kept by evicting telemetry", st)
	}
	// The oldest telemetry went first: what is left is the newest.
	var left []int64
	w.ScanSpool(func(l string) bool {
		if strings.HasPrefix(l, schema.MeasurementGPU) {
			i, _ := strconv.ParseInt(l[strings.Index(l, " i=")+3:strings.Index(l, "i,pad")], 10, 64)
			left = append(left, i)
		}
		return true
	})
	if len(left) == 0 || left[len(left)-1] != int64(telKept-1) || left[0] != int64(telKept-len(left)) {
		t.Errorf("telemetry left %v, want the newest of 0..%d", left, telKept-1)
	}

	// More records than fit: the telemetry is all gone, then records drop.
	big := requestPoints(t, records(200))
	err = w.Enqueue(big...)
	if err != nil {
		t.Fatalf("Enqueue(records) = %v: records are admitted, the commit decides", err)
	}
	if err := w.commit(); err != nil {
		t.Fatal(err)
	}
	st = w.Stats()
	if st.SpoolRecords != st.SpoolPoints || st.SpoolBytes > opts.MaxBytes {
		t.Errorf("after 230 records: %+v, want records only within %d bytes", st, opts.MaxBytes)
	}
	if got := uint64(st.SpoolRecords) + st.DroppedBy["cost/spool_full"]; got != 230 {
		t.Errorf("records spooled %d + dropped %d = %d, want 230", st.SpoolRecords, st.DroppedBy["cost/spool_full"], got)
	}
	if got := st.DroppedBy["telemetry/spool_full"]; got != 400 {
		t.Errorf("telemetry dropped %d, want all 400", got)
	}
	// New telemetry is refused at once (a few may fill the last gap).
	if err := w.Enqueue(telemetryPoints(1000, 10)...); !errors.Is(err, ErrSpoolFull) {
		t.Errorf("Enqueue(telemetry into a spool full of records) = %v, want ErrSpoolFull", err)
	}
}

func TestWriterRunTwice(t *testing.T) {
	w := newWriter(t, fastOptions(t, "http://127.0.0.1:1", "db/rp"))
	run(t, w)
	basic.WaitFor(t, "Run to start", 10*time.Second, func() bool {
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
	good := Options{Dir: t.TempDir(), URL: "http://127.0.0.1:8086", Bucket: "deadlabour/autogen"}
	tests := []struct {
		name   string
		modify func(*Options)
		wantIn string
	}{
		{"no dir", func(o *Options) { o.Dir = "" }, "Options.Dir"},
		{"no scheme", func(o *Options) { o.URL = "127.0.0.1:8086" }, "Options.URL"},
		{"bad scheme", func(o *Options) { o.URL = "udp://127.0.0.1:8089" }, `"udp://127.0.0.1:8089"`},
		{"no bucket", func(o *Options) { o.Bucket = "" }, "Options.Bucket"},
		{"negative batch", func(o *Options) { o.BatchSize = -1 }, "Options.BatchSize"},
		{"negative batch bytes", func(o *Options) { o.BatchBytes = -1 }, "Options.BatchBytes"},
		{"negative max", func(o *Options) { o.MaxBytes = -1 }, "Options.MaxBytes"},
		{"negative fsync", func(o *Options) { o.FsyncInterval = -1 }, "Options.FsyncInterval"},
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
	got := w.opts
	got.Now = nil
	want := Options{Dir: good.Dir, URL: good.URL, Bucket: good.Bucket, MaxBytes: DefaultMaxBytes, FsyncInterval: DefaultFsyncInterval,
		BatchSize: DefaultBatchSize, BatchBytes: DefaultBatchBytes, FlushInterval: DefaultFlushInterval,
		Timeout: DefaultTimeout, BackoffMin: DefaultBackoffMin, BackoffMax: DefaultBackoffMax, DeadLetterMaxBytes: DefaultDeadLetterMaxBytes}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("options with defaults = %+v, want %+v", got, want)
	}
	// A second Writer on the same spool is refused while the first has it.
	if _, err := NewWriter(good, nil); !errors.Is(err, ErrSpoolBusy) {
		t.Errorf("a second NewWriter on the same directory: %v, want ErrSpoolBusy", err)
	}
}

// BenchmarkEnqueue is the cost the engine pays per record: encoding and an
// append to the commit backlog, no disk, no network.
func BenchmarkEnqueue(b *testing.B) {
	w, err := NewWriter(Options{Dir: b.TempDir(), FsyncInterval: time.Hour}, nil)
	if err != nil {
		b.Fatal(err)
	}
	p, err := schema.RequestPoint(schematest.Record())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%(1<<15) == 0 {
			w.mu.Lock()
			w.pending, w.pendingBytes = nil, 0
			w.mu.Unlock()
		}
		if err := w.Enqueue(p); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	w.mu.Lock()
	w.pending, w.pendingBytes = nil, 0
	w.mu.Unlock()
	w.Close(context.Background())
}

// TestEnqueueNeverWaitsForTheDisk: with a commit stuck (its lock held and a
// bbolt write transaction open, as during a slow fsync), Enqueue and
// Stats still return at once: the engine's poll loop and the proxy never
// wait for the disk.
func TestEnqueueNeverWaitsForTheDisk(t *testing.T) {
	w := newWriter(t, Options{Dir: t.TempDir(), FsyncInterval: 10 * time.Millisecond})
	run(t, w)
	w.commitMu.Lock()
	w.spool.mu.Lock()
	tx, err := w.spool.db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 100 {
			if err := w.Enqueue(requestPoints(t, records(10))...); err != nil {
				t.Errorf("Enqueue %d: %v", i, err)
			}
			w.Stats()
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Error("Enqueue or Stats waited for the stuck commit")
	}
	tx.Rollback()
	w.spool.mu.Unlock()
	w.commitMu.Unlock()
	<-done
	closeWriterNoInflux(t, w, 1000)
}

// closeWriterNoInflux closes a spool-only Writer and checks that want
// points were kept.
func closeWriterNoInflux(t *testing.T, w *Writer, want int) {
	t.Helper()
	if n, err := w.Close(context.Background()); n != want || err != nil {
		t.Errorf("Close() = %d, %v; want %d kept", n, err, want)
	}
}

// TestStatsNeverShowBytesWithoutPoints: while points are enqueued,
// committed, sent and deleted, every Stats snapshot counts each waiting
// point once, with its bytes: with lines of one size, SpoolBytes is always
// SpoolPoints times that size. A snapshot with bytes and no points is the
// false "drained" /readyz, the metrics and the chaos tests could see.
func TestStatsNeverShowBytesWithoutPoints(t *testing.T) {
	s := influxtest.Start(t)
	opts := fastOptions(t, s.URL(), s.Bucket())
	opts.FsyncInterval, opts.FlushInterval = time.Millisecond, time.Millisecond
	w := newWriter(t, opts)
	run(t, w)
	point := func(i int) schema.Point {
		return schema.Point{Measurement: schema.MeasurementRequest, Fields: []schema.Field{{Key: "request_id", Value: fmt.Sprintf("%08d", i)}},
			Time: time.Unix(1_772_366_400, int64(100_000_000+i))}
	}
	line, _ := schema.Line(point(0))
	size := entrySize([]byte(line))

	const n = 3000
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(done)
		for i := 0; i < n; i += 10 {
			pts := make([]schema.Point, 10)
			for j := range pts {
				pts[j] = point(i + j)
			}
			if err := w.Enqueue(pts...); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	})
	var snapshots, bad int
	var first Stats
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		st := w.Stats()
		snapshots++
		if st.SpoolBytes != int64(st.SpoolPoints)*size || st.SpoolRecords != st.SpoolPoints {
			if bad == 0 {
				first = st
			}
			bad++
		}
	}
	wg.Wait()
	closeWriter(t, w)
	if bad > 0 {
		t.Errorf("%d of %d snapshots inconsistent, the first: SpoolPoints %d, SpoolRecords %d, SpoolBytes %d; want bytes = points x %d",
			bad, snapshots, first.SpoolPoints, first.SpoolRecords, first.SpoolBytes, size)
	}
	if c := s.Count(t, schema.MeasurementRequest, ""); c != n {
		t.Errorf("%d points stored, want %d", c, n)
	}
}

// TestURLPasswordRedacted: the password of a URL's userinfo never reaches
// the sink's log lines or its errors.
func TestURLPasswordRedacted(t *testing.T) {
	const password = "pw-do-not-log-7f3e"
	logs := &testlog.Buffer{}
	opts := fastOptions(t, "http://u:"+password+"@127.0.0.1:1", "db/rp")
	w, err := NewWriter(opts, newTestLogger(t, logs))
	if err != nil {
		t.Fatal(err)
	}
	run(t, w)
	if err := w.Enqueue(telemetryPoints(0, 1)...); err != nil {
		t.Fatal(err)
	}
	basic.WaitFor(t, "a failed write", 10*time.Second, func() bool { return strings.Contains(logs.String(), "writes to InfluxDB failed") })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	w.Close(ctx)
	if strings.Contains(logs.String(), password) || !strings.Contains(logs.String(), "u:xxxxx@127.0.0.1:1") {
		t.Errorf("log lines show the password, or not the redacted URL:\n%s", logs)
	}
	for _, bad := range []string{"ftp://u:" + password + "@h", "http://u:" + password + "@h:port"} {
		opts.URL = bad
		if _, err := NewWriter(opts, nil); err == nil || strings.Contains(err.Error(), password) {
			t.Errorf("NewWriter(%q) error = %v, want one without the password", bad, err)
		}
	}
}

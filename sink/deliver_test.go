package sink

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	http2 "github.com/influxdata/influxdb-client-go/v2/api/http"

	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/internal/testlog"
	"github.com/deadlabour/deadlabour/internal/testutil/basic"
	"github.com/deadlabour/deadlabour/schema"
)

func TestClassify(t *testing.T) {
	withBody := func(code int, body string) error {
		h := http.Header{}
		h.Set(capturedBody, body)
		return &http2.Error{StatusCode: code, Header: h}
	}
	tests := []struct {
		name    string
		err     error
		act     action
		state   State
		message string
	}{
		{"nil", nil, actDelivered, StateOK, ""},
		{"413", withBody(413, "Request Entity Too Large"), actSplit, StateOK, "Request Entity Too Large"},
		{"400 json", withBody(400, `{"error":"partial write: field type conflict"}`), actBisect, StateOK, "partial write: field type conflict"},
		{"422", withBody(422, `{"code":"unprocessable","message":"points beyond retention"}`), actBisect, StateOK, "points beyond retention"},
		{"401", withBody(401, `{"error":"authorization failed"}`), actHold, StateUnauthorized, "authorization failed"},
		{"403", withBody(403, "forbidden"), actHold, StateUnauthorized, "forbidden"},
		{"404", withBody(404, `{"error":"database not found: \"x\""}`), actHold, StateNoBucket, `database not found: "x"`},
		{"429", withBody(429, "slow down"), actRetry, StateRetrying, "slow down"},
		{"500", withBody(500, "engine error"), actRetry, StateRetrying, "engine error"},
		{"503", withBody(503, ""), actRetry, StateRetrying, "Unexpected status code 503"},
		{"network", http2.NewError(&net.OpError{Op: "dial", Err: errors.New("connection refused")}), actRetry, StateRetrying, "dial: connection refused"},
		{"plain", errors.New("boom"), actRetry, StateRetrying, "boom"},
	}
	for _, tt := range tests {
		o := classify(tt.err)
		if o.act != tt.act || tt.act != actSplit && tt.act != actBisect && o.state != tt.state || o.message != tt.message {
			t.Errorf("%s: classify = act %d state %v message %q; want act %d state %v message %q",
				tt.name, o.act, o.state, o.message, tt.act, tt.state, tt.message)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{" 2 ", 2 * time.Second},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"soon", 0},
	}
	for _, tt := range tests {
		h := http.Header{}
		h.Set("Retry-After", tt.v)
		if got := retryAfter(h, now); got != tt.want {
			t.Errorf("retryAfter(%q) = %v, want %v", tt.v, got, tt.want)
		}
	}
}

// TestPoisonedBatch: lines InfluxDB refuses inside a batch (a field type
// conflict, a point older than the retention policy) are found by
// bisection and kept in the dead-letter file with the server's message;
// every other line of the batch is delivered, and what comes after flows.
func TestPoisonedBatch(t *testing.T) {
	s := influxtest.Start(t)
	s.Exec(t, `CREATE RETENTION POLICY "week" ON "deadlabour" DURATION 7d REPLICATION 1 DEFAULT`)
	now := time.Now()
	s.Write(t, fmt.Sprintf(`conflict v="a string",w="a string" %d`, now.Add(-time.Second).UnixNano()))
	opts := fastOptions(t, s.URL(), influxtest.Database+"/week")
	opts.BatchSize = 1000
	logs := &testlog.Buffer{}
	w, err := NewWriter(opts, newTestLogger(t, logs))
	if err != nil {
		t.Fatal(err)
	}
	run(t, w)
	var pts []schema.Point
	for i := range 1000 {
		pts = append(pts, schema.Point{Measurement: "ok", Fields: []schema.Field{{Key: "i", Value: int64(i)}}, Time: now.Add(time.Duration(i))})
	}
	pts[137] = schema.Point{Measurement: "conflict", Fields: []schema.Field{{Key: "v", Value: 1.5}}, Time: now}
	// Another field: two lines refused alike would be the sink's problem (held).
	pts[600] = schema.Point{Measurement: "conflict", Fields: []schema.Field{{Key: "w", Value: 2.5}}, Time: now.Add(time.Second)}
	pts[999] = schema.Point{Measurement: "ok", Fields: []schema.Field{{Key: "i", Value: int64(999)}}, Time: now.Add(-30 * 24 * time.Hour)} // beyond 7d
	if err := w.Enqueue(pts...); err != nil {
		t.Fatal(err)
	}
	q := `SELECT * FROM "week"."ok"`
	basic.WaitFor(t, "997 delivered", 10*time.Second, func() bool { return len(s.Rows(t, q)) == 997 })
	basic.WaitFor(t, "the batch resolved", 10*time.Second, func() bool { return w.Stats().SpoolPoints == 0 })
	if err := w.Enqueue(schema.Point{Measurement: "ok", Fields: []schema.Field{{Key: "i", Value: int64(5000)}}, Time: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	basic.WaitFor(t, "the next point", 10*time.Second, func() bool { return len(s.Rows(t, q)) == 998 })
	closeWriter(t, w)

	st := w.Stats()
	if st.DeadLettered != 3 || st.Sent != 998 || st.Dropped != 0 {
		t.Errorf("Stats() = %+v, want 3 dead-lettered, 998 sent", st)
	}
	dl, err := os.ReadFile(filepath.Join(opts.Dir, DeadLetterFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"status=400", "field type conflict", "points beyond retention policy",
		fmt.Sprintf("conflict v=1.5 %d\n", now.UnixNano()), fmt.Sprintf("ok i=999i %d\n", now.Add(-30*24*time.Hour).UnixNano())} {
		if !strings.Contains(string(dl), want) {
			t.Errorf("dead-letter file lacks %q:\n%s", want, dl)
		}
	}
	if n := strings.Count(logs.String(), "kept in the dead-letter file"); n != 1 {
		t.Errorf("%d log lines about dead letters, want 1 for the spell:\n%s", n, logs)
	}
}

// TestTooLargeSplits: a batch over InfluxDB's max-body-size (413) is split
// until the halves pass; a single line over it is dead-lettered. (Without
// gzip: InfluxDB 1.8 checks the size of bodies that say their length.)
func TestTooLargeSplits(t *testing.T) {
	s := influxtest.StartWith(t, influxtest.Options{MaxBodyBytes: 20_000})
	opts := fastOptions(t, s.URL(), s.Bucket())
	opts.BatchSize, opts.NoGzip = 200, true
	w := newWriter(t, opts)
	rng := rand.New(rand.NewPCG(1, 2))
	noise := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.IntN(26)) + 'a'
		}
		return string(b)
	}
	var pts []schema.Point
	for i := range 200 {
		pts = append(pts, schema.Point{Measurement: "big", Fields: []schema.Field{{Key: "i", Value: int64(i)}, {Key: "pad", Value: noise(300)}}, Time: time.Unix(1_772_366_400, int64(i))})
	}
	huge := noise(40_000)
	pts[50].Fields[1].Value = huge
	if err := w.Enqueue(pts...); err != nil {
		t.Fatal(err)
	}
	closeWriter(t, w)
	if n := s.Count(t, "big", ""); n != 199 {
		t.Errorf("%d points stored, want 199", n)
	}
	if st := w.Stats(); st.DeadLettered != 1 || st.Sent != 199 {
		t.Errorf("Stats() = %+v, want 1 dead-lettered (the 30 KB line), 199 sent", st)
	}
	dl, _ := os.ReadFile(filepath.Join(opts.Dir, DeadLetterFile))
	if !strings.Contains(string(dl), "status=413") || !strings.Contains(string(dl), huge) {
		t.Errorf("dead-letter file lacks the 413 line")
	}
}

// faultProxy sits in front of the real InfluxDB and answers the first
// `fail` writes itself with status and header, then forwards. seen has
// the times of the first 100 writes.
type faultProxy struct {
	*httptest.Server
	fail   atomic.Int32
	writes atomic.Int32
	seen   chan time.Time
}

func newFaultProxy(t *testing.T, target string, status int, header http.Header, fail int) *faultProxy {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	p := &faultProxy{seen: make(chan time.Time, 100)}
	p.fail.Store(int32(fail))
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/write") {
			p.writes.Add(1)
			select {
			case p.seen <- time.Now(): // the first 100
			default:
			}
			if p.fail.Add(-1) >= 0 {
				for k, v := range header {
					w.Header()[k] = v
				}
				w.WriteHeader(status)
				fmt.Fprint(w, "injected")
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

// TestRetryAfterHonoured: 503 and 429 with Retry-After (seconds, HTTP
// date) wait as told, keep the batch, and deliver it once InfluxDB takes it.
func TestRetryAfterHonoured(t *testing.T) {
	s := influxtest.Start(t)
	httpDate := func() string { return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat) }
	for _, tc := range []struct {
		status int
		header func() string
		wait   time.Duration
	}{
		{http.StatusServiceUnavailable, func() string { return "1" }, time.Second},
		{http.StatusTooManyRequests, httpDate, time.Second}, // 1 to 2 s: the date has whole seconds
		{http.StatusBadGateway, nil, 0},
		{http.StatusGatewayTimeout, nil, 0},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			if tc.header != nil {
				h.Set("Retry-After", tc.header())
			}
			p := newFaultProxy(t, s.URL(), tc.status, h, 2)
			opts := fastOptions(t, p.URL, s.Bucket())
			opts.BackoffMax = 5 * time.Second
			w := newWriter(t, opts)
			m := fmt.Sprintf("retry%d", tc.status)
			if err := w.Enqueue(schema.Point{Measurement: m, Fields: []schema.Field{{Key: "v", Value: 1.0}}, Time: time.Unix(1_772_366_400, 0)}); err != nil {
				t.Fatal(err)
			}
			closeWriter(t, w)
			if n := s.Count(t, m, ""); n != 1 {
				t.Fatalf("%d points stored, want 1", n)
			}
			var at []time.Time
			for len(p.seen) > 0 {
				at = append(at, <-p.seen)
			}
			if len(at) != 3 {
				t.Fatalf("%d write attempts, want 3 (2 refused, 1 delivered)", len(at))
			}
			for i := 1; i < len(at); i++ {
				if gap := at[i].Sub(at[i-1]); gap < tc.wait-50*time.Millisecond || tc.wait == 0 && gap > time.Second {
					t.Errorf("attempt %d came %v after the one before; Retry-After %q", i+1, gap, h.Get("Retry-After"))
				}
			}
			if st := w.Stats(); st.Retries != 2 || st.Sent != 1 || st.State != StateOK {
				t.Errorf("Stats() = %+v, want 2 retries, 1 sent, ok", st)
			}
		})
	}
}

// TestUnauthorizedAndNoBucket: a wrong token (401) or a missing database
// (404) delivers nothing and loses nothing: the state and the reason say
// why, one log line says it, and a Writer with the right settings later
// delivers every point.
func TestUnauthorizedAndNoBucket(t *testing.T) {
	s := influxtest.StartWith(t, influxtest.Options{Auth: true})
	for _, tc := range []struct {
		name, token, bucket string
		state               State
		logLine, reason     string
	}{
		{"wrong token", "admin:wrong", s.Bucket(), StateUnauthorized, "InfluxDB refused the token", "authorization failed"},
		{"no token", "", s.Bucket(), StateUnauthorized, "InfluxDB refused the token", "unable to parse authentication credentials"},
		{"no bucket", s.Token(), "nosuchdb/autogen", StateNoBucket, "InfluxDB has no such bucket", "database not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := fastOptions(t, s.URL(), tc.bucket)
			opts.Token = tc.token
			opts.BackoffMax = 200 * time.Millisecond
			logs := &testlog.Buffer{}
			w, err := NewWriter(opts, newTestLogger(t, logs))
			if err != nil {
				t.Fatal(err)
			}
			run(t, w)
			m := strings.ReplaceAll(tc.name, " ", "_")
			pts := make([]schema.Point, 30)
			for i := range pts {
				pts[i] = schema.Point{Measurement: m, Fields: []schema.Field{{Key: "i", Value: int64(i)}}, Time: time.Unix(1_772_366_400, int64(i))}
			}
			if err := w.Enqueue(pts...); err != nil {
				t.Fatal(err)
			}
			basic.WaitFor(t, "three refusals", 10*time.Second, func() bool { return w.Stats().Retries >= 3 })
			st := w.Stats()
			if st.State != tc.state || !strings.Contains(st.Reason, tc.reason) || st.SpoolPoints != 30 {
				t.Errorf("Stats() = %+v, want %v because %q, 30 kept", st, tc.state, tc.reason)
			}
			if n := strings.Count(logs.String(), tc.logLine); n != 1 {
				t.Errorf("%d log lines saying %q, want 1:\n%s", n, tc.logLine, logs)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if n, _ := w.Close(ctx); n != 30 {
				t.Fatalf("Close left %d, want 30", n)
			}
			opts.Token, opts.Bucket = s.Token(), s.Bucket()
			closeWriter(t, newWriter(t, opts))
			if n := s.Count(t, m, ""); n != 30 {
				t.Errorf("%d points stored after fixing it, want 30", n)
			}
		})
	}
}

// TestRefusedEveryLineHolds: a 400 that applies to every line (here from a
// proxy in front of InfluxDB; in life a schema clash or a gateway) does not
// bisect the spool into the dead-letter file: the batch is held, the state
// says why and one log line says it, and once the cause is gone every point
// is delivered and none is dead-lettered. A lone refused line, and lines
// beyond the retention policy, are dead-lettered as before: they are about
// the line, not the sink.
func TestRefusedEveryLineHolds(t *testing.T) {
	s := influxtest.Start(t)
	p := newFaultProxy(t, s.URL(), http.StatusBadRequest, nil, 1<<30)
	opts := fastOptions(t, p.URL, s.Bucket())
	opts.BatchSize = 50
	logs := &testlog.Buffer{}
	w, err := NewWriter(opts, newTestLogger(t, logs))
	if err != nil {
		t.Fatal(err)
	}
	run(t, w)
	pts := make([]schema.Point, 120)
	for i := range pts {
		pts[i] = schema.Point{Measurement: "held", Fields: []schema.Field{{Key: "i", Value: int64(i)}}, Time: time.Unix(1_772_366_400, int64(i))}
	}
	if err := w.Enqueue(pts...); err != nil {
		t.Fatal(err)
	}
	basic.WaitFor(t, "the sink to say it is refused", 10*time.Second, func() bool { return w.Stats().State == StateRefused })
	writes := p.writes.Load()
	basic.WaitFor(t, "three more attempts", 10*time.Second, func() bool { return p.writes.Load() >= writes+3 })
	st := w.Stats()
	if st.DeadLettered != 0 || st.Dropped != 0 || st.SpoolPoints != 120 || !strings.Contains(st.Reason, "injected") {
		t.Errorf("Stats() while every line is refused = %+v; want all 120 kept, none dead-lettered, the reason", st)
	}
	if _, err := os.Stat(filepath.Join(opts.Dir, DeadLetterFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dead-letter file: %v, want none", err)
	}
	if n := strings.Count(logs.String(), "InfluxDB refuses lines alike"); n != 1 {
		t.Errorf("%d log lines about it, want 1:\n%s", n, logs)
	}

	p.fail.Store(0) // fixed
	basic.WaitFor(t, "every point delivered", 10*time.Second, func() bool { return w.Stats().Sent == 120 })
	closeWriter(t, w)
	if n := s.Count(t, "held", ""); n != 120 {
		t.Errorf("%d points stored, want 120", n)
	}
	if st := w.Stats(); st.State != StateOK || st.DeadLettered != 0 {
		t.Errorf("Stats() after the fix = %+v, want ok, nothing dead-lettered", st)
	}
	if !strings.Contains(logs.String(), "writes to InfluxDB resumed") {
		t.Error("no log line saying writes resumed")
	}

	t.Run("lone lines and lines beyond retention are dead-lettered", func(t *testing.T) {
		s.Exec(t, `CREATE RETENTION POLICY "day" ON "deadlabour" DURATION 1d REPLICATION 1 DEFAULT`)
		opts := fastOptions(t, s.URL(), influxtest.Database+"/day")
		w := newWriter(t, opts)
		now, old := time.Now(), time.Now().Add(-7*24*time.Hour)
		s.Write(t, fmt.Sprintf(`lone v0="s",v1="s",v2="s" %d`, now.Add(-time.Second).UnixNano()))
		sendAlone := func(field string, at time.Time) {
			t.Helper()
			if err := w.Enqueue(schema.Point{Measurement: "lone", Fields: []schema.Field{{Key: field, Value: 1.5}}, Time: at}); err != nil {
				t.Fatal(err)
			}
			if err := w.commit(); err != nil {
				t.Fatal(err)
			}
			for range 2 { // a lone refused line is tried twice
				b, err := w.spool.next(1000, 1<<20)
				if err != nil || b.n() != 1 {
					t.Fatalf("batch of %d, %v", b.n(), err)
				}
				if err := w.send(context.Background(), &b); err != nil {
					t.Fatal(err)
				}
			}
		}
		// A field type conflict on another field each time: one batch of
		// one line each, refused each for its own reason.
		for i := range 3 {
			sendAlone(fmt.Sprintf("v%d", i), now.Add(time.Duration(i)))
		}
		pts := make([]schema.Point, 40)
		for i := range pts {
			pts[i] = schema.Point{Measurement: "old", Fields: []schema.Field{{Key: "i", Value: int64(i)}}, Time: old.Add(time.Duration(i))}
		}
		if err := w.Enqueue(pts...); err != nil {
			t.Fatal(err)
		}
		if err := w.commit(); err != nil {
			t.Fatal(err)
		}
		for w.Stats().SpoolPoints > 0 {
			b, _ := w.spool.next(1000, 1<<20)
			if err := w.send(context.Background(), &b); err != nil {
				t.Fatal(err)
			}
		}
		if st := w.Stats(); st.DeadLettered != 43 || st.State != StateOK {
			t.Errorf("Stats() = %+v, want 43 dead-lettered, ok", st)
		}
		// Two lone lines in a row refused alike are the sink's problem.
		sendAlone("v0", now.Add(10))
		sendAlone("v0", now.Add(11))
		if st := w.Stats(); st.DeadLettered != 44 || st.State != StateRefused || st.SpoolPoints != 1 {
			t.Errorf("Stats() = %+v, want the first dead-lettered, the second held", st)
		}
		if n, err := w.Close(context.Background()); n != 1 || err == nil || !strings.Contains(err.Error(), "refuses lines alike") {
			t.Errorf("Close() = %d, %v; want the held line left, and why", n, err)
		}
	})
}

// TestFieldTypeConflictHolds: a field written with another type into the
// shard beforehand (prompt_tokens as a string) refuses every record that
// has prompt_tokens; telemetry in the same batches is taken (InfluxDB 1.8
// answers "partial write" and writes the rest). Whatever the batches hold
// (a GPU window every 1 s or every 10 s of polls), the sink holds them:
// the state is refused with InfluxDB's message, one ERROR line, at most
// one line dead-lettered; once the clash is removed, every record not
// dead-lettered is delivered.
func TestFieldTypeConflictHolds(t *testing.T) {
	for _, interval := range []int{1, 10} { // gpu.report_interval, in seconds of 10 polls
		t.Run(fmt.Sprintf("report_interval=%ds", interval), func(t *testing.T) {
			s := influxtest.Start(t)
			recs := requestPoints(t, records(300))
			s.Write(t, fmt.Sprintf(`%s,host=x prompt_tokens="notanint" %d`, schema.MeasurementRequest, recs[0].Time.Add(-time.Second).UnixNano()))
			opts := fastOptions(t, s.URL(), s.Bucket())
			logs := &testlog.Buffer{}
			w, err := NewWriter(opts, newTestLogger(t, logs))
			if err != nil {
				t.Fatal(err)
			}
			run(t, w)
			for poll := range 100 { // three records a poll, a window of 8 GPUs each interval
				pts := recs[poll*3 : poll*3+3]
				if poll%(10*interval) == 0 {
					pts = slices.Concat(pts, telemetryPoints(poll*8, 8))
				}
				if err := w.Enqueue(pts...); err != nil {
					t.Fatal(err)
				}
				time.Sleep(2 * time.Millisecond)
			}
			basic.WaitFor(t, "the sink to hold", 10*time.Second, func() bool { return w.Stats().State == StateRefused })
			time.Sleep(4 * opts.BackoffMax) // tried again, still refused
			st := w.Stats()
			if st.DeadLettered > 1 || st.SpoolRecords < 299 || st.State != StateRefused || !strings.Contains(st.Reason, "field type conflict") {
				t.Errorf("Stats() = %+v; want the records held, at most one dead-lettered, refused with InfluxDB's message", st)
			}
			if n := strings.Count(logs.String(), "InfluxDB refuses lines alike"); n != 1 {
				t.Errorf("%d log lines about the hold, want 1:\n%s", n, logs)
			}
			if n := strings.Count(logs.String(), "kept in the dead-letter file"); n > 1 {
				t.Errorf("%d log lines about dead letters, want at most 1:\n%s", n, logs)
			}

			s.Exec(t, `DROP MEASUREMENT "deadlabour_request"`) // the clash removed
			basic.WaitFor(t, "everything delivered", 10*time.Second, func() bool { return w.Stats().SpoolPoints == 0 })
			closeWriter(t, w)
			st = w.Stats()
			if n := s.Count(t, schema.MeasurementRequest, ""); n != 300-int(st.DeadLettered) || st.State != StateOK {
				t.Errorf("%d records stored, %d dead-lettered, state %v; want all 300 accounted for, ok", n, st.DeadLettered, st.State)
			}
		})
	}
}

package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/influxdata/influxdb-client-go/v2/api"
	http2 "github.com/influxdata/influxdb-client-go/v2/api/http"
)

// Options configure a Writer. Zero durations and sizes take the defaults.
type Options struct {
	// URL is InfluxDB's base URL, e.g. http://127.0.0.1:8086.
	URL string
	// Bucket is "database/retention-policy" on InfluxDB 1.8, e.g.
	// "deadlabour/autogen"; a bucket name on 2.x.
	Bucket string
	// Org is empty on InfluxDB 1.8.
	Org string
	// Token is "user:password" on InfluxDB 1.8 with auth, empty without.
	// The caller reads it from the environment or a file.
	Token string
	// BatchSize is the most points per write request (default 1000).
	BatchSize int
	// FlushInterval is the longest a point waits for its batch to fill
	// (default 1 s).
	FlushInterval time.Duration
	// MaxQueue is how many points wait while InfluxDB is slow or down
	// (default 100 000); points beyond it are dropped and counted.
	MaxQueue int
	// Timeout bounds each write request (default 5 s).
	Timeout time.Duration
	// BackoffMin and BackoffMax bound the wait after a failed write: it
	// doubles from BackoffMin up to BackoffMax (defaults 100 ms and 30 s),
	// or follows the server's Retry-After up to BackoffMax.
	BackoffMin, BackoffMax time.Duration
}

// Defaults of Options.
const (
	DefaultBatchSize     = 1000
	DefaultFlushInterval = time.Second
	DefaultMaxQueue      = 100_000
	DefaultTimeout       = 5 * time.Second
	DefaultBackoffMin    = 100 * time.Millisecond
	DefaultBackoffMax    = 30 * time.Second
)

var (
	// ErrQueueFull: Enqueue dropped points because MaxQueue were waiting.
	ErrQueueFull = errors.New("sink: queue full")
	// ErrClosed: the Writer was closed.
	ErrClosed = errors.New("sink: writer closed")
)

// Stats are a Writer's counters since it was made.
type Stats struct {
	Queued   int    // points waiting, the batch in flight included
	Written  uint64 // points InfluxDB acknowledged
	Dropped  uint64 // points refused because the queue was full or the writer closed
	Invalid  uint64 // points the encoder refused (Enqueue returned why)
	Rejected uint64 // points InfluxDB refused for good (400, 413 or 422 on a point alone)
	Failures uint64 // write requests that failed and were retried
}

// Writer delivers points to InfluxDB in batches from one sender goroutine
// (Run). Enqueue never blocks on the network, so the proxy and the pollers
// never wait for the database; when InfluxDB is down the batch in flight
// is retried with capped backoff and new points wait in a bounded queue.
type Writer struct {
	opts   Options
	log    *slog.Logger
	client influxdb2.Client
	httpc  *http.Client
	api    api.WriteAPIBlocking

	mu      sync.Mutex
	q       queue
	closed  bool
	runDone chan struct{} // non-nil once Run started; closed when it returns

	quit chan struct{} // closed by Close: Run returns
	wake chan struct{} // a full batch waits; capacity 1, sends never block

	written, dropped, invalid, rejected, failures atomic.Uint64
}

// NewWriter checks opts and makes a Writer; it does not connect yet. A nil
// log discards.
func NewWriter(opts Options, log *slog.Logger) (*Writer, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	httpc := &http.Client{Timeout: opts.Timeout, Transport: http.DefaultTransport.(*http.Transport).Clone()}
	client := influxdb2.NewClientWithOptions(opts.URL, opts.Token,
		influxdb2.DefaultOptions().SetHTTPClient(httpc).SetApplicationName("deadlabour"))
	return &Writer{
		opts:   opts,
		log:    log.With("component", "sink", "url", opts.URL, "bucket", opts.Bucket),
		client: client,
		httpc:  httpc,
		api:    client.WriteAPIBlocking(opts.Org, opts.Bucket),
		q:      newMemQueue(opts.MaxQueue),
		quit:   make(chan struct{}),
		wake:   make(chan struct{}, 1),
	}, nil
}

func (o Options) withDefaults() (Options, error) {
	u, err := url.Parse(o.URL)
	switch {
	case err != nil:
		return o, fmt.Errorf("sink: Options.URL %q: %w", o.URL, err)
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		return o, fmt.Errorf("sink: Options.URL %q: want http:// or https:// and a host", o.URL)
	case o.Bucket == "":
		return o, errors.New(`sink: Options.Bucket is empty: want "database/retention-policy" on InfluxDB 1.8`)
	}
	for _, c := range []struct {
		name string
		bad  bool
	}{
		{"BatchSize", o.BatchSize < 0},
		{"MaxQueue", o.MaxQueue < 0},
		{"FlushInterval", o.FlushInterval < 0},
		{"Timeout", o.Timeout < 0},
		{"BackoffMin", o.BackoffMin < 0},
		{"BackoffMax", o.BackoffMax < 0},
	} {
		if c.bad {
			return o, fmt.Errorf("sink: Options.%s is negative", c.name)
		}
	}
	setDefault(&o.BatchSize, DefaultBatchSize)
	setDefault(&o.MaxQueue, DefaultMaxQueue)
	setDefault(&o.FlushInterval, DefaultFlushInterval)
	setDefault(&o.Timeout, DefaultTimeout)
	setDefault(&o.BackoffMin, DefaultBackoffMin)
	setDefault(&o.BackoffMax, DefaultBackoffMax)
	if o.BackoffMin > o.BackoffMax {
		return o, fmt.Errorf("sink: Options.BackoffMin %v is more than BackoffMax %v", o.BackoffMin, o.BackoffMax)
	}
	return o, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Enqueue encodes points and queues them for the sender; it never waits on
// the network. Points the encoder refuses and points beyond MaxQueue are
// not queued: the error says which and why (wrapping ErrNonFinite,
// ErrInvalid, ErrQueueFull or ErrClosed), and the rest are queued.
func (w *Writer) Enqueue(points ...Point) error {
	var errs []error
	lines := make([]string, 0, len(points))
	buf := make([]byte, 0, 1024) // a request line is about 800 bytes
	for _, p := range points {
		var err error
		if buf, err = AppendLine(buf[:0], p); err != nil {
			w.invalid.Add(1)
			errs = append(errs, err)
			continue
		}
		lines = append(lines, string(buf))
	}

	w.mu.Lock()
	accepted := 0
	if !w.closed {
		accepted = w.q.push(lines)
	}
	full := w.q.len() >= w.opts.BatchSize
	closed := w.closed
	w.mu.Unlock()

	if n := len(lines) - accepted; n > 0 {
		w.dropped.Add(uint64(n))
		if closed {
			errs = append(errs, fmt.Errorf("%w: %d points dropped", ErrClosed, n))
		} else {
			errs = append(errs, fmt.Errorf("%w: %d points dropped, %d waiting", ErrQueueFull, n, w.opts.MaxQueue))
		}
	}
	if full {
		select {
		case w.wake <- struct{}{}:
		default: // the sender is already told
		}
	}
	return errors.Join(errs...)
}

// Stats returns the Writer's counters.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	queued := w.q.len()
	w.mu.Unlock()
	return Stats{
		Queued:   queued,
		Written:  w.written.Load(),
		Dropped:  w.dropped.Load(),
		Invalid:  w.invalid.Load(),
		Rejected: w.rejected.Load(),
		Failures: w.failures.Load(),
	}
}

// Run sends batches until ctx is done or Close is called: a batch as soon as
// BatchSize points wait, and whatever waits every FlushInterval. It returns
// nil then, or ErrClosed if the Writer was closed or already running.
// Points still queued are Close's to flush.
func (w *Writer) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.closed || w.runDone != nil {
		w.mu.Unlock()
		return ErrClosed
	}
	done := make(chan struct{})
	w.runDone = done
	w.mu.Unlock()
	defer close(done)

	// Close cancels the write in flight too: it will send that batch again.
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-w.quit:
			cancel()
		case <-ctx.Done():
		}
	})
	defer wg.Wait()
	defer cancel()

	tick := time.NewTicker(w.opts.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake:
			_ = w.drain(ctx, false) // only ctx ends it early; the loop sees that
		case <-tick.C:
			_ = w.drain(ctx, true)
		}
	}
}

// Close stops Run, then flushes what is queued until it is delivered or ctx
// is done, and releases the connections. It returns how many points were
// left undelivered, with ctx's error if that is why. Later Enqueues drop.
func (w *Writer) Close(ctx context.Context) (undelivered int, err error) {
	w.mu.Lock()
	if w.closed {
		n := w.q.len()
		w.mu.Unlock()
		return n, nil
	}
	w.closed = true
	runDone := w.runDone
	w.mu.Unlock()

	close(w.quit)
	if runDone != nil {
		// Quitting cancels Run's write in flight, so this is quick.
		<-runDone
	}
	err = w.drain(ctx, true)
	w.client.Close()
	w.httpc.CloseIdleConnections()

	if n := w.Stats().Queued; n > 0 {
		return n, fmt.Errorf("sink: close: %d points undelivered: %w", n, err)
	}
	return 0, nil
}

// drain writes queued batches until fewer than BatchSize wait (all of them
// if partial) or ctx is done, retrying a failed batch with backoff.
func (w *Writer) drain(ctx context.Context, partial bool) error {
	var (
		limit    = w.opts.BatchSize
		shrunk   int // lines left of a batch InfluxDB refused whole: sent in halves
		backoff  time.Duration
		failures int
		since    time.Time
	)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		w.mu.Lock()
		batch := w.q.peek(limit)
		w.mu.Unlock()
		if len(batch) == 0 || len(batch) < limit && !partial && shrunk == 0 {
			return nil
		}

		wctx, cancel := context.WithTimeout(ctx, w.opts.Timeout)
		err := w.api.WriteRecord(wctx, batch...)
		cancel()

		var herr *http2.Error
		errors.As(err, &herr)
		switch {
		case err == nil:
			w.written.Add(uint64(len(batch)))
			if failures > 0 {
				w.log.Info("writes resumed", "failed_attempts", failures, "after", time.Since(since).Round(time.Millisecond))
				failures, backoff = 0, 0
			}
		case herr != nil && refusesBatch(herr.StatusCode) && len(batch) > 1:
			// Find the bad points: halve until they stand alone. The
			// good ones may be written twice; a rewrite overwrites.
			if shrunk == 0 {
				shrunk = len(batch)
			}
			limit = max(1, len(batch)/2)
			continue
		case herr != nil && refusesBatch(herr.StatusCode):
			w.rejected.Add(1)
			w.log.Error("InfluxDB refused a point; dropped it", "status", herr.StatusCode, "err", err, "line", batch[0])
		default:
			if ctx.Err() != nil {
				return ctx.Err() // cancelled, not failed: the batch stays
			}
			w.failures.Add(1)
			if failures == 0 {
				since = time.Now()
				w.log.Warn("write failed; retrying with backoff", "err", err, "points", len(batch))
			} else {
				w.log.Debug("write failed again", "err", err, "attempt", failures+1)
			}
			failures++
			backoff = w.nextBackoff(backoff, herr)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			continue
		}

		w.mu.Lock()
		w.q.drop(len(batch))
		w.mu.Unlock()
		if shrunk > 0 {
			if shrunk -= len(batch); shrunk <= 0 {
				shrunk, limit = 0, w.opts.BatchSize
			}
		}
	}
}

// refusesBatch: a status that will not change by retrying the same lines.
func refusesBatch(status int) bool {
	return status == http.StatusBadRequest || status == http.StatusRequestEntityTooLarge ||
		status == http.StatusUnprocessableEntity
}

// nextBackoff doubles prev within [BackoffMin, BackoffMax], with jitter,
// and honours a Retry-After up to BackoffMax.
func (w *Writer) nextBackoff(prev time.Duration, herr *http2.Error) time.Duration {
	next := min(max(2*prev, w.opts.BackoffMin), w.opts.BackoffMax)
	if herr != nil && herr.RetryAfter > 0 {
		return min(time.Duration(herr.RetryAfter)*time.Second, w.opts.BackoffMax)
	}
	// Between 3/4 and all of next, so restarted daemons do not march in step.
	return next - time.Duration(rand.Int64N(int64(next)/4+1))
}

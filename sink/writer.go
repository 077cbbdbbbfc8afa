package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/influxdata/influxdb-client-go/v2/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/deadlabour/deadlabour/internal/redact"
	"github.com/deadlabour/deadlabour/internal/ticker"
	"github.com/deadlabour/deadlabour/schema"
)

// ErrClosed: the Writer was closed.
var ErrClosed = errors.New("sink: writer closed")

// ErrSpoolFull: Enqueue dropped points because the spool is full.
var ErrSpoolFull = errors.New("sink: spool full")

// Writer stores points in the spool and delivers them to InfluxDB in
// batches. Enqueue never touches the disk or the network: a committer
// goroutine appends what was enqueued to the spool and fsyncs it every
// FsyncInterval, and one sender goroutine writes the committed points with
// WriteAPIBlocking and deletes them once InfluxDB answered 2xx (see
// deliver.go for each answer). Run runs both; Close commits what is left,
// flushes under a deadline and leaves the rest on disk for the next start.
type Writer struct {
	opts  Options
	log   *slog.Logger
	spool *spool
	dead  *deadLetters
	rec   spoolRecovery

	client influxdb2.Client // nil without InfluxDB
	httpc  *http.Client
	api    api.WriteAPIBlocking

	mu           sync.Mutex // Enqueue's; never held across I/O
	pending      []pendingLine
	pendingBytes int64
	stamps       *stamper
	closed       bool
	runDone      chan struct{} // non-nil once Run started; closed when it returns
	lineBytes    atomic.Int64  // mean line length of the last Enqueue, to size the next

	quit      chan struct{} // closed by Close: Run returns
	commitNow chan struct{} // capacity 1: the backlog is large
	sendNow   chan struct{} // capacity 1: a commit added points

	commitMu sync.Mutex  // one commit at a time (the loop, Close)
	closing  atomic.Bool // Close is flushing: a refusal that needs a person ends it

	corruptSeen uint64 // the sender's: corrupt entries up to this one are reported
	held        string // the sender's: why every line of the batch is refused ("" when not)
	lastRefused string // the sender's: the message that refused the whole last batch, if it was
	deferred    uint64 // the sender's: a lone refused line tried once more before it is dead-lettered

	m metrics
}

// NewWriter opens the spool in opts.Dir, replaying whatever an earlier run
// left there, and makes a Writer; it does not connect yet. A nil log
// discards.
func NewWriter(opts Options, log *slog.Logger) (*Writer, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "sink")
	sp, rec, err := openSpoolWith(opts.Dir, compactAbove, opts.MaxBytes)
	if err != nil {
		return nil, err
	}
	w := &Writer{
		opts:      opts,
		log:       log,
		spool:     sp,
		dead:      newDeadLetters(opts.Dir, opts.DeadLetterMaxBytes),
		rec:       rec,
		stamps:    newStamper(rec.floors),
		quit:      make(chan struct{}),
		commitNow: make(chan struct{}, 1),
		sendNow:   make(chan struct{}, 1),
		m:         newMetrics(),
	}
	w.lineBytes.Store(1024) // a request line is about 1.3 KB
	w.m.state.Store(int32(StateOK))
	if opts.URL == "" {
		w.m.state.Store(int32(StateDisabled))
		w.m.reason.Store(new("no InfluxDB configured (influx.url is empty): points are kept in the spool"))
		w.log.Info("no InfluxDB configured (influx.url is empty): records are kept in the spool, where `report` reads them",
			"dir", opts.Dir, "max_bytes", opts.MaxBytes)
	} else {
		w.httpc = &http.Client{Timeout: opts.Timeout, Transport: captureErrors(http.DefaultTransport.(*http.Transport).Clone())}
		w.client = influxdb2.NewClientWithOptions(opts.URL, opts.Token,
			influxdb2.DefaultOptions().SetHTTPClient(w.httpc).SetUseGZip(!opts.NoGzip).SetApplicationName("deadlabour"))
		w.api = w.client.WriteAPIBlocking(opts.Org, opts.Bucket)
		w.log = w.log.With("url", redact.URL(opts.URL), "bucket", opts.Bucket)
	}
	w.logRecovery()
	return w, nil
}

func (w *Writer) logRecovery() {
	r := w.rec
	if r.quarantined != "" {
		w.log.Error("the spool file was unreadable: moved aside, what could be read was kept, the rest is lost",
			"moved_to", r.quarantined, "salvaged_points", r.salvaged, "reason", r.reason)
		w.m.quarantined.Store(1)
	}
	if n := r.points[kindCost] + r.points[kindTelemetry]; n > 0 {
		w.log.Info("replaying points left in the spool by an earlier run", "records_and_idle", r.points[kindCost],
			"telemetry", r.points[kindTelemetry], "bytes", r.bytes, "dir", w.opts.Dir)
	}
	if r.compacted {
		w.log.Info("the empty spool file was compacted", "path", w.spool.path)
	}
}

// Enqueue encodes points and queues them for the spool; it never waits on
// the disk or the network. Points the encoder refuses, and points that do
// not fit in the spool, are dropped and counted: the error says which and
// why (wrapping ErrNonFinite, ErrInvalid, ErrSpoolFull or ErrClosed), and
// the rest are queued. A record refused for room may also be dropped at
// the next commit, when no older telemetry is left to make room for it.
func (w *Writer) Enqueue(points ...schema.Point) error {
	var errs []error
	type encoded struct {
		start, end int // in buf
		kind       kind
	}
	lines := make([]encoded, 0, len(points))
	// Sized from the lines of the last call, with a margin: a buffer
	// grown as it fills allocates twice what it keeps.
	per := w.lineBytes.Load()
	buf := make([]byte, 0, int(per+per/8)*len(points))
	for _, p := range points {
		var err error
		k := kindOf(p.Measurement)
		w.m.enqueued[k].Add(1)
		start := len(buf)
		if buf, err = schema.AppendLine(buf, p); err != nil {
			w.m.dropped[k][dropInvalid].Add(1)
			errs = append(errs, err)
			continue
		}
		lines = append(lines, encoded{start, len(buf), k})
	}
	if len(lines) > 0 {
		w.lineBytes.Store(int64(len(buf) / len(lines)))
	}
	now := w.opts.Now().UnixNano()

	var full, closed [numKinds]int
	w.mu.Lock()
	_, spooled := w.spool.counts() // staged lines included
	for _, e := range lines {
		l := pendingLine{line: buf[e.start:e.end:e.end], kind: e.kind, enqueued: now} // its own capacity: fix may grow it
		size := entrySize(l.line)
		switch {
		case w.closed:
			closed[l.kind]++
			continue
		case w.pendingBytes+size > maxBacklog:
			full[l.kind]++
			w.m.dropped[l.kind][dropBacklog].Add(1)
			continue
		case l.kind == kindTelemetry && spooled+w.pendingBytes+size > w.opts.MaxBytes:
			full[l.kind]++
			w.m.dropped[l.kind][dropSpoolFull].Add(1)
			continue
		}
		l.line = w.stamps.fix(l.line)
		w.pending = append(w.pending, l)
		w.pendingBytes += size
	}
	w.m.moved.Store(w.stamps.n)
	backlog := w.pendingBytes
	w.mu.Unlock()

	for k := range numKinds {
		if closed[k] > 0 {
			w.m.dropped[k][dropClosed].Add(uint64(closed[k]))
			errs = append(errs, fmt.Errorf("%w: %d %s points dropped", ErrClosed, closed[k], kind(k)))
		}
		if full[k] > 0 {
			errs = append(errs, fmt.Errorf("%w: %d %s points dropped (spool.max_bytes %d)", ErrSpoolFull, full[k], kind(k), w.opts.MaxBytes))
		}
	}
	if backlog > int64(w.opts.BatchBytes) {
		notify(w.commitNow)
	}
	return errors.Join(errs...)
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default: // already told
	}
}

// Run commits and sends until ctx is done or Close is called. It returns
// nil then, or ErrClosed if the Writer was closed or already running.
// What is still enqueued or spooled is Close's to commit and flush.
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
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-w.quit:
			cancel()
		case <-ctx.Done():
		}
	})
	wg.Go(func() { w.commitLoop(ctx) })
	if w.api != nil {
		wg.Go(func() { w.sendLoop(ctx) })
	}
	wg.Wait()
	return nil
}

func (w *Writer) commitLoop(ctx context.Context) {
	ticker.EveryOr(ctx, w.opts.FsyncInterval, w.commitNow, func() { w.commit() })
}

// commit writes what was enqueued to the spool in one fsynced transaction,
// with the deletions of what was delivered since the last one.
func (w *Writer) commit() error {
	w.commitMu.Lock()
	defer w.commitMu.Unlock()
	w.mu.Lock()
	lines, size := w.pending, w.pendingBytes
	w.pending, w.pendingBytes = nil, 0
	w.spool.stage(lines) // counted there until the commit counts them spooled
	w.mu.Unlock()

	start := time.Now()
	res, err := w.spool.commit(lines, w.opts.MaxBytes)
	if err != nil {
		// Nothing was written: the lines go back in front, and wait for the
		// next commit (or the backlog limit).
		w.mu.Lock()
		w.pending = append(lines, w.pending...)
		w.pendingBytes += size
		w.spool.unstage()
		w.mu.Unlock()
		w.m.commitErrors.Add(1)
		w.log.Error("spool commit failed; points wait in memory", "points", len(lines), "err", err)
		return err
	}
	if len(lines) > 0 {
		w.m.commit.Observe(time.Since(start).Seconds())
		notify(w.sendNow)
	}
	if res.evicted != [numKinds]int{} || res.dropped != [numKinds]int{} {
		w.m.dropped[kindTelemetry][dropSpoolFull].Add(uint64(res.evicted[kindTelemetry] + res.dropped[kindTelemetry]))
		w.m.dropped[kindCost][dropSpoolFull].Add(uint64(res.dropped[kindCost]))
		w.logDrop("spool full: points dropped to make room (telemetry first)",
			"telemetry_evicted", res.evicted[kindTelemetry], "telemetry_dropped", res.dropped[kindTelemetry],
			"records_dropped", res.dropped[kindCost], "max_bytes", w.opts.MaxBytes)
	}
	return nil
}

// logDrop logs a drop at most once every 10 s, so that a full spool
// during a long outage is one line every 10 s, not one per commit; the
// counters have every drop.
func (w *Writer) logDrop(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := w.m.lastDropLog.Load()
	if now-last < int64(10*time.Second) || !w.m.lastDropLog.CompareAndSwap(last, now) {
		return
	}
	d := w.m.droppedTotals()
	w.log.Warn(msg, append(args, "dropped_records_total", d[kindCost], "dropped_telemetry_total", d[kindTelemetry])...)
}

// Close stops accepting points and stops Run, commits what was enqueued,
// then delivers what the spool holds until it is empty or ctx is done, and
// closes the spool. Whatever is left stays on disk for the next start: it
// returns how many points that is, with ctx's error if that is why. Later
// Enqueues drop.
func (w *Writer) Close(ctx context.Context) (undelivered int, err error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return w.Stats().SpoolPoints, nil
	}
	w.closed = true
	runDone := w.runDone
	w.mu.Unlock()

	close(w.quit)
	if runDone != nil {
		<-runDone // quitting cancels Run's write in flight, so this is quick
	}
	cerr := w.commit()
	if w.api != nil && cerr == nil {
		w.closing.Store(true)
		err = w.flush(ctx)
	}
	cerr = errors.Join(cerr, w.commit()) // the deletions of what flush delivered
	n := w.Stats().SpoolPoints
	cerr = errors.Join(cerr, w.spool.close(), w.dead.close())
	if w.client != nil {
		w.client.Close()
		w.httpc.CloseIdleConnections()
	}
	if cerr != nil {
		return n, fmt.Errorf("sink: close: %w", cerr)
	}
	if n > 0 && w.api != nil {
		return n, fmt.Errorf("sink: close: %d points left in the spool for the next start: %w", n, err)
	}
	return n, nil
}

// ScanSpool calls yield with each line waiting in the spool, oldest first,
// as it will be sent, from one consistent snapshot; it stops when yield
// returns false. Lines enqueued in the last FsyncInterval are not there
// yet. It is what GET /v1/spool serves to `report` while the daemon runs.
func (w *Writer) ScanSpool(yield func(line string) bool) error {
	return w.spool.scan(yield)
}

// Collector returns the sink's Prometheus metrics, for the daemon's registry.
func (w *Writer) Collector() prometheus.Collector { return writerCollector{w} }

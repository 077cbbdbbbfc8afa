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
	journalBytes int64 // of the journal-only lines in pending
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
	held        string // the sender's: why lines of the batch are refused alike ("" when not)
	heldLine    string // the sender's: one of them, tried alone while held
	lastRefused string // the sender's: the message that refused the last line dead-lettered
	deferred    uint64 // the sender's: a lone refused line tried once more before it is dead-lettered

	spells    spoolSpells      // the committer's: the spool's disk full, the spool at max_bytes
	spellSeen [numKinds]uint64 // the committer's: spool_full drops seen at the last commit

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
	sp, rec, err := openSpoolLimited(opts.Dir, compactAbove, opts.MaxBytes, opts.fileLimit)
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
	w.initSpells()
	w.spells.disk.quiet, w.spells.atMax.quiet, w.spells.deadLetters.quiet = opts.spellQuiet, opts.spellQuiet, opts.spellQuiet
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
		lost := "none counted: every entry found was salvaged"
		switch {
		case r.fileBytes == 0:
			lost = "cannot be counted: the file is empty (cut short, or never written)"
		case !r.walked && r.skipped == 0:
			lost = "what lay past the damage cannot be counted"
		case !r.walked:
			lost = fmt.Sprintf("%d entries that failed their checksum, and what lay past the damage, uncounted", r.skipped)
		case r.skipped > 0:
			lost = fmt.Sprintf("%d entries that failed their checksum", r.skipped)
		}
		w.log.Error("the spool file was unreadable: moved aside and kept, what could be read was copied into a fresh spool, the rest is lost",
			"moved_to", r.quarantined, "file_bytes", r.fileBytes, "salvaged_points", r.salvaged, "lost", lost, "reason", r.reason)
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
// why (wrapping ErrNonFinite, ErrInvalid, ErrSpoolFull, ErrDiskFull or
// ErrClosed), and the rest are queued. A record refused for room may also
// be dropped at the next commit, when no older telemetry is left to make
// room for it. While commits fail (Stats.Spool disk_full or disk_error),
// at most maxBacklogFailing bytes wait in memory, telemetry half of it.
func (w *Writer) Enqueue(points ...schema.Point) error { return w.enqueue(points, nil) }

// enqueue is Enqueue; journal, when not nil, is called under mu with the
// indices in pending of the lines this call queued.
func (w *Writer) enqueue(points []schema.Point, journal func(accepted []int)) error {
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

	var full, unwritable, closed [numKinds]int
	reason, failing := w.failing()
	limit := [numKinds]int64{maxBacklog, maxBacklog}
	if failing {
		limit = [numKinds]int64{maxBacklogFailing, maxBacklogFailing / 2}
	}
	w.mu.Lock()
	_, spooled := w.spool.counts() // staged lines included
	inMemory := w.pendingBytes + w.spool.stagingBytes()
	var accepted []int
	for _, e := range lines {
		l := pendingLine{line: buf[e.start:e.end:e.end], kind: e.kind, enqueued: now} // its own capacity: fix may grow it
		size := entrySize(l.line)
		switch {
		case w.closed:
			closed[l.kind]++
			continue
		case inMemory+size > limit[l.kind]:
			unwritable[l.kind]++
			w.m.dropped[l.kind][reason].Add(1)
			continue
		case l.kind == kindTelemetry && spooled+w.pendingBytes+size > w.opts.MaxBytes:
			full[l.kind]++
			w.m.dropped[l.kind][dropSpoolFull].Add(1)
			continue
		}
		l.line = w.stamps.fix(l.line)
		if journal != nil {
			accepted = append(accepted, len(w.pending))
		}
		w.pending = append(w.pending, l)
		w.pendingBytes += size
		inMemory += size
	}
	if journal != nil {
		journal(accepted)
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
		if unwritable[k] > 0 {
			err := fmt.Errorf("%w: %d %s points dropped: more than %d bytes wait for a commit", ErrDiskFull, unwritable[k], kind(k), limit[k])
			if !failing {
				err = fmt.Errorf("%w: %d %s points dropped: more than %d bytes wait for a commit (the disk is too slow)", ErrSpoolFull, unwritable[k], kind(k), limit[k])
			}
			errs = append(errs, err)
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

// commit writes what was enqueued to the spool in fsynced transactions, with
// the deletions of what was delivered since the last one: all of it in one
// as a rule, in parts of commitPart bytes when there is much. A part that
// fails is tried once more after a commit of the deletions alone, which
// frees room on a full disk; if it fails again it and the rest go back in
// front of what waits, for the next commit (within the memory bound), and
// the spool's state says why.
func (w *Writer) commit() error {
	w.commitMu.Lock()
	defer w.commitMu.Unlock()
	part := max(w.opts.BatchBytes/2, 64<<10)
	w.mu.Lock()
	todo := len(w.pending) // what was enqueued before this commit began
	w.mu.Unlock()
	for first := true; ; first = false {
		w.mu.Lock()
		n, size := 0, int64(0)
		for n < min(todo, len(w.pending)) && (n == 0 || size+entrySize(w.pending[n].line) <= part) {
			size += entrySize(w.pending[n].line)
			n++
		}
		lines := w.pending[:n:n]
		w.pending, w.pendingBytes = w.pending[n:], w.pendingBytes-size
		jbytes := journalBytes(lines)
		w.journalBytes -= jbytes
		todo -= n
		w.spool.stage(lines) // counted there until the commit counts them spooled
		w.mu.Unlock()
		if n == 0 && !first {
			return nil
		}

		start := time.Now()
		res, err := w.spool.commit(lines, w.opts.MaxBytes)
		if err != nil && len(lines) > 0 {
			if _, derr := w.spool.commit(nil, w.opts.MaxBytes); derr == nil {
				res, err = w.spool.commit(lines, w.opts.MaxBytes)
			}
		}
		if err != nil {
			// Nothing of this part was written: it goes back in front.
			w.mu.Lock()
			w.pending = append(lines, w.pending...)
			w.pendingBytes += size
			w.journalBytes += jbytes
			w.spool.unstage()
			w.mu.Unlock()
			w.commitFailed(err)
			return err
		}
		if len(lines) > 0 {
			w.m.commit.Observe(time.Since(start).Seconds())
			notify(w.sendNow)
		}
		w.m.dropped[kindTelemetry][dropSpoolFull].Add(uint64(res.evicted[kindTelemetry] + res.dropped[kindTelemetry]))
		w.m.dropped[kindCost][dropSpoolFull].Add(uint64(res.dropped[kindCost]))
		w.commitDone()
		if n == 0 {
			return nil
		}
	}
}

// Close stops accepting points and stops Run, commits what was enqueued,
// then delivers what the spool holds until it is empty or ctx is done, and
// closes the spool. Whatever is left stays on disk for the next start: it
// returns how many points that is, with ctx's error if that is why. Points
// no commit could write (the disk full) are lost: counted (disk_full),
// logged, and the error wraps ErrDiskFull. Later Enqueues drop.
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
	// With the disk full this first commit fails, or writes only part:
	// what is spooled is still flushed, and the second commit, with the
	// room the deletions of what was flushed free, writes what it can of
	// the rest. What is still in memory then is lost, counted and logged.
	_ = w.commit()
	if w.api != nil {
		w.closing.Store(true)
		err = w.flush(ctx)
	}
	cerr := w.commit() // the deletions of what flush delivered, and what the first could not write
	lost := w.abandonPending(cerr)
	n := w.Stats().SpoolPoints // on disk only, now
	var lostErr error
	if lost != [numKinds]int{} {
		lostErr = fmt.Errorf("%w: %d records and %d telemetry points could not be written to the spool and are lost (%v); %d points are kept in it for the next start",
			ErrDiskFull, lost[kindCost], lost[kindTelemetry], cerr, n)
	} else if cerr != nil {
		lostErr = cerr
	}
	cerr = errors.Join(lostErr, w.spool.close(), w.dead.close())
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

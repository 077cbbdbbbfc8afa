package engine

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/schema"
	"github.com/deadlabour/deadlabour/sink"
)

// GPUSource is what the engine needs of the GPU collector.
type GPUSource interface {
	Poll(now time.Time) ([]estimator.Interval, []estimator.DeviceSample)
}

// gpuFlusher is a GPUSource whose intervals can stay open between polls
// (gpu.Collector: a counter that has not moved since its last increment);
// Flush closes them at shutdown.
type gpuFlusher interface {
	Flush() []estimator.Interval
}

// HostSource is what the engine needs of the host collector.
type HostSource interface {
	Poll(ctx context.Context, now time.Time) (estimator.Interval, bool, error)
}

// PointSink is what the engine needs of the sink: a queue that never blocks.
type PointSink interface {
	Enqueue(points ...schema.Point) error
}

// Observer sees every poll and record, for the daemon's metrics and its
// deadlabour_health point (package observe).
type Observer interface {
	Polled(now time.Time, took time.Duration, ivs []estimator.Interval, samples []estimator.DeviceSample, hostErr error)
	Recorded(r estimator.Record)
	Idled(s estimator.IdleShare)
	HealthPoints(now time.Time) []schema.Point
}

// Engine is the poll loop: one goroutine that reads the meters, takes the
// request events, runs the ledger and hands points to the sink. Everything
// the ledger touches is owned by it.
type Engine struct {
	Options
	idle   *idleAggregator
	market bool // a market-based intensity: idle points carry co2e_market_g
	marks  map[string]time.Time
	warned map[string]bool // log lines said once
	carbon carbonWatch     // a stale carbon-intensity file, said once
	merge  *Merger         // nil without Traces
	ends   []estimator.Span
	j      journalState
}

// Options are what an Engine is made of.
type Options struct {
	Log            *slog.Logger
	Interval       time.Duration    // the poll period
	ReportInterval time.Duration    // the idle windows
	Now            func() time.Time // the clock
	GPU            GPUSource        // nil without GPUs
	Host           HostSource       // nil without a host meter
	Queue          *SpanQueue
	Ledger         *estimator.Ledger
	Telemetry      *GPUAggregator
	Out            PointSink
	Schema         schema.RequestSchema // how records become points
	Node           string
	Simulated      bool
	OnRecord       func(estimator.Record)       // may be nil
	OnSettled      func([]estimator.Settlement) // may be nil: how intervals were split, for the audit
	Observer       Observer                     // may be nil
	Alive          func(now time.Time)          // the systemd watchdog, after every tick; may be nil
	// WearMarks are where the last run's wear was charged to, by device
	// (its ledger's settled end): the time from there to this run's first
	// poll is charged to idle wear, unmetered. Nil on a first start.
	WearMarks map[string]time.Time
	// SaveWearMarks keeps this run's marks for the next (at every idle
	// flush and at shutdown); nil: not kept.
	SaveWearMarks func(map[string]time.Time) error
	// Traces are the spans of a trace receiver; nil: none (merge.go).
	Traces *TraceQueue
	// Journal keeps the crash journal (journal.go); nil: none.
	Journal Journal
}

// New makes an engine; Run runs it.
func New(o Options) *Engine {
	p := o.Ledger.Params()
	e := &Engine{Options: o, idle: newIdleAggregator(o.ReportInterval), warned: map[string]bool{},
		carbon: newCarbonWatch(p.Carbon.Steps), market: p.CarbonMarket != nil, marks: map[string]time.Time{}}
	if o.Traces != nil {
		e.merge = NewMerger(o.Traces.Upstreams, o.Traces.MaxDelay)
	}
	return e
}

// Run polls every interval until ctx is done, then settles and flushes
// everything left, so that nothing already measured is lost at shutdown.
// Stop the request sources first: requests still in flight after Run
// returns are not recorded.
func (e *Engine) Run(ctx context.Context) {
	t := time.NewTicker(e.Interval)
	defer t.Stop()
	if e.journalOn() {
		e.recoverJournal()
	}
	now := e.Now()
	e.downtime(now)
	e.tick(ctx, now) // primes the counters
	for {
		select {
		case <-ctx.Done():
			e.final(context.WithoutCancel(ctx))
			return
		case <-t.C:
			now := e.Now()
			e.tick(ctx, now)
			if e.Alive != nil {
				e.Alive(now)
			}
		}
	}
}

// Tick runs one poll at now, as Run does every interval: for benchmarks
// and tools that drive the loop on a clock of their own instead of Run.
func (e *Engine) Tick(ctx context.Context, now time.Time) { e.tick(ctx, now) }

func (e *Engine) tick(ctx context.Context, now time.Time) {
	start := time.Now()
	p := e.read(ctx, now)
	e.carbon.check(e.Log, now)
	e.emit(e.Ledger.Settle(now), now)
	if e.Observer != nil {
		e.Observer.Polled(now, time.Since(start), p.ivs, p.samples, p.hostErr)
	}
}

// reading is what one poll of the meters returned.
type reading struct {
	ivs     []estimator.Interval
	samples []estimator.DeviceSample
	hostErr error
}

// read polls the meters and takes the request events, in that order: a
// request that began before the poll is in the queue by the time it is
// drained.
func (e *Engine) read(ctx context.Context, now time.Time) (p reading) {
	if e.GPU != nil {
		p.ivs, p.samples = e.GPU.Poll(now)
		for _, iv := range p.ivs {
			e.addGPU(iv)
		}
		for _, s := range p.samples {
			e.Telemetry.AddSample(s)
		}
	}
	if e.Host != nil {
		iv, ok, err := e.Host.Poll(ctx, now)
		if p.hostErr = err; err != nil {
			e.warnOnce("host", "host meter failed", "err", err)
		} else if ok {
			e.add(iv)
			p.ivs = append(p.ivs, iv)
		}
	}
	for _, ev := range e.Queue.drain() {
		switch {
		case ev.begin:
			e.Ledger.Begin(ev.span)
			e.mergeBegin(ev.span)
		default:
			e.end(ev.span)
		}
	}
	e.traces(now)
	return p
}

// addGPU adds a GPU's meter interval to the ledger and its telemetry window.
func (e *Engine) addGPU(iv estimator.Interval) {
	e.add(iv)
	e.Telemetry.AddEnergy(iv)
}

// idlePoint is the deadlabour_idle point of an idle share of this node.
func (e *Engine) idlePoint(s estimator.IdleShare) schema.Point {
	return schema.IdlePoint(e.Node, e.Schema.Currency(), e.Simulated, e.market, s)
}

func (e *Engine) add(iv estimator.Interval) {
	if err := e.Ledger.AddInterval(iv); err != nil {
		e.warnOnce("interval:"+iv.Device, "meter interval refused", "device", iv.Device, "err", err)
		return
	}
	e.journalInterval(iv)
}

// final settles everything at shutdown.
func (e *Engine) final(ctx context.Context) {
	now := e.Now()
	e.read(ctx, now)
	e.flushTraces()
	if f, ok := e.GPU.(gpuFlusher); ok {
		for _, iv := range f.Flush() {
			e.addGPU(iv)
		}
	}
	e.emit(e.Ledger.Settle(now), now)
	e.emit(e.Ledger.Close(), now)
	e.journalClear()
	e.flushAll()
}

func (e *Engine) emit(out estimator.Output, now time.Time) {
	points := make([]schema.Point, 0, len(out.Records)+8)
	if e.OnSettled != nil {
		// Before the records, so that a record is never seen without the
		// settlements that made it.
		e.OnSettled(out.Settled)
	}
	for _, r := range out.Records {
		p, err := e.Schema.Point(r)
		if err != nil {
			e.Log.Error("request record not written", "request_id", r.ID, "err", err)
			continue
		}
		points = append(points, p)
		e.journalSpan(r.Span, true)
		if e.OnRecord != nil {
			e.OnRecord(r)
		}
		if e.Observer != nil {
			e.Observer.Recorded(r)
		}
	}
	for _, s := range out.Idle {
		e.idle.add(s)
		if e.Observer != nil {
			e.Observer.Idled(s)
		}
	}
	idle := e.idle.flush(e.Ledger.SettledTo)
	for _, s := range idle {
		points = append(points, e.idlePoint(s))
	}
	for _, w := range e.Telemetry.Flush(now) {
		points = append(points, schema.GPUPoint(e.Node, e.Simulated, w))
	}
	if e.Observer != nil {
		points = append(points, e.Observer.HealthPoints(now)...)
	}
	e.journalTrim()
	e.enqueue(points)
	if len(idle) > 0 {
		e.saveMarks()
	}
}

// downtime charges the wear of the time since the last run's marks to
// idle, unmetered: time the daemon was down is never silently lost.
func (e *Engine) downtime(now time.Time) {
	var points []schema.Point
	var longest time.Duration
	for _, dev := range e.Ledger.Devices() {
		mark, ok := e.WearMarks[dev]
		if !ok {
			continue
		}
		s, ok := e.Ledger.Unmetered(dev, mark, now)
		if !ok {
			continue
		}
		points = append(points, e.idlePoint(s))
		longest = max(longest, now.Sub(mark))
	}
	if len(points) > 0 {
		e.Log.Info("the wear of the time the daemon was down is charged to idle, unmetered (share=unmetered)",
			"devices", len(points), "longest", longest.Round(time.Second))
	}
	e.enqueue(points)
}

// saveMarks keeps where each device's wear has been charged to: its
// ledger's settled end. A crash after it loses what was not yet written
// (never charges it twice).
func (e *Engine) saveMarks() {
	if e.SaveWearMarks == nil {
		return
	}
	changed := false
	for _, dev := range e.Ledger.Devices() {
		if t := e.Ledger.SettledTo(dev); !t.IsZero() && !t.Equal(e.marks[dev]) {
			e.marks[dev], changed = t, true
		}
	}
	if !changed {
		return
	}
	if err := e.SaveWearMarks(e.marks); err != nil {
		e.warnOnce("wear-marks", "wear marks not kept: a restart will not charge the downtime's wear", "err", err)
	}
}

// flushAll writes every open telemetry and idle window, at shutdown.
func (e *Engine) flushAll() {
	var points []schema.Point
	for _, s := range e.idle.flushAll(e.Ledger.SettledTo) {
		points = append(points, e.idlePoint(s))
	}
	for _, w := range e.Telemetry.FlushAll() {
		points = append(points, schema.GPUPoint(e.Node, e.Simulated, w))
	}
	e.enqueue(points)
	e.saveMarks()
}

func (e *Engine) enqueue(points []schema.Point) {
	var err error
	switch {
	case e.journalOn() && len(e.j.ops) > 0:
		err = e.Journal.EnqueueJournaled(e.journalOps(), points...)
		if errors.Is(err, sink.ErrJournalFull) {
			e.warnOnce("journal", "crash journal not written (the spool's disk is failing): a crash now loses the requests not yet recorded", "err", err)
			return
		}
	case len(points) == 0:
		return
	default:
		err = e.Out.Enqueue(points...)
	}
	if err != nil {
		if errors.Is(err, sink.ErrDiskFull) || errors.Is(err, sink.ErrSpoolFull) {
			// The sink counts these drops and logs them once per spell.
			e.Log.Debug("points not queued", "err", err)
			return
		}
		e.Log.Error("points not queued", "err", err)
	}
}

func (e *Engine) warnOnce(key, msg string, args ...any) {
	if e.warned[key] {
		e.Log.Debug(msg, args...)
		return
	}
	e.warned[key] = true
	e.Log.Warn(msg+" (repeats are logged at debug)", args...)
}

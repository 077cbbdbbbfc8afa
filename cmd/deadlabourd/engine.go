package main

import (
	"context"
	"log/slog"
	"sort"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/schema"
	"github.com/deadlabour/deadlabour/sink"
)

// gpuSource is what the engine needs of the GPU collector.
type gpuSource interface {
	Poll(now time.Time) ([]estimator.Interval, []estimator.DeviceSample)
}

// gpuFlusher is a gpuSource whose intervals can stay open between polls
// (gpu.Collector: a counter that has not moved since its last increment);
// Flush closes them at shutdown.
type gpuFlusher interface {
	Flush() []estimator.Interval
}

// hostSource is what the engine needs of the host collector.
type hostSource interface {
	Poll(ctx context.Context, now time.Time) (estimator.Interval, bool, error)
}

// pointSink is what the engine needs of the sink: a queue that never blocks.
type pointSink interface {
	Enqueue(points ...schema.Point) error
}

// engineObserver sees every poll and record, for the daemon's metrics and
// its deadlabour_health point (observe.go).
type engineObserver interface {
	polled(now time.Time, took time.Duration, ivs []estimator.Interval, samples []estimator.DeviceSample, hostErr error)
	recorded(r estimator.Record)
	healthPoints(now time.Time) []schema.Point
}

// engine is the poll loop: one goroutine that reads the meters, takes the
// request events, runs the ledger and hands points to the sink. Everything
// the ledger touches is owned by it.
type engine struct {
	log       *slog.Logger
	interval  time.Duration
	now       func() time.Time
	gpu       gpuSource  // nil without GPUs
	host      hostSource // nil without a host meter
	queue     *spanQueue
	ledger    *estimator.Ledger
	telemetry *sink.GPUAggregator
	idle      *idleAggregator
	out       pointSink
	schema    schema.RequestSchema // how records become points
	node      string
	simulated bool
	onRecord  func(estimator.Record)       // may be nil
	onSettled func([]estimator.Settlement) // may be nil: how intervals were split, for the audit
	obs       engineObserver               // may be nil
	alive     func(now time.Time)          // the systemd watchdog, after every tick; may be nil

	warned map[string]bool // log lines said once
	carbon carbonWatch     // a stale carbon-intensity file, said once
}

// Run polls every interval until ctx is done, then settles and flushes
// everything left, so that nothing already measured is lost at shutdown.
// Stop the request sources first: requests still in flight after Run
// returns are not recorded.
func (e *engine) Run(ctx context.Context) {
	t := time.NewTicker(e.interval)
	defer t.Stop()
	e.tick(ctx, e.now()) // primes the counters
	for {
		select {
		case <-ctx.Done():
			e.final(context.WithoutCancel(ctx))
			return
		case <-t.C:
			now := e.now()
			e.tick(ctx, now)
			if e.alive != nil {
				e.alive(now)
			}
		}
	}
}

func (e *engine) tick(ctx context.Context, now time.Time) {
	start := time.Now()
	p := e.read(ctx, now)
	e.carbon.check(e.log, now)
	e.emit(e.ledger.Settle(now), now)
	if e.obs != nil {
		e.obs.polled(now, time.Since(start), p.ivs, p.samples, p.hostErr)
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
func (e *engine) read(ctx context.Context, now time.Time) (p reading) {
	if e.gpu != nil {
		p.ivs, p.samples = e.gpu.Poll(now)
		for _, iv := range p.ivs {
			e.add(iv)
			e.telemetry.AddEnergy(iv)
		}
		for _, s := range p.samples {
			e.telemetry.AddSample(s)
		}
	}
	if e.host != nil {
		iv, ok, err := e.host.Poll(ctx, now)
		if p.hostErr = err; err != nil {
			e.warnOnce("host", "host meter failed", "err", err)
		} else if ok {
			e.add(iv)
			p.ivs = append(p.ivs, iv)
		}
	}
	for _, ev := range e.queue.drain() {
		switch {
		case ev.begin:
			e.ledger.Begin(ev.span)
		default:
			e.ledger.End(ev.span)
		}
	}
	return p
}

func (e *engine) add(iv estimator.Interval) {
	if err := e.ledger.AddInterval(iv); err != nil {
		e.warnOnce("interval:"+iv.Device, "meter interval refused", "device", iv.Device, "err", err)
	}
}

// final settles everything at shutdown.
func (e *engine) final(ctx context.Context) {
	now := e.now()
	e.read(ctx, now)
	if f, ok := e.gpu.(gpuFlusher); ok {
		for _, iv := range f.Flush() {
			e.add(iv)
			e.telemetry.AddEnergy(iv)
		}
	}
	e.emit(e.ledger.Settle(now), now)
	e.emit(e.ledger.Close(), now)
	e.flushAll()
}

func (e *engine) emit(out estimator.Output, now time.Time) {
	points := make([]schema.Point, 0, len(out.Records)+8)
	if e.onSettled != nil {
		// Before the records, so that a record is never seen without the
		// settlements that made it.
		e.onSettled(out.Settled)
	}
	for _, r := range out.Records {
		p, err := e.schema.Point(r)
		if err != nil {
			e.log.Error("request record not written", "request_id", r.ID, "err", err)
			continue
		}
		points = append(points, p)
		if e.onRecord != nil {
			e.onRecord(r)
		}
		if e.obs != nil {
			e.obs.recorded(r)
		}
	}
	for _, s := range out.Idle {
		e.idle.add(s)
	}
	for _, s := range e.idle.flush(e.ledger.SettledTo) {
		points = append(points, schema.IdlePoint(e.node, e.schema.Currency(), e.simulated, s))
	}
	for _, w := range e.telemetry.Flush(now) {
		points = append(points, schema.GPUPoint(e.node, e.simulated, w))
	}
	if e.obs != nil {
		points = append(points, e.obs.healthPoints(now)...)
	}
	e.enqueue(points)
}

// flushAll writes every open telemetry and idle window, at shutdown.
func (e *engine) flushAll() {
	var points []schema.Point
	for _, s := range e.idle.flushAll(e.ledger.SettledTo) {
		points = append(points, schema.IdlePoint(e.node, e.schema.Currency(), e.simulated, s))
	}
	for _, w := range e.telemetry.FlushAll() {
		points = append(points, schema.GPUPoint(e.node, e.simulated, w))
	}
	e.enqueue(points)
}

func (e *engine) enqueue(points []schema.Point) {
	if len(points) == 0 {
		return
	}
	if err := e.out.Enqueue(points...); err != nil {
		e.log.Error("points not queued", "err", err)
	}
}

func (e *engine) warnOnce(key, msg string, args ...any) {
	if e.warned[key] {
		e.log.Debug(msg, args...)
		return
	}
	e.warned[key] = true
	e.log.Warn(msg+" (repeats are logged at debug)", args...)
}

// idleAggregator sums the idle ledger into one share per device per report
// window, written once the device has settled past the window's end. A
// window is written once: InfluxDB keeps the last point of a series and
// time, so writing it again would replace the first point's energy.
type idleAggregator struct {
	window  time.Duration
	open    map[idleKey]*estimator.IdleShare
	flushed map[string]time.Time // by device: end of the last window written
}

type idleKey struct {
	device string
	start  int64 // Unix ns
}

func newIdleAggregator(window time.Duration) *idleAggregator {
	return &idleAggregator{window: window, open: map[idleKey]*estimator.IdleShare{}, flushed: map[string]time.Time{}}
}

func (a *idleAggregator) add(s estimator.IdleShare) {
	start := estimator.WindowStart(s.Start, a.window)
	if f := a.flushed[s.Device]; start.Before(f) {
		// A share for a window already written (the refund of a request
		// the upstream did not serve, begun in that window) joins the
		// first window not yet written: its energy is counted once, a
		// little later.
		start = f
	}
	k := idleKey{s.Device, start.UnixNano()}
	cur := a.open[k]
	if cur == nil {
		cur = &estimator.IdleShare{Device: s.Device, Start: start, End: start.Add(a.window), Method: s.Method}
		a.open[k] = cur
	}
	cur.Joules += s.Joules
	cur.StaticJoules += s.StaticJoules
	cur.DepreciationCost += s.DepreciationCost
	cur.EmbodiedCO2eG += s.EmbodiedCO2eG
	if cur.Method != s.Method {
		cur.Method = estimator.MethodMixed
	}
}

// flush returns the windows whose device has settled past their end.
func (a *idleAggregator) flush(settledTo func(device string) time.Time) []estimator.IdleShare {
	var out []estimator.IdleShare
	for k, cur := range a.open {
		if !settledTo(k.device).Before(cur.End) {
			out = append(out, a.take(k, cur))
		}
	}
	sortShares(out)
	return out
}

// flushAll returns every open window, at shutdown, each ending where its
// device's settled intervals end if that is inside it, so that a partial
// window never shares a timestamp with the next run's full one.
func (a *idleAggregator) flushAll(settledTo func(device string) time.Time) []estimator.IdleShare {
	var out []estimator.IdleShare
	for k, cur := range a.open {
		if last := settledTo(k.device); last.After(cur.Start) && last.Before(cur.End) {
			cur.End = last
		}
		out = append(out, a.take(k, cur))
	}
	sortShares(out)
	return out
}

func (a *idleAggregator) take(k idleKey, cur *estimator.IdleShare) estimator.IdleShare {
	delete(a.open, k)
	if cur.End.After(a.flushed[k.device]) {
		a.flushed[k.device] = cur.End
	}
	return *cur
}

func sortShares(s []estimator.IdleShare) {
	sort.Slice(s, func(i, j int) bool {
		if !s[i].End.Equal(s[j].End) {
			return s[i].End.Before(s[j].End)
		}
		return s[i].Device < s[j].Device
	})
}

// Package gpu reads NVIDIA GPUs through NVML: the total-energy counter of
// each GPU, closed into meter intervals, and telemetry samples.
//
// nvml.Interface is built once in main and injected: the real library
// (nvml.New), or go-nvml's mock servers driven by a power model or scripted
// traces (Simulate). After a failed Init no other NVML function is called:
// with no driver that would abort the process.
//
// What a real GPU does and how the collector copes (docs/methodology.md):
//   - the energy counter moves only every 20-100 ms: an increment is spread
//     over the time since the previous one (energyMeter);
//   - no counter, or one that went backwards or stopped: the trapezoid of
//     power samples, read from FI_DEV_POWER_INSTANT where the driver has it;
//   - a GPU that is lost, times out or fails: marked unhealthy, skipped,
//     retried with backoff, while the others carry on; each GPU is read by
//     a goroutine of its own under a deadline, so that a driver call that
//     hangs on one GPU holds that GPU only;
//   - MIG: the board's energy is split among its instances by activity;
//     a layout changed at run time is found, and the instances the ledger
//     does not know (not there at start) are charged to the board's id.
package gpu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/deadlabour/deadlabour/estimator"
)

// ErrNoDriver wraps a failed nvml.Init: no driver or no library on this host.
var ErrNoDriver = errors.New("NVML is not available")

// DeviceInfo describes one GPU as last read: found at start, described
// once it answers if it failed then, its MIG layout read again every
// migRescan.
type DeviceInfo struct {
	Index         int
	ID            string // the device id used in intervals: the index as text
	Name          string
	UUID          string
	EnergyCounter bool      // nvmlDeviceGetTotalEnergyConsumption answered at start
	Power         PowerKind // how power is read
	MemoryBytes   uint64

	// MIG is true when the GPU is in MIG mode; its energy is then split
	// among Instances by Activity (ActivityGPM or ActivityProcesses).
	MIG       bool
	Instances []MIGInstance
	Activity  string
	Slices    int // GPU-instance slices of the whole board (MIG mode)
}

// Collector polls every GPU of one NVML instance, each through a reader
// goroutine of its own (reader.go), so that an NVML call that hangs holds
// that GPU only. Poll, Flush and Close belong to one goroutine (the
// engine's); Health, Devices and ProcessDevices may be called from any.
type Collector struct {
	lib     nvml.Interface
	log     *slog.Logger
	driver  string
	devices []*deviceState
	timeout time.Duration // how long a poll waits for a GPU's reads
	answers chan int      // readers answer here, by GPU index
	timer   *time.Timer   // the read deadline of a poll
	stop    context.CancelFunc

	mu sync.Mutex // guards every deviceState's info, handle and health
}

// readState is where a GPU's reader stands, as Poll sees it.
type readState uint8

const (
	readIdle     readState = iota
	readAsked              // a read was asked at this poll
	readAnswered           // and answered before the deadline
	readStuck              // a read past its deadline has not come back yet
)

// deviceState is one GPU as Poll sees it.
type deviceState struct {
	info   DeviceInfo  // as last read; written under Collector.mu
	handle nvml.Device // for ProcessDevices; written under Collector.mu
	meter  energyMeter
	mig    []*instanceState
	// metered are the device ids of the GPU at Open, which the daemon
	// gives the ledger; set once, before Open returns.
	metered      []string
	warnedLayout bool

	lastPoll time.Time
	health   DeviceHealth
	backoff  time.Duration
	warned   map[meterEvent]bool // counter events logged at warn once

	rd       *reader
	read     readState
	askedAt  time.Time
	forget   bool      // the next read forgets its GPM samples (after a gap)
	lastScan time.Time // of its MIG layout
}

// Open initialises NVML and enumerates the GPUs at time now; the energy
// counters read then are the start of the first interval, so no joule
// between Open and the first Poll is lost. On failure it returns an error
// wrapping ErrNoDriver and the nvml.Return, and NVML is left alone. A GPU
// that fails (or hangs) at start is kept, unhealthy, and retried like any
// other. Close stops the readers.
func Open(lib nvml.Interface, log *slog.Logger, now time.Time) (*Collector, error) {
	return open(lib, log, now, readTimeout)
}

func open(lib nvml.Interface, log *slog.Logger, now time.Time, timeout time.Duration) (*Collector, error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("%w: nvml.Init returned %w", ErrNoDriver, ret)
	}
	c := &Collector{lib: lib, log: log, timeout: timeout, timer: time.NewTimer(time.Hour)}
	c.timer.Stop()
	if v, ret := lib.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		c.driver = v
	}
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		lib.Shutdown()
		return nil, fmt.Errorf("nvml.DeviceGetCount: %w", ret)
	}
	c.answers = make(chan int, n)
	ctx, stop := context.WithCancel(context.Background())
	c.stop = stop
	for i := range n {
		info := DeviceInfo{Index: i, ID: strconv.Itoa(i), Power: PowerNone}
		d := &deviceState{
			info:     info,
			health:   DeviceHealth{ID: info.ID, Index: i, Healthy: true, Since: now},
			warned:   map[meterEvent]bool{},
			lastScan: now,
			rd:       &reader{lib: lib, log: log, index: i, info: info, req: make(chan readRequest, 1), done: make(chan struct{})},
		}
		c.devices = append(c.devices, d)
		go d.rd.run(ctx, c.answers)
	}
	c.Poll(now) // finds the GPUs, primes the counters, power and GPM samples
	for _, d := range c.devices {
		d.metered = meterIDs(d.info)
	}
	return c, nil
}

// install takes what a read found the GPU to be: its description, handle
// and MIG instances (keeping the activity of those that stay).
func (c *Collector) install(d *deviceState) {
	rd := d.rd
	c.mu.Lock()
	d.handle, d.info = rd.handle, rd.info
	d.health.UUID = rd.info.UUID
	c.mu.Unlock()
	old := d.mig
	d.mig = make([]*instanceState, len(rd.mig))
	for i, in := range rd.mig {
		d.mig[i] = &instanceState{info: in.info}
		for _, o := range old {
			if o.info.ID == in.info.ID {
				d.mig[i].weight = o.weight
			}
		}
	}
	if d.metered == nil {
		return // found at Open: this is the layout metered
	}
	ids := meterIDs(d.info)
	if slices.Equal(ids, d.metered) {
		return
	}
	args := []any{"gpu", d.info.Index, "uuid", d.info.UUID, "ids", ids, "metered", d.metered}
	if d.warnedLayout {
		c.log.Debug("GPU MIG layout changed again", args...)
		return
	}
	d.warnedLayout = true
	c.log.Warn("GPU MIG layout differs from the one metered since start: instances not metered are charged to the board; restart deadlabourd to meter them", args...)
}

// Driver is the driver version NVML reported.
func (c *Collector) Driver() string { return c.driver }

// Devices lists the GPUs as last read.
func (c *Collector) Devices() []DeviceInfo {
	return perDevice(c, func(d *deviceState) DeviceInfo { return d.info })
}

// perDevice returns f of every GPU, in index order, read under c.mu.
func perDevice[T any](c *Collector, f func(*deviceState) T) []T {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]T, len(c.devices))
	for i, d := range c.devices {
		out[i] = f(d)
	}
	return out
}

// Close stops the readers, frees GPM samples and shuts NVML down. A reader
// stuck in an NVML call cannot be stopped: Close waits for it up to the
// read deadline, then returns an error naming the GPU and leaves NVML
// open (the call still uses it); that reader ends when its call returns.
func (c *Collector) Close() error {
	if c.stop == nil {
		return nil // closed already
	}
	c.stop()
	c.stop = nil
	wait, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	var stuck []string
	for _, d := range c.devices {
		select {
		case <-d.rd.done:
		case <-wait.Done():
			select {
			case <-d.rd.done:
			default:
				stuck = append(stuck, d.info.ID)
			}
		}
	}
	if len(stuck) > 0 {
		return fmt.Errorf("GPU %s still in an NVML call after %v: NVML is left open", strings.Join(stuck, ", "), c.timeout)
	}
	for _, d := range c.devices {
		d.rd.freeGPM()
	}
	if ret := c.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("nvml.Shutdown: %w", ret)
	}
	return nil
}

// Poll reads every GPU once at time now. It returns the meter intervals
// that closed (a GPU whose counter has not moved since its last increment
// closes none: the next increment covers the wait) and a telemetry sample
// of every GPU read. An unhealthy GPU is not read until its retry is due.
//
// The GPUs are read at once, each by its reader; Poll waits for them up to
// the read deadline and takes what they answered. A GPU that has not
// answered by then is marked unhealthy, and is asked nothing more until
// that read comes back (its answer, late, is dropped: the counter read at
// the next poll covers the time).
func (c *Collector) Poll(now time.Time) ([]estimator.Interval, []estimator.DeviceSample) {
	c.receive(false) // late answers
	asked := 0
	for _, d := range c.devices {
		switch {
		case !d.due(now):
		case d.read == readStuck:
			c.markUnhealthy(d, now, &hungError{c.timeout, now.Sub(d.askedAt)})
		default:
			rq := readRequest{now: now, forget: d.forget, rescan: d.forget || now.Sub(d.lastScan) >= migRescan}
			if rq.rescan {
				d.lastScan = now
			}
			d.rd.req <- rq
			d.forget = false
			d.read, d.askedAt = readAsked, now
			asked++
		}
	}
	if asked > 0 {
		c.timer.Reset(c.timeout)
		for asked > 0 && c.receive(true) {
			asked--
		}
		c.timer.Stop()
	}
	n := 0
	for _, d := range c.devices {
		n += 1 + len(d.mig)
	}
	intervals := make([]estimator.Interval, 0, n)
	samples := make([]estimator.DeviceSample, 0, n)
	for _, d := range c.devices {
		switch d.read {
		case readAnswered:
			d.read = readIdle
			intervals, samples = c.apply(d, now, intervals, samples)
		case readAsked:
			d.read = readStuck
			c.markUnhealthy(d, now, &hungError{c.timeout, 0})
		}
	}
	return intervals, samples
}

// receive takes the answers of the readers: late ones (of stuck reads)
// until none is waiting, when wait is false; when wait is true, until one
// of this poll's reads answers (it returns true) or the deadline passes
// (false).
func (c *Collector) receive(wait bool) bool {
	for {
		var i int
		if wait {
			select {
			case i = <-c.answers:
			case <-c.timer.C:
				return false
			}
		} else {
			select {
			case i = <-c.answers:
			default:
				return false
			}
		}
		d := c.devices[i]
		if d.read == readAsked {
			d.read = readAnswered
			return true
		}
		// A read that came back after its deadline: what it found the GPU
		// to be is kept, its readings are not (their time is unknown).
		d.read = readIdle
		if d.rd.out.layout {
			c.install(d)
		}
	}
}

// apply takes one GPU's answer to this poll's read.
func (c *Collector) apply(d *deviceState, now time.Time, ivs []estimator.Interval, samples []estimator.DeviceSample) ([]estimator.Interval, []estimator.DeviceSample) {
	o := &d.rd.out
	if o.layout {
		c.install(d)
	}
	if o.err != nil {
		c.markUnhealthy(d, now, o.err)
		return ivs, samples
	}
	d.addActivity(now, o)
	samples = append(samples, o.sample)
	samples = append(samples, o.inst...)
	d.lastPoll = now
	if !d.health.Healthy {
		c.markHealthy(d, now)
	}
	iv, ok, ev := d.meter.observe(now, o.mj, o.mjRet == nvml.SUCCESS, o.powerW)
	c.logEvent(d, ev, o.mjRet)
	if ok {
		ivs = d.split(iv, ivs)
	}
	return ivs, samples
}

// Flush closes, at shutdown, the intervals of GPUs whose counter has not
// moved since its last increment, so that requests that ended meanwhile
// settle. The counter showed nothing more, so they carry 0 J.
func (c *Collector) Flush() []estimator.Interval {
	var out []estimator.Interval
	for _, d := range c.devices {
		if iv, ok := d.meter.flush(); ok {
			out = d.split(iv, out)
		}
	}
	return out
}

// logEvent says once per GPU and kind, at warn or info, what the counter
// did; repeats go to debug so that a flapping counter cannot flood the log.
func (c *Collector) logEvent(d *deviceState, ev meterEvent, ret nvml.Return) {
	if ev == eventNone {
		return
	}
	if ev == eventReset {
		c.countReset(d)
	}
	args := []any{"gpu", d.info.Index, "uuid", d.info.UUID, "power", d.info.Power}
	if d.warned[ev] {
		c.log.Debug("GPU energy counter event, again", append(args, "event", int(ev), "err", ret)...)
		return
	}
	d.warned[ev] = true
	switch ev {
	case eventReset:
		c.log.Warn("GPU energy counter went backwards (driver reload or GPU reset): that interval is integrated from power (repeats are logged at debug)", args...)
	case eventCounterGone:
		c.log.Warn("GPU energy counter cannot be read: energy is integrated from power until it reads again (repeats are logged at debug)", append(args, "err", ret)...)
	case eventCounterBack:
		c.log.Info("GPU energy counter reads again (repeats are logged at debug)", args...)
	case eventStuck:
		c.log.Warn("GPU energy counter stopped moving: energy is integrated from power until it moves (repeats are logged at debug)", append(args, "still_for", stuckAfter)...)
	case eventUnstuck:
		c.log.Info("GPU energy counter moves again (repeats are logged at debug)", args...)
	}
}

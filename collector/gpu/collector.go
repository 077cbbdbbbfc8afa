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
//     retried with backoff, while the others carry on;
//   - MIG: the board's energy is split among its instances by activity.
package gpu

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/deadlabour/deadlabour/estimator"
)

// ErrNoDriver wraps a failed nvml.Init: no driver or no library on this host.
var ErrNoDriver = errors.New("NVML is not available")

// DeviceInfo describes one GPU as found at start.
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

// Collector polls every GPU of one NVML instance. Poll and Flush belong to
// one goroutine (the engine's); Health, Devices and ProcessDevices may be
// called from any.
type Collector struct {
	lib     nvml.Interface
	log     *slog.Logger
	driver  string
	devices []*deviceState
	clock   func() time.Time // measures how long calls take

	mu sync.Mutex // guards every deviceState.health
}

type deviceState struct {
	info   DeviceInfo
	handle nvml.Device // nil until the GPU answered DeviceGetHandleByIndex
	meter  energyMeter
	mig    []*instanceState
	fv     [1]nvml.FieldValue

	lastPoll time.Time
	health   DeviceHealth
	backoff  time.Duration
	warned   map[meterEvent]bool // counter events logged at warn once
}

// Open initialises NVML and enumerates the GPUs at time now; the energy
// counters read then are the start of the first interval, so no joule
// between Open and the first Poll is lost. On failure it returns an error
// wrapping ErrNoDriver and the nvml.Return, and NVML is left alone. A GPU
// that fails at start is kept, unhealthy, and retried like any other.
func Open(lib nvml.Interface, log *slog.Logger, now time.Time) (*Collector, error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("%w: nvml.Init returned %w", ErrNoDriver, ret)
	}
	c := &Collector{lib: lib, log: log, clock: time.Now}
	if v, ret := lib.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		c.driver = v
	}
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		lib.Shutdown()
		return nil, fmt.Errorf("nvml.DeviceGetCount: %w", ret)
	}
	for i := range n {
		d := &deviceState{
			info:   DeviceInfo{Index: i, ID: strconv.Itoa(i), Power: PowerNone},
			health: DeviceHealth{ID: strconv.Itoa(i), Index: i, Healthy: true, Since: now},
			warned: map[meterEvent]bool{},
		}
		c.devices = append(c.devices, d)
		h, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			c.markUnhealthy(d, now, &callError{"DeviceGetHandleByIndex", ret})
			continue
		}
		c.describe(d, h)
	}
	c.Poll(now) // primes the counters, power and GPM samples
	return c, nil
}

// describe fills in what the GPU is and supports. It holds the lock: other
// goroutines read the handle and the info (Devices, ProcessDevices).
func (c *Collector) describe(d *deviceState, h nvml.Device) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d.handle = h
	info := &d.info
	info.Name, _ = h.GetName()
	info.UUID, _ = h.GetUUID()
	d.health.UUID = info.UUID
	if mem, ret := h.GetMemoryInfo(); ret == nvml.SUCCESS {
		info.MemoryBytes = mem.Total
	}
	_, ret := h.GetTotalEnergyConsumption()
	info.EnergyCounter = ret == nvml.SUCCESS
	arch, _ := h.GetArchitecture()
	info.Power = detectPower(h, info.Name, arch)
	if mode, _, ret := h.GetMigMode(); ret == nvml.SUCCESS && mode == nvml.DEVICE_MIG_ENABLE {
		info.MIG = true
		c.openMIG(d)
	}
}

// Driver is the driver version NVML reported.
func (c *Collector) Driver() string { return c.driver }

// Devices lists the GPUs found at Open.
func (c *Collector) Devices() []DeviceInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]DeviceInfo, len(c.devices))
	for i, d := range c.devices {
		out[i] = d.info
	}
	return out
}

// Close frees GPM samples and shuts NVML down.
func (c *Collector) Close() error {
	for _, d := range c.devices {
		d.freeGPM(c.lib)
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
func (c *Collector) Poll(now time.Time) ([]estimator.Interval, []estimator.DeviceSample) {
	n := 0
	for _, d := range c.devices {
		n += 1 + len(d.mig)
	}
	intervals := make([]estimator.Interval, 0, n)
	samples := make([]estimator.DeviceSample, 0, n)
	for _, d := range c.devices {
		if !d.due(now) {
			continue
		}
		intervals, samples = c.poll(d, now, intervals, samples)
	}
	return intervals, samples
}

func (c *Collector) poll(d *deviceState, now time.Time, ivs []estimator.Interval, samples []estimator.DeviceSample) ([]estimator.Interval, []estimator.DeviceSample) {
	if d.handle == nil {
		h, ret := c.lib.DeviceGetHandleByIndex(d.info.Index)
		if ret != nvml.SUCCESS {
			c.markUnhealthy(d, now, &callError{"DeviceGetHandleByIndex", ret})
			return ivs, samples
		}
		c.describe(d, h)
	}
	began := c.clock()
	mj, mjRet := uint64(0), nvml.ERROR_NOT_SUPPORTED
	if d.info.EnergyCounter {
		mj, mjRet = d.handle.GetTotalEnergyConsumption()
	}
	if err := failure("GetTotalEnergyConsumption", mjRet); err != nil {
		c.markUnhealthy(d, now, err)
		return ivs, samples
	}
	p, pRet := d.readPower()
	if err := failure("power", pRet); err != nil {
		c.markUnhealthy(d, now, err)
		return ivs, samples
	}
	s, err := d.sample(now, p)
	if err == nil {
		err = c.activity(d, now)
	}
	n := len(samples)
	if err == nil {
		samples = append(samples, s)
		samples, err = d.instanceSamples(now, samples)
	}
	if err != nil {
		c.markUnhealthy(d, now, err)
		return ivs, samples[:n]
	}
	d.lastPoll = now

	if took := c.clock().Sub(began); took > slowCalls {
		// Keep what was read, but do not stall every poll on this GPU.
		c.markUnhealthy(d, now, fmt.Errorf("NVML calls took %v (timeouts)", took.Round(time.Millisecond)))
	} else if !d.health.Healthy {
		c.markHealthy(d, now)
	}

	iv, ok, ev := d.meter.observe(now, mj, mjRet == nvml.SUCCESS, p)
	c.logEvent(d, ev, mjRet)
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

// sample reads the telemetry of a GPU at a poll. An unreadable value is
// NaN (left out of the telemetry). The error is a device failure: the
// reads stop there, as every further call on a lost GPU would fail too.
func (d *deviceState) sample(now time.Time, powerW float64) (estimator.DeviceSample, error) {
	h := d.handle
	nan := math.NaN()
	s := estimator.DeviceSample{Device: d.info.ID, Name: d.info.Name, Time: now, PowerW: powerW,
		UtilGPU: nan, UtilMem: nan, TempC: nan, SMClockMHz: nan, PowerLimitW: nan,
		MemTotalBytes: d.info.MemoryBytes}
	u, ret := h.GetUtilizationRates()
	if ret == nvml.SUCCESS {
		s.UtilGPU, s.UtilMem = float64(u.Gpu), float64(u.Memory)
	} else if err := failure("GetUtilizationRates", ret); err != nil {
		return s, err
	}
	m, ret := h.GetMemoryInfo()
	if ret == nvml.SUCCESS {
		s.MemUsedBytes, s.MemTotalBytes = m.Used, m.Total
	} else if err := failure("GetMemoryInfo", ret); err != nil {
		return s, err
	}
	t, ret := h.GetTemperature(nvml.TEMPERATURE_GPU)
	if ret == nvml.SUCCESS {
		s.TempC = float64(t)
	} else if err := failure("GetTemperature", ret); err != nil {
		return s, err
	}
	mhz, ret := h.GetClockInfo(nvml.CLOCK_SM)
	if ret == nvml.SUCCESS {
		s.SMClockMHz = float64(mhz)
	} else if err := failure("GetClockInfo", ret); err != nil {
		return s, err
	}
	mw, ret := h.GetEnforcedPowerLimit()
	if ret == nvml.SUCCESS {
		s.PowerLimitW = float64(mw) / 1000
	} else if err := failure("GetEnforcedPowerLimit", ret); err != nil {
		return s, err
	}
	r, ret := h.GetCurrentClocksEventReasons()
	if ret == nvml.SUCCESS {
		s.Throttle = r
	} else if err := failure("GetCurrentClocksEventReasons", ret); err != nil {
		return s, err
	}
	return s, nil
}

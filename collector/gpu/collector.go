// Package gpu reads NVIDIA GPUs through NVML: the total-energy counter of
// each GPU, closed into meter intervals, and telemetry samples.
//
// nvml.Interface is built once in main and injected: the real library
// (nvml.New), or go-nvml's mock servers driven by a power model (Simulate).
// After a failed Init no other NVML function is called: with no driver that
// would abort the process.
package gpu

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
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
	EnergyCounter bool // nvmlDeviceGetTotalEnergyConsumption is supported
	MemoryBytes   uint64
}

// Collector polls every GPU of one NVML instance.
type Collector struct {
	lib     nvml.Interface
	log     *slog.Logger
	driver  string
	devices []*deviceState
}

type deviceState struct {
	info   DeviceInfo
	handle nvml.Device

	primed    bool
	lastT     time.Time
	lastMJ    uint64
	haveMJ    bool
	lastPower float64 // W, NaN when unknown
}

// Open initialises NVML and enumerates the GPUs at time now; the energy
// counters read then are the start of the first interval, so no joule
// between Open and the first Poll is lost. On failure it returns an error
// wrapping ErrNoDriver and the nvml.Return, and NVML is left alone.
func Open(lib nvml.Interface, log *slog.Logger, now time.Time) (*Collector, error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("%w: nvml.Init returned %w", ErrNoDriver, ret)
	}
	c := &Collector{lib: lib, log: log}
	if v, ret := lib.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		c.driver = v
	}
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		lib.Shutdown()
		return nil, fmt.Errorf("nvml.DeviceGetCount: %w", ret)
	}
	for i := 0; i < n; i++ {
		h, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			lib.Shutdown()
			return nil, fmt.Errorf("nvml.DeviceGetHandleByIndex(%d): %w", i, ret)
		}
		info := DeviceInfo{Index: i, ID: strconv.Itoa(i)}
		info.Name, _ = h.GetName()
		info.UUID, _ = h.GetUUID()
		if mem, ret := h.GetMemoryInfo(); ret == nvml.SUCCESS {
			info.MemoryBytes = mem.Total
		}
		mj, ret := h.GetTotalEnergyConsumption()
		info.EnergyCounter = ret == nvml.SUCCESS
		d := &deviceState{info: info, handle: h, lastPower: math.NaN()}
		if info.EnergyCounter {
			d.primed, d.lastT, d.lastMJ, d.haveMJ = true, now, mj, true
		}
		c.devices = append(c.devices, d)
	}
	return c, nil
}

// Driver is the driver version NVML reported.
func (c *Collector) Driver() string { return c.driver }

// Devices lists the GPUs found at Open.
func (c *Collector) Devices() []DeviceInfo {
	out := make([]DeviceInfo, len(c.devices))
	for i, d := range c.devices {
		out[i] = d.info
	}
	return out
}

// Close shuts NVML down.
func (c *Collector) Close() error {
	if ret := c.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("nvml.Shutdown: %w", ret)
	}
	return nil
}

// Poll reads every GPU once at time now and closes one interval per GPU
// since the previous read (the first Poll of a GPU without an energy
// counter only takes its first power sample).
func (c *Collector) Poll(now time.Time) ([]estimator.Interval, []estimator.DeviceSample) {
	intervals := make([]estimator.Interval, 0, len(c.devices))
	samples := make([]estimator.DeviceSample, 0, len(c.devices))
	for _, d := range c.devices {
		s := d.sample(now)
		samples = append(samples, s)
		if iv, ok := d.energy(now, s.PowerW); ok {
			intervals = append(intervals, iv)
		}
	}
	return intervals, samples
}

// energy closes the interval since the previous poll: the counter delta, or
// the trapezoid of the power samples where there is no counter or it went
// backwards (driver reload, GPU reset).
func (d *deviceState) energy(now time.Time, powerW float64) (estimator.Interval, bool) {
	mj, ret := uint64(0), nvml.ERROR_NOT_SUPPORTED
	if d.info.EnergyCounter {
		mj, ret = d.handle.GetTotalEnergyConsumption()
	}
	defer func() {
		d.primed, d.lastT, d.lastPower = true, now, powerW
		d.lastMJ, d.haveMJ = mj, ret == nvml.SUCCESS
	}()
	if !d.primed || !now.After(d.lastT) {
		return estimator.Interval{}, false
	}
	iv := estimator.Interval{Device: d.info.ID, Start: d.lastT, End: now}
	if ret == nvml.SUCCESS && d.haveMJ && mj >= d.lastMJ {
		iv.Joules, iv.Method = float64(mj-d.lastMJ)/1000, estimator.MethodCounter
		return iv, true
	}
	p0, p1 := d.lastPower, powerW
	if math.IsNaN(p0) {
		p0 = p1
	}
	if math.IsNaN(p1) {
		p1 = p0
	}
	if math.IsNaN(p0) {
		return estimator.Interval{}, false // nothing to integrate: a gap
	}
	iv.Joules, iv.Method = (p0+p1)/2*now.Sub(d.lastT).Seconds(), estimator.MethodPowerIntegral
	return iv, true
}

func (d *deviceState) sample(now time.Time) estimator.DeviceSample {
	h := d.handle
	s := estimator.DeviceSample{Device: d.info.ID, Name: d.info.Name, Time: now, PowerW: math.NaN(),
		MemTotalBytes: d.info.MemoryBytes}
	if mw, ret := h.GetPowerUsage(); ret == nvml.SUCCESS {
		s.PowerW = float64(mw) / 1000
	}
	if u, ret := h.GetUtilizationRates(); ret == nvml.SUCCESS {
		s.UtilGPU, s.UtilMem = float64(u.Gpu), float64(u.Memory)
	}
	if m, ret := h.GetMemoryInfo(); ret == nvml.SUCCESS {
		s.MemUsedBytes, s.MemTotalBytes = m.Used, m.Total
	}
	if t, ret := h.GetTemperature(nvml.TEMPERATURE_GPU); ret == nvml.SUCCESS {
		s.TempC = float64(t)
	}
	if mhz, ret := h.GetClockInfo(nvml.CLOCK_SM); ret == nvml.SUCCESS {
		s.SMClockMHz = float64(mhz)
	}
	if mw, ret := h.GetEnforcedPowerLimit(); ret == nvml.SUCCESS {
		s.PowerLimitW = float64(mw) / 1000
	}
	if r, ret := h.GetCurrentClocksEventReasons(); ret == nvml.SUCCESS {
		s.Throttle = r
	}
	return s
}

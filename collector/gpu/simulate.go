package gpu

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxb200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// SimSpec is what --simulate asks for: a GPU kind and a count.
type SimSpec struct {
	Kind  string // a100, h100, h200, b200
	Count int    // 1-16
}

// ParseSimSpec parses "h100:8" (the count defaults to 8).
func ParseSimSpec(s string) (SimSpec, error) {
	kind, count, found := strings.Cut(strings.ToLower(strings.TrimSpace(s)), ":")
	spec := SimSpec{Kind: kind, Count: 8}
	if found {
		n, err := strconv.Atoi(count)
		if err != nil || n < 1 || n > 16 {
			return SimSpec{}, fmt.Errorf("--simulate %q: the count must be 1-16", s)
		}
		spec.Count = n
	}
	if _, ok := simKinds[spec.Kind]; !ok {
		return SimSpec{}, fmt.Errorf("--simulate %q: kind must be a100, h100, h200 or b200", s)
	}
	return spec, nil
}

type simKind struct {
	gpu gpus.Config
	new func(...gpus.Config) *server.Server
}

var simKinds = map[string]simKind{
	"a100": {gpus.A100_SXM4_80GB, dgxa100.NewWithGPUs},
	"h100": {gpus.H100_SXM5_80GB, dgxh100.NewWithGPUs},
	"h200": {gpus.H200_SXM5_141GB, dgxh200.NewWithGPUs},
	"b200": {gpus.B200_SXM5_180GB, dgxb200.NewWithGPUs},
}

// LoadFunc returns the load of a GPU by index, 0 (idle) to 1 (saturated).
type LoadFunc func(index int) float64

// PowerModel is the simulated draw: idle + (tdp - idle) x load.
type PowerModel struct {
	IdleW, TDPW float64
}

// Watts at a load in [0, 1].
func (m PowerModel) Watts(load float64) float64 {
	return m.IdleW + (m.TDPW-m.IdleW)*min(max(load, 0), 1)
}

// Simulation is go-nvml's mock server for a kind of DGX, with power,
// energy, utilisation and the rest of the telemetry driven by a power model
// and the live load. It implements nvml.Interface.
type Simulation struct {
	nvml.Interface
	devices []*SimDevice
}

// Simulate builds a simulated node. model gives idle and TDP watts; load
// the live load of each GPU; now the clock.
func Simulate(spec SimSpec, model PowerModel, load LoadFunc, now func() time.Time) (*Simulation, error) {
	k, ok := simKinds[spec.Kind]
	if !ok {
		return nil, fmt.Errorf("unknown simulated GPU kind %q", spec.Kind)
	}
	srv := k.new(gpus.Multiple(spec.Count, k.gpu)...)
	sim := &Simulation{Interface: srv}
	for i, d := range srv.Devices {
		md := d.(*server.Device)
		// The mock gives random UUIDs; simulated ones are stable so that
		// runs are reproducible.
		md.UUID = fmt.Sprintf("GPU-5e1a0000-0000-4000-8000-%012d", i)
		sd := &SimDevice{Device: md, index: i, model: model, load: load, now: now, temp: 30}
		sim.devices = append(sim.devices, sd)
	}
	return sim, nil
}

// Device returns simulated GPU i, for tests that script its behaviour.
func (s *Simulation) Device(i int) *SimDevice { return s.devices[i] }

// DeviceGetCount implements nvml.Interface.
func (s *Simulation) DeviceGetCount() (int, nvml.Return) { return len(s.devices), nvml.SUCCESS }

// DeviceGetHandleByIndex implements nvml.Interface.
func (s *Simulation) DeviceGetHandleByIndex(i int) (nvml.Device, nvml.Return) {
	if i < 0 || i >= len(s.devices) {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	return s.devices[i], nvml.SUCCESS
}

// SimDevice is one simulated GPU: the mock device, with the calls the
// collector makes on every poll answered from the power model. (The mock's
// own XxxFunc fields would also record every call, growing without bound in
// a long-running daemon.)
type SimDevice struct {
	*server.Device
	index int
	model PowerModel
	load  LoadFunc
	now   func() time.Time

	mu      sync.Mutex
	started bool
	last    time.Time
	watts   float64 // draw since last
	joules  float64 // energy counter
	temp    float64
	util    float64

	// The first and last counter values read, for tests that check that
	// every millijoule the counter advanced was attributed.
	firstMJ, lastMJ uint64
	reads           int
}

// CounterReads returns the first and last energy-counter values read (mJ)
// and how many reads there were.
func (d *SimDevice) CounterReads() (first, last uint64, reads int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.firstMJ, d.lastMJ, d.reads
}

// advance integrates the power model up to now. Power is piecewise constant
// between reads: the counter is exactly the integral of what Power reported.
func (d *SimDevice) advance() {
	t := d.now()
	if d.started && t.After(d.last) {
		d.joules += d.watts * t.Sub(d.last).Seconds()
		// A first-order thermal model: 30 C idle, about 75 C at TDP.
		d.temp += (30 + 45*d.watts/d.model.TDPW - d.temp) * (1 - math.Exp(-t.Sub(d.last).Seconds()/20))
	}
	d.started, d.last = true, t
	d.util = min(max(d.load(d.index), 0), 1)
	d.watts = d.model.Watts(d.util)
}

// EnergyJoules is the simulated counter in joules, for tests.
func (d *SimDevice) EnergyJoules() float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.advance()
	return d.joules
}

// GetTotalEnergyConsumption implements nvml.Device: millijoules since start.
func (d *SimDevice) GetTotalEnergyConsumption() (uint64, nvml.Return) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.advance()
	mj := uint64(d.joules * 1000)
	if d.reads == 0 {
		d.firstMJ = mj
	}
	d.lastMJ = mj
	d.reads++
	return mj, nvml.SUCCESS
}

// GetPowerUsage implements nvml.Device: milliwatts.
func (d *SimDevice) GetPowerUsage() (uint32, nvml.Return) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.advance()
	return uint32(d.watts * 1000), nvml.SUCCESS
}

// GetUtilizationRates implements nvml.Device.
func (d *SimDevice) GetUtilizationRates() (nvml.Utilization, nvml.Return) {
	d.mu.Lock()
	defer d.mu.Unlock()
	u := uint32(math.Round(d.util * 100))
	return nvml.Utilization{Gpu: u, Memory: u / 2}, nvml.SUCCESS
}

// GetMemoryInfo implements nvml.Device: usage grows with load.
func (d *SimDevice) GetMemoryInfo() (nvml.Memory, nvml.Return) {
	d.mu.Lock()
	defer d.mu.Unlock()
	total := d.Device.MemoryInfo.Total
	used := uint64(float64(total) * (0.7 + 0.2*d.util)) // weights + KV cache
	return nvml.Memory{Total: total, Used: used, Free: total - used}, nvml.SUCCESS
}

// GetTemperature implements nvml.Device.
func (d *SimDevice) GetTemperature(nvml.TemperatureSensors) (uint32, nvml.Return) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return uint32(math.Round(d.temp)), nvml.SUCCESS
}

// GetClockInfo implements nvml.Device.
func (d *SimDevice) GetClockInfo(nvml.ClockType) (uint32, nvml.Return) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return uint32(345 + d.util*(1980-345)), nvml.SUCCESS
}

// GetEnforcedPowerLimit implements nvml.Device: milliwatts.
func (d *SimDevice) GetEnforcedPowerLimit() (uint32, nvml.Return) {
	return uint32(d.model.TDPW * 1000), nvml.SUCCESS
}

// GetCurrentClocksEventReasons implements nvml.Device: idle when unloaded.
func (d *SimDevice) GetCurrentClocksEventReasons() (uint64, nvml.Return) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.util == 0 {
		return nvml.ClocksEventReasonGpuIdle, nvml.SUCCESS
	}
	return 0, nvml.SUCCESS
}

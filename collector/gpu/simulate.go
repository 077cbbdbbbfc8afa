package gpu

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxb200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// SimSpec is what --simulate asks for.
type SimSpec struct {
	Kind  string // a100, h100, h200, b200
	Count int    // 1-16
	// MIG, when set, puts every GPU in MIG mode with as many GPU instances
	// of this profile as fit: 1g, 2g, 3g, 4g or 7g.
	MIG string
	// CounterPeriod is how often the energy counter moves, as real GPUs'
	// counters do every 20-100 ms; 0 moves it at every read.
	CounterPeriod time.Duration
}

// DefaultCounterPeriod is the update period of the energy counter of
// --simulate: real counters move every 20-100 ms, and the slow end is the
// one that makes a 100 ms poll see no change now and then.
const DefaultCounterPeriod = 100 * time.Millisecond

// ParseSimSpec parses KIND[:COUNT][:mig=PROFILE], e.g. "h100:8" or
// "a100:2:mig=3g" (the count defaults to 8, the counter period to
// DefaultCounterPeriod).
func ParseSimSpec(s string) (SimSpec, error) {
	parts := strings.Split(strings.ToLower(strings.TrimSpace(s)), ":")
	spec := SimSpec{Kind: parts[0], Count: 8, CounterPeriod: DefaultCounterPeriod}
	if _, ok := simKindOf(spec.Kind); !ok {
		return SimSpec{}, fmt.Errorf("--simulate %q: kind must be a100, h100, h200 or b200", s)
	}
	if len(parts) > 3 {
		return SimSpec{}, fmt.Errorf("--simulate %q: want KIND[:COUNT][:mig=PROFILE], e.g. h100:8 or a100:2:mig=3g", s)
	}
	for _, p := range parts[1:] {
		if prof, ok := strings.CutPrefix(p, "mig="); ok {
			if _, ok := migProfileOf(prof); !ok {
				return SimSpec{}, fmt.Errorf("--simulate %q: MIG profile must be 1g, 2g, 3g, 4g or 7g", s)
			}
			spec.MIG = prof
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 16 {
			return SimSpec{}, fmt.Errorf("--simulate %q: the count must be 1-16", s)
		}
		spec.Count = n
	}
	return spec, nil
}

type simKind struct {
	gpu gpus.Config
	new func(...gpus.Config) *server.Server
}

// simKindOf looks a simulated GPU kind up by name (a100, h100, h200, b200).
func simKindOf(kind string) (simKind, bool) {
	switch kind {
	case "a100":
		return simKind{gpus.A100_SXM4_80GB, dgxa100.NewWithGPUs}, true
	case "h100":
		return simKind{gpus.H100_SXM5_80GB, dgxh100.NewWithGPUs}, true
	case "h200":
		return simKind{gpus.H200_SXM5_141GB, dgxh200.NewWithGPUs}, true
	case "b200":
		return simKind{gpus.B200_SXM5_180GB, dgxb200.NewWithGPUs}, true
	}
	return simKind{}, false
}

// LoadFunc returns the load of a device, 0 (idle) to 1 (saturated), by its
// device id: "3" for GPU 3, "0/1" for GPU instance 1 of GPU 0 in MIG mode.
type LoadFunc func(device string) float64

// PowerModel is the simulated draw: idle + (tdp - idle) x load.
type PowerModel struct {
	IdleW, TDPW float64
}

// Watts at a load in [0, 1].
func (m PowerModel) Watts(load float64) float64 {
	return m.IdleW + (m.TDPW-m.IdleW)*clamp01(load)
}

func clamp01(x float64) float64 { return min(max(x, 0), 1) }

// Simulation is go-nvml's mock server for a kind of DGX, with power,
// energy, utilisation and the rest of the telemetry driven by a power model
// and the live load, or by scripted power traces, and with the failures of
// real GPUs on demand (a stalled, reset or missing counter, no instant
// power, a GPU lost). It implements nvml.Interface: the one fake of the GPU
// collector, shared by its tests, the daemon's tests and --simulate.
type Simulation struct {
	nvml.Interface
	devices []*SimDevice
}

// Simulate builds a simulated node. model gives idle and TDP watts; load
// the live load of each device; now the clock.
func Simulate(spec SimSpec, model PowerModel, load LoadFunc, now func() time.Time) (*Simulation, error) {
	k, ok := simKindOf(spec.Kind)
	if !ok {
		return nil, fmt.Errorf("unknown simulated GPU kind %q", spec.Kind)
	}
	if spec.Count < 1 {
		return nil, fmt.Errorf("simulated GPU count %d: want at least 1", spec.Count)
	}
	if load == nil {
		load = func(string) float64 { return 0 }
	}
	srv := k.new(gpus.Multiple(spec.Count, k.gpu)...)
	sim := &Simulation{Interface: srv}
	t0 := now()
	for i, d := range srv.Devices {
		md := d.(*server.Device)
		// The mock gives random UUIDs; simulated ones are stable so that
		// runs are reproducible.
		md.UUID = fmt.Sprintf("GPU-5e1a0000-0000-4000-8000-%012d", i)
		sd := &SimDevice{
			Device: md, index: i, id: strconv.Itoa(i), model: model, load: load, now: now, temp: 30,
			origin: t0, period: spec.CounterPeriod,
			// GA100 (A100) reports instant power through GetPowerUsage; later
			// chips a one-second average. GPM exists from Hopper on.
			instantUsage: md.Config.Architecture == nvml.DEVICE_ARCH_AMPERE && strings.Contains(md.Config.Name, "A100"),
			gpm:          md.Config.Architecture == nvml.DEVICE_ARCH_HOPPER || md.Config.Architecture == nvml.DEVICE_ARCH_BLACKWELL,
		}
		if spec.MIG != "" {
			if err := sd.EnableMIG(spec.MIG); err != nil {
				return nil, err
			}
		}
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

// DeviceGetHandleByUUID implements nvml.Interface, for GPUs and MIG devices.
func (s *Simulation) DeviceGetHandleByUUID(uuid string) (nvml.Device, nvml.Return) {
	for _, d := range s.devices {
		if d.UUID == uuid {
			return d, nvml.SUCCESS
		}
		for _, m := range d.mig {
			if m.uuid == uuid {
				return m, nvml.SUCCESS
			}
		}
	}
	return nil, nvml.ERROR_NOT_FOUND
}

// SimDevice is one simulated GPU: the mock device, with the calls the
// collector makes on every poll answered from the power model or trace.
// (The mock's own XxxFunc fields would also record every call, growing
// without bound in a long-running daemon.)
type SimDevice struct {
	*server.Device
	index        int
	id           string
	model        PowerModel
	load         LoadFunc
	now          func() time.Time
	instantUsage bool
	gpm          bool

	mu      sync.Mutex
	origin  time.Time     // the counter moves at origin + k x period
	period  time.Duration // 0: at every read
	started bool
	last    time.Time
	watts   float64 // draw since last, without a trace
	joules  float64 // true energy since the counter (re)started
	visible float64 // what the counter shows, J
	trace   Trace
	traceAt time.Time
	temp    float64
	util    float64

	noCounter   bool
	noInstant   bool
	fail        nvml.Return
	migList     nvml.Return                   // what GetMaxMigDeviceCount answers when not SUCCESS
	gate        atomic.Pointer[chan struct{}] // non-nil: calls wait for it to close (Block)
	blocked     atomic.Int32                  // calls waiting on the gate
	failedCalls int
	procs       []nvml.ProcessInfo
	procsSet    bool

	mig     []*SimMigDevice
	smTotal float64

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

// advance integrates the draw up to now. Without a trace the draw is
// piecewise constant between reads, set from the load at each read; with
// one it is the trace. The counter shows the energy at the last update
// instant (origin + k x period), as real counters lag by up to one period.
func (d *SimDevice) advance() {
	t := d.now()
	if d.started && t.After(d.last) {
		dt := t.Sub(d.last).Seconds()
		e0 := d.joules
		d.joules += d.energy(d.last, t)
		if d.period <= 0 {
			d.visible = d.joules
		} else if g := d.origin.Add(t.Sub(d.origin) / d.period * d.period); g.After(d.last) {
			d.visible = e0 + d.energy(d.last, g)
		}
		for _, m := range d.mig {
			m.active += m.util * dt
		}
		// A first-order thermal model: 30 C idle, about 75 C at TDP.
		w := d.instantW(t)
		d.temp += (30 + 45*w/d.model.TDPW - d.temp) * (1 - math.Exp(-dt/20))
	}
	if !d.started || t.After(d.last) {
		d.started, d.last = true, t
	}
	d.setDraw()
}

// energy is the draw's integral over [a, b), both at or after d.last.
func (d *SimDevice) energy(a, b time.Time) float64 {
	if d.trace != nil {
		return d.trace.Energy(b.Sub(d.traceAt)) - d.trace.Energy(a.Sub(d.traceAt))
	}
	return d.watts * b.Sub(a).Seconds()
}

func (d *SimDevice) setDraw() {
	if len(d.mig) == 0 {
		d.util = clamp01(d.load(d.id))
	} else {
		d.util = 0
		for _, m := range d.mig {
			m.util = clamp01(d.load(m.id))
			d.util += m.util * float64(m.attrs.MultiprocessorCount) / d.smTotal
		}
	}
	d.watts = d.model.Watts(d.util)
}

func (d *SimDevice) instantW(t time.Time) float64 {
	if d.trace != nil {
		return d.trace.At(t.Sub(d.traceAt))
	}
	return d.watts
}

// averageW is the mean draw over the second before t, as GetPowerUsage
// reports it from Ampere (other than GA100) on. Without a trace the past
// draw is not kept, and the instant draw stands in for it.
func (d *SimDevice) averageW(t time.Time) float64 {
	if d.trace != nil {
		at := t.Sub(d.traceAt)
		return d.trace.Energy(at) - d.trace.Energy(at-time.Second)
	}
	return d.watts
}

// SetTrace makes the device draw tr from now on, in place of the power model.
func (d *SimDevice) SetTrace(tr Trace) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.advance()
	d.trace, d.traceAt = tr, d.last
}

// ResetCounter restarts the energy counter at zero, as a driver reload or a
// GPU reset does.
func (d *SimDevice) ResetCounter() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.advance()
	d.joules, d.visible = 0, 0
}

// SetNoCounter makes the energy counter unsupported (as before Volta).
func (d *SimDevice) SetNoCounter(v bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.noCounter = v
}

// SetNoInstantPower makes the FI_DEV_POWER_INSTANT field unsupported (as
// with drivers before it existed).
func (d *SimDevice) SetNoInstantPower(v bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.noInstant = v
}

// Fail makes every call the collector makes on the device return ret
// (ERROR_GPU_IS_LOST, ERROR_UNKNOWN, ERROR_TIMEOUT ...) until Recover. The
// device keeps drawing power meanwhile.
func (d *SimDevice) Fail(ret nvml.Return) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.advance()
	d.fail = ret
}

// Recover undoes Fail.
func (d *SimDevice) Recover() { d.Fail(nvml.SUCCESS) }

// SetProcesses fixes the compute processes the device reports (nil: one
// made-up process on every device or MIG instance with load, with a PID
// above Linux's pid_max so that it never names a real process).
func (d *SimDevice) SetProcesses(ps []nvml.ProcessInfo) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.procs, d.procsSet = ps, ps != nil
}

// Block makes every call the collector makes on the device (and on its
// MIG devices) wait until Unblock, as NVML does when a driver call hangs on
// a GPU that fell off the bus. The device keeps drawing power meanwhile.
func (d *SimDevice) Block() {
	g := make(chan struct{})
	d.gate.CompareAndSwap(nil, &g)
}

// Unblock lets the calls waiting since Block go on, and the next ones through.
func (d *SimDevice) Unblock() {
	if g := d.gate.Swap(nil); g != nil {
		close(*g)
	}
}

// Blocked is how many calls are waiting on Block now.
func (d *SimDevice) Blocked() int { return int(d.blocked.Load()) }

// call starts an NVML call on the device: it waits while the device is
// blocked, then takes the lock.
func (d *SimDevice) call() {
	if g := d.gate.Load(); g != nil {
		d.blocked.Add(1)
		<-*g
		d.blocked.Add(-1)
	}
	d.mu.Lock()
}

// failed is what every call returns first: SUCCESS, or the Fail value
// (counted, so that tests can tell a backoff from a busy loop).
func (d *SimDevice) failed() nvml.Return {
	if d.fail != nvml.SUCCESS {
		d.failedCalls++
	}
	return d.fail
}

// FailedCalls is how many calls were answered with the Fail value.
func (d *SimDevice) FailedCalls() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.failedCalls
}

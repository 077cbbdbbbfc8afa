package gpu

import (
	"context"
	"log/slog"
	"math"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/deadlabour/deadlabour/estimator"
)

// reader makes one GPU's NVML calls in a goroutine of its own, so that a
// call that hangs (a GPU fallen off the bus: the driver may not answer for
// minutes) holds that GPU only. Poll hands it a request and waits for the
// answer up to the read deadline; a reader that has not answered gets no
// other request until it does, so that hung calls never pile up.
//
// Everything below req and done belongs to the reader goroutine from a
// request until its answer, and to Poll the rest of the time: the channels
// order the two.
type reader struct {
	lib   nvml.Interface
	log   *slog.Logger
	index int
	req   chan readRequest // capacity 1: at most one request is out
	done  chan struct{}    // closed when the goroutine ends

	handle    nvml.Device // nil until DeviceGetHandleByIndex answered
	info      DeviceInfo  // what the GPU is, as the reads found it
	mig       []*migReader
	fv        [1]nvml.FieldValue
	out       reading
	warnedMIG bool
}

// readRequest asks a reader for one poll's reads.
type readRequest struct {
	now    time.Time
	forget bool // after an outage: no GPM sample from before it is used
	rescan bool // look for a changed MIG layout first
}

// reading is what one read found. A read stops at the first device
// failure (every further call on a lost GPU would fail too).
type reading struct {
	layout bool  // the reader's info and instances changed: Poll installs them
	err    error // a device failure
	mj     uint64
	mjRet  nvml.Return
	powerW float64
	sample estimator.DeviceSample
	inst   []estimator.DeviceSample // of each MIG instance, in the reader's order; UtilGPU from GPM
	busy   []bool                   // each MIG instance runs a compute process (ActivityProcesses)
}

// run answers requests on answers (by the GPU's index) until ctx is done.
// A read in progress when ctx ends is finished first: an NVML call cannot
// be called back.
func (r *reader) run(ctx context.Context, answers chan<- int) {
	defer close(r.done)
	for {
		select {
		case <-ctx.Done():
			return
		case rq := <-r.req:
			r.read(rq)
			answers <- r.index // never blocks: one slot per GPU
		}
	}
}

// read makes one poll's calls: the handle and description of a GPU not
// found yet (or a rescan of its MIG layout), then the energy counter,
// power, telemetry and the activity of its MIG instances.
func (r *reader) read(rq readRequest) {
	o := &r.out
	*o = reading{mjRet: nvml.ERROR_NOT_SUPPORTED, powerW: math.NaN(), inst: o.inst[:0], busy: o.busy[:0]}
	if r.handle == nil {
		h, ret := r.lib.DeviceGetHandleByIndex(r.index)
		if ret != nvml.SUCCESS {
			o.err = &callError{"DeviceGetHandleByIndex", ret}
			return
		}
		if o.err = r.describe(h); o.err != nil {
			return // described again at the retry
		}
		o.layout = true
	} else if rq.rescan {
		if o.layout, o.err = r.rescan(); o.err != nil {
			return
		}
	}
	if rq.forget {
		for _, in := range r.mig {
			in.havePrev = false
		}
	}
	if r.info.EnergyCounter {
		o.mj, o.mjRet = r.handle.GetTotalEnergyConsumption()
	}
	if o.err = failure("GetTotalEnergyConsumption", o.mjRet); o.err != nil {
		return
	}
	var ret nvml.Return
	o.powerW, ret = r.readPower()
	if o.err = failure("power", ret); o.err != nil {
		return
	}
	if o.sample, o.err = r.sample(rq.now, o.powerW); o.err != nil {
		return
	}
	if o.err = r.activity(); o.err != nil {
		return
	}
	o.err = r.instanceSamples(rq.now)
}

// describe finds what the GPU is and supports. A device failure meanwhile
// leaves the GPU undescribed (and the reader without a handle): what it
// answered then says nothing of what it supports.
func (r *reader) describe(h nvml.Device) error {
	info := r.info
	info.Name, _ = h.GetName()
	info.UUID, _ = h.GetUUID()
	mem, ret := h.GetMemoryInfo()
	if err := failure("GetMemoryInfo", ret); err != nil {
		return err
	}
	if ret == nvml.SUCCESS {
		info.MemoryBytes = mem.Total
	}
	_, ret = h.GetTotalEnergyConsumption()
	if err := failure("GetTotalEnergyConsumption", ret); err != nil {
		return err
	}
	info.EnergyCounter = ret == nvml.SUCCESS
	arch, _ := h.GetArchitecture()
	info.Power = detectPower(h, info.Name, arch)
	handle, was := r.handle, r.info
	r.handle, r.info = h, info
	if _, err := r.rescan(); err != nil {
		r.handle, r.info = handle, was
		return err
	}
	return nil
}

// sample reads the telemetry of a GPU at a poll. An unreadable value is
// NaN (left out of the telemetry). The error is a device failure.
func (r *reader) sample(now time.Time, powerW float64) (estimator.DeviceSample, error) {
	h := r.handle
	nan := math.NaN()
	s := estimator.DeviceSample{Device: r.info.ID, Name: r.info.Name, Time: now, PowerW: powerW,
		UtilGPU: nan, UtilMem: nan, TempC: nan, SMClockMHz: nan, PowerLimitW: nan,
		MemTotalBytes: r.info.MemoryBytes}
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
	reasons, ret := h.GetCurrentClocksEventReasons()
	if ret == nvml.SUCCESS {
		s.Throttle = reasons
	} else if err := failure("GetCurrentClocksEventReasons", ret); err != nil {
		return s, err
	}
	return s, nil
}

package gpu

import (
	"fmt"
	"math"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/deadlabour/deadlabour/estimator"
)

// MIGInstance is one GPU instance of a GPU in MIG mode. Its device id is
// "GPU index/GPU-instance id", e.g. "0/1"; requests that run on it are
// charged from its share of the board's energy.
type MIGInstance struct {
	ID          string // "0/1"
	GPUInstance int
	UUID        string // of its (first) MIG device: MIG-...
	Name        string
	Profile     string // e.g. 3g.40gb
	Slices      int    // GPU-instance slices
	SMs         int    // streaming multiprocessors
	MemoryBytes uint64
}

// Activity sources: how board energy is split among MIG instances.
const (
	ActivityGPM       = "gpm"       // SM utilisation of each instance from GPM, times its SMs
	ActivityProcesses = "processes" // equal among the instances running compute processes
)

// Shares lists the device ids of the GPU's meter intervals with each one's
// share of the board's wear (depreciation, embodied carbon): the GPU itself
// with 1 outside MIG mode; in MIG mode each instance by its slices of the
// board, and the board's own id with the slices no instance holds. The
// shares add up to 1: the board is never counted twice.
func (d DeviceInfo) Shares() map[string]float64 {
	if !d.MIG {
		return map[string]float64{d.ID: 1}
	}
	out := map[string]float64{}
	used := 0
	for _, in := range d.Instances {
		out[in.ID] = float64(in.Slices) / float64(d.Slices)
		used += in.Slices
	}
	out[d.ID] = float64(d.Slices-used) / float64(d.Slices)
	return out
}

// instanceState is the activity of one instance since the open interval
// began.
type instanceState struct {
	info      MIGInstance
	handle    nvml.Device // its MIG device
	prev, cur nvml.GpmSample
	havePrev  bool
	weight    float64 // SM-seconds (GPM) or busy seconds (processes)
	util      float64 // last GPM SM utilisation, percent; NaN unknown
}

// openMIG finds the instances of a GPU in MIG mode and how to tell their
// activity apart. It needs no root: MIG device handles and their attributes.
func (c *Collector) openMIG(d *deviceState) {
	h := d.handle
	d.info.Slices = boardSlices(h)
	n, ret := h.GetMaxMigDeviceCount()
	if ret != nvml.SUCCESS {
		c.log.Warn("GPU in MIG mode, but its MIG devices cannot be listed: its energy goes to the board", "gpu", d.info.Index, "err", ret)
		return
	}
	seen := map[int]bool{}
	for i := range n {
		m, ret := h.GetMigDeviceHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue // ERROR_NOT_FOUND: an empty slot
		}
		gi, ret := m.GetGpuInstanceId()
		if ret != nvml.SUCCESS || seen[gi] {
			continue // a second compute instance of the same GPU instance
		}
		seen[gi] = true
		in := MIGInstance{ID: fmt.Sprintf("%d/%d", d.info.Index, gi), GPUInstance: gi}
		in.UUID, _ = m.GetUUID()
		in.Name, _ = m.GetName()
		if a, ret := m.GetAttributes(); ret == nvml.SUCCESS {
			in.Slices, in.SMs = int(a.GpuInstanceSliceCount), int(a.MultiprocessorCount)
			in.MemoryBytes = a.MemorySizeMB << 20
			in.Profile = fmt.Sprintf("%dg.%dgb", a.GpuInstanceSliceCount, (a.MemorySizeMB+512)/1024)
		}
		if in.Slices == 0 {
			in.Slices = 1
		}
		if in.SMs == 0 {
			in.SMs = in.Slices
		}
		d.info.Instances = append(d.info.Instances, in)
		d.mig = append(d.mig, &instanceState{info: in, handle: m, util: math.NaN()})
	}
	used := 0
	for _, in := range d.info.Instances {
		used += in.Slices
	}
	d.info.Slices = max(d.info.Slices, used)

	d.info.Activity = ActivityProcesses
	if s, ret := h.GpmQueryDeviceSupport(); ret == nvml.SUCCESS && s.IsSupportedDevice != 0 && len(d.mig) > 0 {
		ok := true
		for _, in := range d.mig {
			var r1, r2 nvml.Return
			in.prev, r1 = c.lib.GpmSampleAlloc()
			in.cur, r2 = c.lib.GpmSampleAlloc()
			if r1 != nvml.SUCCESS || r2 != nvml.SUCCESS || h.GpmMigSampleGet(in.info.GPUInstance, in.prev) != nvml.SUCCESS {
				ok = false
			}
		}
		if ok {
			d.info.Activity = ActivityGPM
		} else {
			d.freeGPM(c.lib)
		}
	}
}

// boardSlices is the most GPU-instance slices a profile of the GPU has: 7
// on A100/H100/H200/B200, 4 on A30.
func boardSlices(h nvml.Device) int {
	best := 0
	for p := range nvml.GPU_INSTANCE_PROFILE_COUNT {
		if info, ret := h.GetGpuInstanceProfileInfo(p); ret == nvml.SUCCESS {
			best = max(best, int(info.SliceCount))
		}
	}
	return best
}

func (d *deviceState) freeGPM(lib nvml.Interface) {
	for _, in := range d.mig {
		for _, s := range []nvml.GpmSample{in.prev, in.cur} {
			if s != nil {
				lib.GpmSampleFree(s)
			}
		}
		in.prev, in.cur, in.havePrev = nil, nil, false
	}
}

// activity adds each instance's activity over (lastPoll, now] to its
// weight: its GPM SM utilisation times its SMs, or, without GPM, 1 if it
// runs a compute process. The error is a device failure.
func (c *Collector) activity(d *deviceState, now time.Time) error {
	if len(d.mig) == 0 {
		return nil
	}
	dt := now.Sub(d.lastPoll).Seconds()
	if d.lastPoll.IsZero() || dt < 0 {
		dt = 0
	}
	if d.info.Activity == ActivityGPM {
		for _, in := range d.mig {
			ret := d.handle.GpmMigSampleGet(in.info.GPUInstance, in.cur)
			if err := failure("GpmMigSampleGet", ret); err != nil {
				return err
			}
			in.util = math.NaN()
			if ret == nvml.SUCCESS && in.havePrev {
				m := nvml.GpmMetricsGetType{NumMetrics: 1, Sample1: in.prev, Sample2: in.cur}
				m.Metrics[0].MetricId = uint32(nvml.GPM_METRIC_SM_UTIL)
				if c.lib.GpmMetricsGet(&m) == nvml.SUCCESS && nvml.Return(m.Metrics[0].NvmlReturn) == nvml.SUCCESS {
					in.util = min(max(m.Metrics[0].Value, 0), 100)
					in.weight += in.util / 100 * float64(in.info.SMs) * dt
				}
			}
			if ret == nvml.SUCCESS {
				in.prev, in.cur, in.havePrev = in.cur, in.prev, true
			}
		}
		return nil
	}
	procs, ret := d.handle.GetComputeRunningProcesses()
	if err := failure("GetComputeRunningProcesses", ret); err != nil {
		return err
	}
	for _, in := range d.mig {
		for _, p := range procs {
			if int(p.GpuInstanceId) == in.info.GPUInstance {
				in.weight += dt
				break
			}
		}
	}
	return nil
}

// resetActivity forgets the activity gathered so far (after a gap).
func (d *deviceState) resetActivity() {
	for _, in := range d.mig {
		in.weight, in.havePrev = 0, false
	}
}

// split turns one board interval into the intervals of its instances and
// the board: the board's energy shared by the instances' activity weights
// (equal weights when the activity is processes), all of it to the board
// when no instance was active. Every id gets an interval over the same
// span, so that every instance's requests settle with it.
func (d *deviceState) split(iv estimator.Interval, out []estimator.Interval) []estimator.Interval {
	if !d.info.MIG {
		iv.Device = d.info.ID
		return append(out, iv)
	}
	var total float64
	last := -1
	for i, in := range d.mig {
		total += in.weight
		if in.weight > 0 {
			last = i
		}
	}
	board := iv
	board.Device = d.info.ID
	if total <= 0 {
		out = append(out, board)
	} else {
		board.Joules = 0
		out = append(out, board)
	}
	assigned := 0.0
	for i, in := range d.mig {
		part := iv
		part.Device = in.info.ID
		switch {
		case total <= 0 || in.weight <= 0:
			part.Joules = 0
		case i == last:
			// The remainder, so that the parts add up to the board's energy.
			part.Joules = max(iv.Joules-assigned, 0)
		default:
			part.Joules = iv.Joules * in.weight / total
			assigned += part.Joules
		}
		in.weight = 0
		out = append(out, part)
	}
	return out
}

// instanceSamples are the telemetry of the instances at a poll: their
// memory and, with GPM, their SM utilisation.
func (d *deviceState) instanceSamples(now time.Time, out []estimator.DeviceSample) ([]estimator.DeviceSample, error) {
	for _, in := range d.mig {
		nan := math.NaN()
		s := estimator.DeviceSample{Device: in.info.ID, Name: in.info.Name, Time: now, PowerW: nan,
			UtilGPU: in.util, UtilMem: nan, TempC: nan, SMClockMHz: nan, PowerLimitW: nan, MemTotalBytes: in.info.MemoryBytes}
		m, ret := in.handle.GetMemoryInfo()
		if err := failure("GetMemoryInfo (MIG)", ret); err != nil {
			return out, err
		}
		if ret == nvml.SUCCESS {
			s.MemUsedBytes, s.MemTotalBytes = m.Used, m.Total
		}
		out = append(out, s)
	}
	return out, nil
}

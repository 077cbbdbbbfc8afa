package gpu

import (
	"fmt"
	"math"
	"slices"
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

// migRescan is how often a GPU's MIG layout is read again (and after every
// outage): an operator may destroy and create GPU instances at run time.
const migRescan = 10 * time.Second

// meterIDs are the device ids of a GPU's meter intervals: the board's, and
// in MIG mode its instances'.
func meterIDs(d DeviceInfo) []string {
	ids := []string{d.ID}
	for _, in := range d.Instances {
		ids = append(ids, in.ID)
	}
	return ids
}

// instanceState is the activity of one instance since the open interval
// began; Poll's.
type instanceState struct {
	info   MIGInstance
	weight float64 // SM-seconds (GPM) or busy seconds (processes)
}

// migReader is one instance as its GPU's reader reads it.
type migReader struct {
	info      MIGInstance
	handle    nvml.Device // its MIG device
	prev, cur nvml.GpmSample
	havePrev  bool
	util      float64 // GPM SM utilisation at the last read, percent; NaN unknown
}

// rescan reads whether the GPU is in MIG mode and, if so, its GPU
// instances; a layout different from the one the reader has replaces it.
// It needs no root: MIG device handles and their attributes. It says
// whether the layout changed; the error is a device failure.
func (r *reader) rescan() (bool, error) {
	mode, _, ret := r.handle.GetMigMode()
	if err := failure("GetMigMode", ret); err != nil {
		return false, err
	}
	on := ret == nvml.SUCCESS && mode == nvml.DEVICE_MIG_ENABLE
	var found []*migReader
	if on {
		var listRet nvml.Return
		if found, listRet = r.scanMIG(); listRet != nvml.SUCCESS && !r.warnedMIG {
			r.warnedMIG = true
			r.log.Warn("GPU in MIG mode, but its MIG devices cannot be listed: its energy goes to the board", "gpu", r.index, "err", listRet)
		}
	}
	if on == r.info.MIG && sameInstances(found, r.mig) {
		return false, nil
	}
	r.setLayout(on, found)
	return true, nil
}

// scanMIG lists the GPU instances of a GPU in MIG mode, in NVML's order;
// ret is why NVML refused to, SUCCESS when it did not.
func (r *reader) scanMIG() (found []*migReader, ret nvml.Return) {
	h := r.handle
	n, ret := h.GetMaxMigDeviceCount()
	if ret != nvml.SUCCESS {
		return nil, ret
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
		in := MIGInstance{ID: fmt.Sprintf("%d/%d", r.index, gi), GPUInstance: gi}
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
		found = append(found, &migReader{info: in, handle: m, util: math.NaN()})
	}
	return found, nvml.SUCCESS
}

// sameInstances says whether two layouts have the same instances.
func sameInstances(a, b []*migReader) bool {
	return slices.EqualFunc(a, b, func(x, y *migReader) bool { return x.info == y.info })
}

// setLayout takes a MIG layout: the instances, the board's slices and how
// their activity is told apart (GPM where the GPU has it for every
// instance, else their compute processes).
func (r *reader) setLayout(on bool, found []*migReader) {
	r.freeGPM()
	r.mig = found
	info := &r.info
	info.MIG, info.Instances, info.Slices, info.Activity = on, nil, 0, ""
	if !on {
		return
	}
	h := r.handle
	used := 0
	for _, in := range found {
		info.Instances = append(info.Instances, in.info)
		used += in.info.Slices
	}
	info.Slices = max(boardSlices(h), used)

	info.Activity = ActivityProcesses
	if s, ret := h.GpmQueryDeviceSupport(); ret == nvml.SUCCESS && s.IsSupportedDevice != 0 && len(found) > 0 {
		ok := true
		for _, in := range found {
			var r1, r2 nvml.Return
			in.prev, r1 = r.lib.GpmSampleAlloc()
			in.cur, r2 = r.lib.GpmSampleAlloc()
			if r1 != nvml.SUCCESS || r2 != nvml.SUCCESS || h.GpmMigSampleGet(in.info.GPUInstance, in.prev) != nvml.SUCCESS {
				ok = false
			}
		}
		if ok {
			info.Activity = ActivityGPM
		} else {
			r.freeGPM()
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

func (r *reader) freeGPM() {
	for _, in := range r.mig {
		for _, s := range []nvml.GpmSample{in.prev, in.cur} {
			if s != nil {
				r.lib.GpmSampleFree(s)
			}
		}
		in.prev, in.cur, in.havePrev = nil, nil, false
	}
}

// activity reads what each instance did since the last read: its GPM SM
// utilisation (into its sample), or, without GPM, whether it runs a
// compute process. The error is a device failure.
func (r *reader) activity() error {
	if len(r.mig) == 0 {
		return nil
	}
	h := r.handle
	if r.info.Activity == ActivityGPM {
		for _, in := range r.mig {
			ret := h.GpmMigSampleGet(in.info.GPUInstance, in.cur)
			if err := failure("GpmMigSampleGet", ret); err != nil {
				return err
			}
			in.util = math.NaN()
			if ret == nvml.SUCCESS && in.havePrev {
				m := nvml.GpmMetricsGetType{NumMetrics: 1, Sample1: in.prev, Sample2: in.cur}
				m.Metrics[0].MetricId = uint32(nvml.GPM_METRIC_SM_UTIL)
				if r.lib.GpmMetricsGet(&m) == nvml.SUCCESS && nvml.Return(m.Metrics[0].NvmlReturn) == nvml.SUCCESS {
					in.util = min(max(m.Metrics[0].Value, 0), 100)
				}
			}
			if ret == nvml.SUCCESS {
				in.prev, in.cur, in.havePrev = in.cur, in.prev, true
			}
		}
		return nil
	}
	procs, ret := h.GetComputeRunningProcesses()
	if err := failure("GetComputeRunningProcesses", ret); err != nil {
		return err
	}
	o := &r.out
	for _, in := range r.mig {
		busy := false
		for _, p := range procs {
			if int(p.GpuInstanceId) == in.info.GPUInstance {
				busy = true
				break
			}
		}
		o.busy = append(o.busy, busy)
	}
	return nil
}

// instanceSamples are the telemetry of the instances at a poll: their
// memory and, with GPM, their SM utilisation (read by activity).
func (r *reader) instanceSamples(now time.Time) error {
	o := &r.out
	for _, in := range r.mig {
		nan := math.NaN()
		s := estimator.DeviceSample{Device: in.info.ID, Name: in.info.Name, Time: now, PowerW: nan,
			UtilGPU: in.util, UtilMem: nan, TempC: nan, SMClockMHz: nan, PowerLimitW: nan, MemTotalBytes: in.info.MemoryBytes}
		m, ret := in.handle.GetMemoryInfo()
		if err := failure("GetMemoryInfo (MIG)", ret); err != nil {
			return err
		}
		if ret == nvml.SUCCESS {
			s.MemUsedBytes, s.MemTotalBytes = m.Used, m.Total
		}
		o.inst = append(o.inst, s)
	}
	return nil
}

// addActivity adds each instance's activity over (lastPoll, now] to its
// weight, from a read: its GPM SM utilisation times its SMs, or 1 if it
// runs a compute process.
func (d *deviceState) addActivity(now time.Time, o *reading) {
	dt := now.Sub(d.lastPoll).Seconds()
	if d.lastPoll.IsZero() || dt < 0 {
		dt = 0
	}
	for i, in := range d.mig {
		switch {
		case d.info.Activity == ActivityGPM && i < len(o.inst) && !math.IsNaN(o.inst[i].UtilGPU):
			in.weight += o.inst[i].UtilGPU / 100 * float64(in.info.SMs) * dt
		case d.info.Activity == ActivityProcesses && i < len(o.busy) && o.busy[i]:
			in.weight += dt
		}
	}
}

// resetActivity forgets the activity gathered so far (after a gap), and
// has the next read forget its GPM samples.
func (d *deviceState) resetActivity() {
	for _, in := range d.mig {
		in.weight = 0
	}
	d.forget = true
}

// split turns one board interval into the intervals of its instances and
// the board: the board's energy shared by the instances' activity weights
// (equal weights when the activity is processes), all of it to the board
// when no instance was active. Every id gets an interval over the same
// span, so that every instance's requests settle with it.
//
// Only the ids metered since start are used (the ledger knows no other):
// after the MIG layout changed, an instance that was not there at start is
// charged to the board's id, and an instance metered since start that is
// gone gets 0 J, so that its requests settle.
func (d *deviceState) split(iv estimator.Interval, out []estimator.Interval) []estimator.Interval {
	board := iv
	board.Device = d.info.ID
	if len(d.mig) == 0 && len(d.metered) <= 1 {
		return append(out, board)
	}
	var total float64
	last := -1
	for i, in := range d.mig {
		total += in.weight
		if in.weight > 0 {
			last = i
		}
	}
	at := len(out)
	out = append(out, board)
	toBoard, assigned := 0.0, 0.0
	if total <= 0 {
		toBoard = iv.Joules
	}
	for i, in := range d.mig {
		var j float64
		switch {
		case total <= 0 || in.weight <= 0:
		case i == last:
			// The remainder, so that the parts add up to the board's energy.
			j = max(iv.Joules-assigned, 0)
		default:
			j = iv.Joules * in.weight / total
			assigned += j
		}
		in.weight = 0
		if !d.meters(in.info.ID) {
			toBoard += j
			continue
		}
		part := iv
		part.Device, part.Joules = in.info.ID, j
		out = append(out, part)
	}
	out[at].Joules = toBoard
	for _, id := range d.metered[min(1, len(d.metered)):] {
		if !slices.ContainsFunc(d.mig, func(in *instanceState) bool { return in.info.ID == id }) {
			part := iv
			part.Device, part.Joules = id, 0
			out = append(out, part)
		}
	}
	return out
}

// meters says whether id is metered: one of the ids the GPU had at start
// (before Open ends, every id is).
func (d *deviceState) meters(id string) bool {
	return d.metered == nil || slices.Contains(d.metered, id)
}

package gpu

import (
	"fmt"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

// migProfile is a MIG profile name's GPU-instance slices and profile id.
type migProfile struct{ slices, profile int }

// migProfileOf looks a MIG profile up by name (1g, 2g, 3g, 4g, 7g).
func migProfileOf(name string) (migProfile, bool) {
	switch name {
	case "1g":
		return migProfile{1, nvml.GPU_INSTANCE_PROFILE_1_SLICE}, true
	case "2g":
		return migProfile{2, nvml.GPU_INSTANCE_PROFILE_2_SLICE}, true
	case "3g":
		return migProfile{3, nvml.GPU_INSTANCE_PROFILE_3_SLICE}, true
	case "4g":
		return migProfile{4, nvml.GPU_INSTANCE_PROFILE_4_SLICE}, true
	case "7g":
		return migProfile{7, nvml.GPU_INSTANCE_PROFILE_7_SLICE}, true
	}
	return migProfile{}, false
}

// SimMigDevice is one MIG device (a GPU instance with one compute instance
// spanning it) of a simulated GPU. Its load comes from the LoadFunc under
// its device id ("0/1").
type SimMigDevice struct {
	mock.Device // calls the collector never makes panic
	parent      *SimDevice
	gi          int
	inst        nvml.GpuInstance // the mock's GPU instance, destroyed on reconfiguration
	id          string
	uuid        string
	name        string
	attrs       nvml.DeviceAttributes

	util   float64 // guarded by parent.mu
	active float64 // SM-busy seconds (util x time), for GPM
}

// EnableMIG puts the GPU in MIG mode with as many GPU instances of the
// profile (1g, 2g, 3g, 4g, 7g) as fit, each with one compute instance.
func (d *SimDevice) EnableMIG(profile string) error { return d.ReconfigureMIG(profile) }

// ReconfigureMIG destroys the GPU's instances and creates as many of the
// profile as fit, as an operator does at run time with nvidia-smi mig
// (-dci, -dgi, -cgi ... -C); it puts the GPU in MIG mode first if it is
// not. New GPU instances get new ids. Loads and process lists follow the
// new device ids; the energy counter goes on (it is the board's).
func (d *SimDevice) ReconfigureMIG(profile string) error {
	p, ok := migProfileOf(profile)
	if !ok {
		return fmt.Errorf("MIG profile %q: want 1g, 2g, 3g, 4g or 7g", profile)
	}
	full, ret := d.Device.GetGpuInstanceProfileInfo(nvml.GPU_INSTANCE_PROFILE_7_SLICE)
	if ret != nvml.SUCCESS {
		return fmt.Errorf("GPU %d: no 7-slice MIG profile: %w", d.index, ret)
	}
	info, ret := d.Device.GetGpuInstanceProfileInfo(p.profile)
	if ret != nvml.SUCCESS {
		return fmt.Errorf("GPU %d: MIG profile %s: %w", d.index, profile, ret)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started {
		d.advance() // the draw so far, by the old instances' loads
	}
	for _, m := range d.mig {
		m.inst.Destroy()
	}
	d.mig = nil
	d.Device.SetMigMode(nvml.DEVICE_MIG_ENABLE)
	d.smTotal = float64(full.MultiprocessorCount)
	n := min(int(info.InstanceCount), int(full.SliceCount)/p.slices)
	for range n {
		gi, ret := d.Device.CreateGpuInstance(&info)
		if ret != nvml.SUCCESS {
			return fmt.Errorf("GPU %d: create a %s instance: %w", d.index, profile, ret)
		}
		gii, _ := gi.GetInfo()
		m := &SimMigDevice{
			parent: d, gi: int(gii.Id), inst: gi,
			id:   fmt.Sprintf("%d/%d", d.index, gii.Id),
			uuid: fmt.Sprintf("MIG-5e1a0000-0000-4000-8000-%04d%08d", d.index, gii.Id),
			name: fmt.Sprintf("%s MIG %dg.%dgb", d.Config.Name, info.SliceCount, (info.MemorySizeMB+512)/1024),
			attrs: nvml.DeviceAttributes{
				MultiprocessorCount:       info.MultiprocessorCount,
				GpuInstanceSliceCount:     info.SliceCount,
				ComputeInstanceSliceCount: info.SliceCount,
				MemorySizeMB:              info.MemorySizeMB,
			},
		}
		d.mig = append(d.mig, m)
	}
	d.setDraw()
	return nil
}

// DisableMIG destroys the GPU's instances and takes it out of MIG mode.
func (d *SimDevice) DisableMIG() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started {
		d.advance()
	}
	for _, m := range d.mig {
		m.inst.Destroy()
	}
	d.mig = nil
	d.Device.SetMigMode(nvml.DEVICE_MIG_DISABLE)
	d.setDraw()
}

// GetMigMode implements nvml.Device: current and pending mode.
func (d *SimDevice) GetMigMode() (int, int, nvml.Return) {
	d.call()
	defer d.mu.Unlock()
	if r := d.failed(); r != nvml.SUCCESS {
		return 0, 0, r
	}
	return d.Device.MigMode, d.Device.MigMode, nvml.SUCCESS
}

// GetMaxMigDeviceCount implements nvml.Device.
func (d *SimDevice) GetMaxMigDeviceCount() (int, nvml.Return) {
	d.call()
	defer d.mu.Unlock()
	if r := d.failed(); r != nvml.SUCCESS {
		return 0, r
	}
	if d.migList != nvml.SUCCESS {
		return 0, d.migList
	}
	return 7, nvml.SUCCESS
}

// RefuseMIGListing makes the GPU in MIG mode refuse to list its MIG
// devices with ret (a driver that does not let this user see them).
func (d *SimDevice) RefuseMIGListing(ret nvml.Return) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.migList = ret
}

// GetMigDeviceHandleByIndex implements nvml.Device: ERROR_NOT_FOUND for
// an empty slot, as on real GPUs.
func (d *SimDevice) GetMigDeviceHandleByIndex(i int) (nvml.Device, nvml.Return) {
	d.call()
	defer d.mu.Unlock()
	if r := d.failed(); r != nvml.SUCCESS {
		return nil, r
	}
	if i < 0 || i >= len(d.mig) {
		return nil, nvml.ERROR_NOT_FOUND
	}
	return d.mig[i], nvml.SUCCESS
}

// GpmQueryDeviceSupport implements nvml.Device: Hopper and Blackwell have GPM.
func (d *SimDevice) GpmQueryDeviceSupport() (nvml.GpmSupport, nvml.Return) {
	d.call()
	defer d.mu.Unlock()
	if r := d.failed(); r != nvml.SUCCESS {
		return nvml.GpmSupport{}, r
	}
	s := nvml.GpmSupport{Version: nvml.GPM_SUPPORT_VERSION}
	if d.gpm {
		s.IsSupportedDevice = 1
	}
	return s, nvml.SUCCESS
}

// SetGPM turns GPM support on or off (on by default from Hopper on).
func (d *SimDevice) SetGPM(v bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gpm = v
}

// GpmMigSampleGet implements nvml.Device.
func (d *SimDevice) GpmMigSampleGet(gi int, s nvml.GpmSample) nvml.Return { return s.MigGet(d, gi) }

// GetUUID implements nvml.Device.
func (m *SimMigDevice) GetUUID() (string, nvml.Return) { return m.uuid, nvml.SUCCESS }

// GetName implements nvml.Device.
func (m *SimMigDevice) GetName() (string, nvml.Return) { return m.name, nvml.SUCCESS }

// GetGpuInstanceId implements nvml.Device.
func (m *SimMigDevice) GetGpuInstanceId() (int, nvml.Return) { return m.gi, nvml.SUCCESS }

// GetComputeInstanceId implements nvml.Device.
func (m *SimMigDevice) GetComputeInstanceId() (int, nvml.Return) { return 0, nvml.SUCCESS }

// GetAttributes implements nvml.Device.
func (m *SimMigDevice) GetAttributes() (nvml.DeviceAttributes, nvml.Return) {
	return m.attrs, nvml.SUCCESS
}

// IsMigDeviceHandle implements nvml.Device.
func (m *SimMigDevice) IsMigDeviceHandle() (bool, nvml.Return) { return true, nvml.SUCCESS }

// GetDeviceHandleFromMigDeviceHandle implements nvml.Device.
func (m *SimMigDevice) GetDeviceHandleFromMigDeviceHandle() (nvml.Device, nvml.Return) {
	return m.parent, nvml.SUCCESS
}

// GetMemoryInfo implements nvml.Device: the instance's memory, used with load.
func (m *SimMigDevice) GetMemoryInfo() (nvml.Memory, nvml.Return) {
	d := m.parent
	d.call()
	defer d.mu.Unlock()
	if r := d.failed(); r != nvml.SUCCESS {
		return nvml.Memory{}, r
	}
	return memoryAt(m.attrs.MemorySizeMB<<20, m.util), nvml.SUCCESS
}

// simGpmSample is a GPM sample of the simulator: when it was taken and the
// SM-busy seconds of the device or GPU instance so far.
type simGpmSample struct {
	t      time.Time
	active float64
	taken  bool
}

// GpmSampleAlloc implements nvml.Interface.
func (s *Simulation) GpmSampleAlloc() (nvml.GpmSample, nvml.Return) {
	return &simGpmSample{}, nvml.SUCCESS
}

// GpmSampleFree implements nvml.Interface.
func (s *Simulation) GpmSampleFree(g nvml.GpmSample) nvml.Return { return g.Free() }

// GpmMetricsGet implements nvml.Interface: SM and graphics utilisation
// between two samples; other metrics are unsupported.
func (s *Simulation) GpmMetricsGet(m *nvml.GpmMetricsGetType) nvml.Return {
	s1, ok1 := m.Sample1.(*simGpmSample)
	s2, ok2 := m.Sample2.(*simGpmSample)
	if !ok1 || !ok2 || !s1.taken || !s2.taken || int(m.NumMetrics) > len(m.Metrics) {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	dt := s2.t.Sub(s1.t).Seconds()
	for i := range m.NumMetrics {
		mt := &m.Metrics[i]
		switch nvml.GpmMetricId(mt.MetricId) {
		case nvml.GPM_METRIC_SM_UTIL, nvml.GPM_METRIC_GRAPHICS_UTIL:
			if dt <= 0 {
				mt.NvmlReturn = uint32(nvml.ERROR_INVALID_ARGUMENT)
				continue
			}
			mt.Value = (s2.active - s1.active) / dt * 100
			mt.NvmlReturn = uint32(nvml.SUCCESS)
		default:
			mt.NvmlReturn = uint32(nvml.ERROR_NOT_SUPPORTED)
		}
	}
	return nvml.SUCCESS
}

// Free implements nvml.GpmSample.
func (g *simGpmSample) Free() nvml.Return { return nvml.SUCCESS }

// Get implements nvml.GpmSample. Only GPU-instance samples are simulated.
func (g *simGpmSample) Get(nvml.Device) nvml.Return { return nvml.ERROR_NOT_SUPPORTED }

// MigGet implements nvml.GpmSample: a sample of one GPU instance.
func (g *simGpmSample) MigGet(dev nvml.Device, gi int) nvml.Return {
	d, ok := dev.(*SimDevice)
	if !ok {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	d.call()
	defer d.mu.Unlock()
	if r := d.failed(); r != nvml.SUCCESS {
		return r
	}
	if !d.gpm {
		return nvml.ERROR_NOT_SUPPORTED
	}
	d.advance()
	for _, m := range d.mig {
		if m.gi == gi {
			g.t, g.active, g.taken = d.last, m.active, true
			return nvml.SUCCESS
		}
	}
	return nvml.ERROR_NOT_FOUND
}

package gpu

import (
	"encoding/binary"
	"math"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// The NVML calls a simulated device answers, scripted from its power model.

// GetTotalEnergyConsumption implements nvml.Device: millijoules since start.
func (d *SimDevice) GetTotalEnergyConsumption() (uint64, nvml.Return) {
	d.call()
	defer d.mu.Unlock()
	if r := d.failed(); r != nvml.SUCCESS {
		return 0, r
	}
	d.advance()
	if d.noCounter {
		return 0, nvml.ERROR_NOT_SUPPORTED
	}
	mj := uint64(d.visible * 1000)
	if d.reads == 0 {
		d.firstMJ = mj
	}
	d.lastMJ = mj
	d.reads++
	return mj, nvml.SUCCESS
}

// GetPowerUsage implements nvml.Device: milliwatts, instant on GA100, the
// mean of the last second on later chips.
func (d *SimDevice) GetPowerUsage() (uint32, nvml.Return) {
	d.call()
	defer d.mu.Unlock()
	if r := d.failed(); r != nvml.SUCCESS {
		return 0, r
	}
	d.advance()
	if d.instantUsage {
		return milliwatts(d.instantW(d.last)), nvml.SUCCESS
	}
	return milliwatts(d.averageW(d.last)), nvml.SUCCESS
}

func milliwatts(w float64) uint32 { return uint32(math.Round(w * 1000)) }

// GetFieldValues implements nvml.Device: FI_DEV_POWER_INSTANT and
// FI_DEV_POWER_AVERAGE in milliwatts; every other field is unsupported.
func (d *SimDevice) GetFieldValues(values []nvml.FieldValue) nvml.Return {
	d.call()
	defer d.mu.Unlock()
	if r := d.failed(); r != nvml.SUCCESS {
		return r
	}
	if len(values) == 0 {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	d.advance()
	for i := range values {
		v := &values[i]
		v.Timestamp = d.last.UnixMicro()
		var w float64
		switch {
		case v.FieldId == nvml.FI_DEV_POWER_INSTANT && !d.noInstant:
			w = d.instantW(d.last)
		case v.FieldId == nvml.FI_DEV_POWER_AVERAGE:
			w = d.averageW(d.last)
		default:
			v.NvmlReturn = uint32(nvml.ERROR_NOT_SUPPORTED)
			continue
		}
		v.NvmlReturn, v.ValueType = uint32(nvml.SUCCESS), uint32(nvml.VALUE_TYPE_UNSIGNED_INT)
		v.Value = [8]byte{}
		binary.NativeEndian.PutUint32(v.Value[:4], milliwatts(w))
	}
	return nvml.SUCCESS
}

// GetUtilizationRates implements nvml.Device (not supported in MIG mode,
// as on real GPUs).
func (d *SimDevice) GetUtilizationRates() (nvml.Utilization, nvml.Return) {
	d.call()
	defer d.mu.Unlock()
	if r := d.failed(); r != nvml.SUCCESS {
		return nvml.Utilization{}, r
	}
	if len(d.mig) > 0 {
		return nvml.Utilization{}, nvml.ERROR_NOT_SUPPORTED
	}
	u := uint32(math.Round(d.util * 100))
	return nvml.Utilization{Gpu: u, Memory: u / 2}, nvml.SUCCESS
}

// GetMemoryInfo implements nvml.Device: usage grows with load.
func (d *SimDevice) GetMemoryInfo() (nvml.Memory, nvml.Return) {
	d.call()
	defer d.mu.Unlock()
	if r := d.failed(); r != nvml.SUCCESS {
		return nvml.Memory{}, r
	}
	return memoryAt(d.Device.MemoryInfo.Total, d.util), nvml.SUCCESS
}

func memoryAt(total uint64, util float64) nvml.Memory {
	used := uint64(float64(total) * (0.7 + 0.2*util)) // weights + KV cache
	return nvml.Memory{Total: total, Used: used, Free: total - used}
}

// GetTemperature implements nvml.Device.
func (d *SimDevice) GetTemperature(nvml.TemperatureSensors) (uint32, nvml.Return) {
	d.call()
	defer d.mu.Unlock()
	if r := d.failed(); r != nvml.SUCCESS {
		return 0, r
	}
	return uint32(math.Round(d.temp)), nvml.SUCCESS
}

// GetClockInfo implements nvml.Device.
func (d *SimDevice) GetClockInfo(nvml.ClockType) (uint32, nvml.Return) {
	d.call()
	defer d.mu.Unlock()
	if r := d.failed(); r != nvml.SUCCESS {
		return 0, r
	}
	return uint32(345 + d.util*(1980-345)), nvml.SUCCESS
}

// GetEnforcedPowerLimit implements nvml.Device: milliwatts.
func (d *SimDevice) GetEnforcedPowerLimit() (uint32, nvml.Return) {
	d.call()
	defer d.mu.Unlock()
	if r := d.failed(); r != nvml.SUCCESS {
		return 0, r
	}
	return uint32(d.model.TDPW * 1000), nvml.SUCCESS
}

// GetCurrentClocksEventReasons implements nvml.Device: idle when unloaded.
func (d *SimDevice) GetCurrentClocksEventReasons() (uint64, nvml.Return) {
	d.call()
	defer d.mu.Unlock()
	if r := d.failed(); r != nvml.SUCCESS {
		return 0, r
	}
	if d.util == 0 {
		return nvml.ClocksEventReasonGpuIdle, nvml.SUCCESS
	}
	return 0, nvml.SUCCESS
}

// noInstance is the GpuInstanceId NVML reports for a process outside MIG.
const noInstance = 0xFFFFFFFF

// GetComputeRunningProcesses implements nvml.Device.
func (d *SimDevice) GetComputeRunningProcesses() ([]nvml.ProcessInfo, nvml.Return) {
	d.call()
	defer d.mu.Unlock()
	if r := d.failed(); r != nvml.SUCCESS {
		return nil, r
	}
	if d.procsSet {
		return append([]nvml.ProcessInfo(nil), d.procs...), nvml.SUCCESS
	}
	d.advance()
	// Made-up processes, with PIDs above pid_max (1<<22).
	var out []nvml.ProcessInfo
	base := uint32(1<<22 + d.index*64)
	for _, m := range d.mig {
		if m.util > 0 {
			out = append(out, nvml.ProcessInfo{Pid: base + uint32(m.gi), UsedGpuMemory: 1 << 30,
				GpuInstanceId: uint32(m.gi), ComputeInstanceId: 0})
		}
	}
	if len(d.mig) == 0 && d.util > 0 {
		out = append(out, nvml.ProcessInfo{Pid: base + 63, UsedGpuMemory: 1 << 30,
			GpuInstanceId: noInstance, ComputeInstanceId: noInstance})
	}
	return out, nvml.SUCCESS
}

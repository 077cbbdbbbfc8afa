package gpu

import (
	"encoding/binary"
	"math"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// PowerKind says how a GPU's power is read: for telemetry, and for the
// trapezoid where there is no energy counter to trust.
type PowerKind string

const (
	// PowerInstant: the FI_DEV_POWER_INSTANT field value, the draw now.
	PowerInstant PowerKind = "instant"
	// PowerUsageInstant: nvmlDeviceGetPowerUsage on a chip where it is the
	// draw now (GA100, i.e. A100 and A30, and chips before Ampere).
	PowerUsageInstant PowerKind = "usage_instant"
	// PowerUsageAverage: nvmlDeviceGetPowerUsage where it is a one-second
	// average (Ampere other than GA100, Ada, Hopper, Blackwell), used only
	// when the driver has no FI_DEV_POWER_INSTANT.
	PowerUsageAverage PowerKind = "usage_average"
	// PowerNone: no power reading.
	PowerNone PowerKind = "none"
)

// Describe is the kind in words, for `deadlabourd probe`.
func (k PowerKind) Describe() string {
	switch k {
	case PowerInstant:
		return "instant (field FI_DEV_POWER_INSTANT)"
	case PowerUsageInstant:
		return "instant (GetPowerUsage on this chip)"
	case PowerUsageAverage:
		return "1 s average (GetPowerUsage; no instant field)"
	}
	return "none"
}

// usageIsInstant says whether nvmlDeviceGetPowerUsage reports the draw now
// on this chip rather than a one-second average.
func usageIsInstant(name string, arch nvml.DeviceArchitecture) bool {
	switch arch {
	case nvml.DEVICE_ARCH_KEPLER, nvml.DEVICE_ARCH_MAXWELL, nvml.DEVICE_ARCH_PASCAL,
		nvml.DEVICE_ARCH_VOLTA, nvml.DEVICE_ARCH_TURING:
		return true
	case nvml.DEVICE_ARCH_AMPERE:
		return strings.Contains(name, "A100") || strings.Contains(name, "A30")
	}
	return false
}

// detectPower finds the best power reading the device answers: the instant
// field, else GetPowerUsage.
func detectPower(h nvml.Device, name string, arch nvml.DeviceArchitecture) PowerKind {
	fv := []nvml.FieldValue{{FieldId: nvml.FI_DEV_POWER_INSTANT}}
	if ret := h.GetFieldValues(fv); ret == nvml.SUCCESS && nvml.Return(fv[0].NvmlReturn) == nvml.SUCCESS {
		if _, ok := fieldFloat(fv[0]); ok {
			return PowerInstant
		}
	}
	if _, ret := h.GetPowerUsage(); ret == nvml.SUCCESS {
		if usageIsInstant(name, arch) {
			return PowerUsageInstant
		}
		return PowerUsageAverage
	}
	return PowerNone
}

// readPower reads the device's power in watts the way detectPower chose;
// NaN when it cannot be read. The Return is the call's, for health.
func (r *reader) readPower() (float64, nvml.Return) {
	switch r.info.Power {
	case PowerInstant:
		r.fv[0] = nvml.FieldValue{FieldId: nvml.FI_DEV_POWER_INSTANT}
		ret := r.handle.GetFieldValues(r.fv[:])
		if ret != nvml.SUCCESS {
			return math.NaN(), ret
		}
		if ret := nvml.Return(r.fv[0].NvmlReturn); ret != nvml.SUCCESS {
			return math.NaN(), ret
		}
		mw, ok := fieldFloat(r.fv[0])
		if !ok {
			return math.NaN(), nvml.SUCCESS
		}
		return mw / 1000, nvml.SUCCESS
	case PowerUsageInstant, PowerUsageAverage:
		mw, ret := r.handle.GetPowerUsage()
		if ret != nvml.SUCCESS {
			return math.NaN(), ret
		}
		return float64(mw) / 1000, nvml.SUCCESS
	}
	return math.NaN(), nvml.SUCCESS
}

// fieldFloat decodes a field value by its type (native byte order: NVML
// writes a C union).
func fieldFloat(v nvml.FieldValue) (float64, bool) {
	b := v.Value[:]
	switch nvml.ValueType(v.ValueType) {
	case nvml.VALUE_TYPE_DOUBLE:
		return math.Float64frombits(binary.NativeEndian.Uint64(b)), true
	case nvml.VALUE_TYPE_UNSIGNED_INT:
		return float64(binary.NativeEndian.Uint32(b)), true
	case nvml.VALUE_TYPE_UNSIGNED_LONG, nvml.VALUE_TYPE_UNSIGNED_LONG_LONG:
		return float64(binary.NativeEndian.Uint64(b)), true
	case nvml.VALUE_TYPE_SIGNED_LONG_LONG:
		return float64(int64(binary.NativeEndian.Uint64(b))), true
	case nvml.VALUE_TYPE_SIGNED_INT:
		return float64(int32(binary.NativeEndian.Uint32(b))), true
	case nvml.VALUE_TYPE_UNSIGNED_SHORT:
		return float64(binary.NativeEndian.Uint16(b)), true
	}
	return 0, false
}

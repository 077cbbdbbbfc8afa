package daemon

import (
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/config"
)

// NVMLLibrary builds the nvml.Interface: the simulator when asked for
// (simulate, e.g. "h100:8", its power model from cfg's hardware entry and
// load), else the real library at libPath, or the loader's when empty.
func NVMLLibrary(simulate, libPath string, cfg config.Config, load gpu.LoadFunc) (nvml.Interface, error) {
	if simulate == "" {
		if libPath != "" {
			return nvml.New(nvml.WithLibraryPath(libPath)), nil
		}
		return nvml.New(), nil
	}
	spec, err := gpu.ParseSimSpec(simulate)
	if err != nil {
		return nil, err
	}
	// The NVML names of go-nvml's mock servers, which the simulator uses.
	names := map[string]string{"a100": "NVIDIA A100-SXM4-80GB", "h100": "NVIDIA H100 80GB HBM3",
		"h200": "NVIDIA H200 141GB HBM3e", "b200": "NVIDIA B200 180GB HBM3e"}
	hw, ok := cfg.HardwareFor(names[spec.Kind], 0)
	if !ok {
		return nil, fmt.Errorf("no hardware entry for %s", spec.Kind)
	}
	return gpu.Simulate(spec, gpu.PowerModel{IdleW: hw.IdleWatts, TDPW: hw.TDPWatts}, load, nowFunc)
}

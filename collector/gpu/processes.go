package gpu

import (
	"fmt"
	"slices"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// ProcessDevices returns the device ids that run a compute process of one
// of pids, by NVML's list of compute processes of each GPU: "2" for GPU 2,
// "0/1" for GPU instance 1 of GPU 0 in MIG mode. Ids come in device order.
// Unhealthy GPUs are not asked (their last answer is not known: they are
// left out). NVML reports host PIDs: pass PIDs as the host sees them.
func (c *Collector) ProcessDevices(pids []int) ([]string, error) {
	want := make(map[uint32]bool, len(pids))
	for _, p := range pids {
		if p > 0 {
			want[uint32(p)] = true
		}
	}
	var out []string
	var errs []error
	for _, d := range c.devices {
		c.mu.Lock()
		h, info := d.handle, d.info
		healthy := d.health.Healthy && h != nil
		c.mu.Unlock()
		if !healthy || len(want) == 0 {
			continue
		}
		procs, ret := h.GetComputeRunningProcesses()
		if ret != nvml.SUCCESS {
			errs = append(errs, fmt.Errorf("GPU %d: GetComputeRunningProcesses: %w", d.info.Index, ret))
			continue
		}
		out = appendMatches(out, info, d.metered, procs, want)
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("NVML process lists: %w", errs[0])
	}
	return out, nil
}

// appendMatches adds the id of d (or of its instances) that run one of
// want, each as metered: an instance not among the ids metered since start
// is charged under its board's id.
func appendMatches(out []string, d DeviceInfo, metered []string, procs []nvml.ProcessInfo, want map[uint32]bool) []string {
	if !d.MIG {
		for _, p := range procs {
			if want[p.Pid] {
				return append(out, d.ID)
			}
		}
		return out
	}
	for _, in := range d.Instances {
		for _, p := range procs {
			if want[p.Pid] && int(p.GpuInstanceId) == in.GPUInstance {
				id := in.ID
				if !slices.Contains(metered, id) {
					id = d.ID
				}
				if !slices.Contains(out, id) {
					out = append(out, id)
				}
				break
			}
		}
	}
	return out
}

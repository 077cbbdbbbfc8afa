package daemon

import (
	"context"
	"log/slog"
	"strconv"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/collector/host"
	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/estimator"
)

// upstreamDevices maps an upstream's gpus entries (indices, GPU UUIDs or
// MIG UUIDs) to device ids; entries naming no GPU present are dropped with
// a warning. A GPU in MIG mode named as a whole stands for all its
// instances: requests are then charged from each instance's share, which
// is right only if the upstream really uses them all, so it says so.
func (d *Daemon) upstreamDevices(u config.Upstream) []string {
	if d.fwd != nil {
		return nil // devicesFunc: forwardDevices
	}
	var out []string
	for _, g := range u.GPUs {
		ids, wholeMIG := d.gpuDevices(g)
		switch {
		case len(ids) == 0:
			d.log.Warn("upstream names a GPU that is not present; it is ignored", "upstream", u.Name, "gpu", g)
		case wholeMIG:
			d.log.Warn("upstream names a GPU in MIG mode: it is charged from all its instances; name the instances' MIG UUIDs (deadlabourd probe lists them) or use pid_file",
				"upstream", u.Name, "gpu", g)
		}
		out = append(out, ids...)
	}
	return out
}

// gpuDevices is the device ids one gpus entry (an index, a GPU UUID or a
// MIG UUID) names on this node: none if it names nothing here; every
// instance of a GPU in MIG mode named as a whole (wholeMIG).
func (d *Daemon) gpuDevices(g string) (ids []string, wholeMIG bool) {
	if d.gpu == nil {
		return nil, false
	}
	for _, dev := range d.gpu.Devices() {
		if g == dev.UUID || g == strconv.Itoa(dev.Index) {
			if !dev.MIG {
				return []string{dev.ID}, false
			}
			for _, in := range dev.Instances {
				ids = append(ids, in.ID)
			}
			return ids, true
		}
		for _, in := range dev.Instances {
			if g == in.UUID {
				return []string{in.ID}, false
			}
		}
	}
	return nil, false
}

// hostOptions configures the host meter; its CPU power model (used without
// RAPL) comes from the config, else the CPU catalogue for this CPU times
// its sockets, else defaults.
func hostOptions(ctx context.Context, cfg *config.Config, log *slog.Logger) host.Options {
	model, sockets, err := host.CPUs(ctx)
	if err != nil {
		log.Debug("CPU model unknown; the host power model uses the config or defaults", "err", err)
	}
	tdp, idle, source := cfg.CPUModel(model, sockets)
	log.Debug("host CPU power model", "cpu", model, "sockets", sockets, "tdp_watts", tdp, "idle_watts", idle, "source", source)
	return host.Options{SysfsRoot: cfg.Host.SysfsRoot, UseRAPL: cfg.Host.RAPL, CPUTDPWatts: tdp, CPUIdleWatts: idle}
}

// newResolver sets up the GPU resolver of the upstreams that name their
// processes (pid_file, process_name), and resolves them once, before the
// first request.
func (d *Daemon) newResolver() {
	r := &gpuResolver{gpu: d.gpu, procRoot: "/proc", every: d.cfg.GPU.ProcessRefresh.D(), log: d.log.With("component", "gpu-resolver")}
	for _, u := range d.cfg.Upstreams {
		if u.PIDFile == "" && u.ProcessName == "" {
			continue
		}
		if d.gpu == nil {
			d.log.Warn("upstream names its processes, but there are no GPUs to find them on", "upstream", u.Name)
			continue
		}
		r.add(u.Name, u.PIDFile, u.ProcessName, d.upstreamDevices(u))
	}
	if len(r.ups) == 0 {
		return
	}
	r.Refresh()
	d.resolver = r
}

// devicesFunc is the proxy's DevicesFunc of an upstream: nil unless the
// resolver maps it.
func (d *Daemon) devicesFunc(upstream string) func() []string {
	if d.fwd != nil {
		return d.forwardDevicesOf(upstream)
	}
	if d.resolver == nil {
		return nil
	}
	for _, u := range d.resolver.ups {
		if u.name == upstream {
			return u.Devices
		}
	}
	return nil
}

// startResolver runs the resolver until the returned stop is called; stop
// waits for it.
func (d *Daemon) startResolver(ctx context.Context) (stop func()) {
	if d.resolver == nil {
		return func() {}
	}
	return startOwned(ctx, d.resolver.Run)
}

func (d *Daemon) gpuCount() int {
	if d.gpu == nil {
		return 0
	}
	return len(d.gpu.Devices())
}

// gpuHealth is every GPU's health (healthy, or why not and since when).
func (d *Daemon) gpuHealth() []gpu.DeviceHealth {
	if d.gpu == nil {
		return []gpu.DeviceHealth{}
	}
	return d.gpu.Health()
}

// meters maps the device id of every meter found at start to how it
// measures: a GPU's energy counter or its power integral (a board in MIG
// mode is metered through its instances, each as the board is), and the
// host's method ("" without a host meter).
func meters(gpus []gpu.DeviceInfo, host estimator.Method) map[string]estimator.Method {
	out := map[string]estimator.Method{}
	for _, g := range gpus {
		m := estimator.MethodPowerIntegral
		if g.EnergyCounter {
			m = estimator.MethodCounter
		}
		if !g.MIG {
			out[g.ID] = m
		}
		for _, in := range g.Instances {
			out[in.ID] = m
		}
	}
	if host != "" {
		out[estimator.HostDevice] = host
	}
	return out
}

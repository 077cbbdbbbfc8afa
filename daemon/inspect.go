package daemon

import (
	"net"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/observe"
)

// What a running daemon is made of, for tests and tools that drive it in
// process.

// AdminAddr is the admin listener's address; "" without one.
func (d *Daemon) AdminAddr() string {
	if d.admin == nil {
		return ""
	}
	return d.admin.Addr().String()
}

// ProxyListener is the listener of upstream name's proxy; nil if there is
// no such upstream.
func (d *Daemon) ProxyListener(name string) net.Listener {
	for _, p := range d.proxies {
		if p.name == name {
			return p.ln
		}
	}
	return nil
}

// Simulation is the simulated GPUs of --simulate; nil otherwise.
func (d *Daemon) Simulation() *gpu.Simulation { return d.sim }

// GPUs are the GPUs found at start.
func (d *Daemon) GPUs() []gpu.DeviceInfo {
	if d.gpu == nil {
		return nil
	}
	return d.gpu.Devices()
}

// RefreshResolver finds the GPUs of the upstreams that name their
// processes now, instead of at the next refresh.
func (d *Daemon) RefreshResolver() {
	if d.resolver != nil {
		d.resolver.Refresh()
	}
}

// Observer is the daemon's metrics and health.
func (d *Daemon) Observer() *observe.Observer { return d.obs }

// Package host meters the host: CPU package and DRAM energy from RAPL
// (powercap sysfs, through prometheus/procfs), or where RAPL is absent or
// unreadable, a CPU power model driven by utilisation from gopsutil.
package host

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/procfs/sysfs"
	"github.com/shirou/gopsutil/v4/cpu"

	"github.com/deadlabour/deadlabour/estimator"
)

// Options configure the host meter.
type Options struct {
	SysfsRoot    string  // usually /sys
	UseRAPL      bool    // false: always the model
	CPUTDPWatts  float64 // the model's full-load power of all sockets
	CPUIdleWatts float64 // the model's idle power
	// CPUTimes reads cumulative CPU busy and total seconds; nil uses gopsutil.
	CPUTimes func(ctx context.Context) (busy, total float64, err error)
}

// Collector closes one host interval per poll.
type Collector struct {
	opts  Options
	log   *slog.Logger
	zones []zone
	// Why RAPL is not used, empty when it is.
	fallback string

	primed    bool
	lastT     time.Time
	lastBusy  float64
	lastTotal float64
}

type zone struct {
	z    sysfs.RaplZone
	last uint64
}

// Open finds the RAPL package and DRAM zones; without them it says once why
// and uses the model.
func Open(ctx context.Context, opts Options, log *slog.Logger) *Collector {
	c := &Collector{opts: opts, log: log}
	if opts.CPUTimes == nil {
		c.opts.CPUTimes = gopsutilTimes
	}
	if !opts.UseRAPL {
		c.fallback = "RAPL disabled in the config (host.rapl: false)"
	} else if err := c.openRAPL(); err != nil {
		c.fallback = err.Error()
	}
	if c.fallback != "" {
		log.Info("host energy is modelled, not measured", "reason", c.fallback,
			"model", fmt.Sprintf("%.0f W idle + (%.0f W - %.0f W) x CPU utilisation", opts.CPUIdleWatts, opts.CPUTDPWatts, opts.CPUIdleWatts))
	} else {
		names := make([]string, len(c.zones))
		for i, z := range c.zones {
			names[i] = fmt.Sprintf("%s-%d", z.z.Name, z.z.Index)
		}
		log.Info("host energy from RAPL", "zones", strings.Join(names, ","))
	}
	return c
}

func (c *Collector) openRAPL() error {
	fsys, err := sysfs.NewFS(c.opts.SysfsRoot)
	if err != nil {
		return fmt.Errorf("no sysfs at %s: %w", c.opts.SysfsRoot, err)
	}
	zones, err := sysfs.GetRaplZones(fsys)
	if err != nil {
		return fmt.Errorf("no RAPL powercap zones under %s/class/powercap (a VM, or a CPU without the driver)", c.opts.SysfsRoot)
	}
	for _, z := range zones {
		// Package zones contain core and uncore; psys overlaps everything.
		// DRAM is separate. Counting only these counts each joule once.
		if z.Name != "package" && z.Name != "dram" {
			continue
		}
		v, err := z.GetEnergyMicrojoules()
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("RAPL %s is readable by root only (energy_uj is 0400 since Linux 5.10); run as root or grant read access, see docs/operations.md", z.Path)
		}
		if err != nil {
			return fmt.Errorf("RAPL %s: %w", z.Path, err)
		}
		c.zones = append(c.zones, zone{z: z, last: v})
	}
	if len(c.zones) == 0 {
		return fmt.Errorf("no RAPL package or dram zone under %s/class/powercap", c.opts.SysfsRoot)
	}
	return nil
}

// Method says how host energy is obtained.
func (c *Collector) Method() estimator.Method {
	if c.fallback != "" {
		return estimator.MethodModelled
	}
	return estimator.MethodCounter
}

// Fallback says why the model is used, or "" when RAPL is.
func (c *Collector) Fallback() string { return c.fallback }

// Poll closes the host interval since the previous poll. The first poll
// primes the counters.
func (c *Collector) Poll(ctx context.Context, now time.Time) (estimator.Interval, bool, error) {
	iv := estimator.Interval{Device: estimator.HostDevice, Start: c.lastT, End: now, Method: c.Method()}
	primed := c.primed && now.After(c.lastT)
	if c.fallback == "" {
		for i := range c.zones {
			z := &c.zones[i]
			v, err := z.z.GetEnergyMicrojoules()
			if err != nil {
				return estimator.Interval{}, false, fmt.Errorf("RAPL %s: %w", z.z.Path, err)
			}
			iv.Joules += float64(Delta(z.last, v, z.z.MaxMicrojoules)) / 1e6
			z.last = v
		}
	} else {
		busy, total, err := c.opts.CPUTimes(ctx)
		if err != nil {
			return estimator.Interval{}, false, fmt.Errorf("CPU times: %w", err)
		}
		util := 0.0
		if dt := total - c.lastTotal; c.primed && dt > 0 {
			util = min(max((busy-c.lastBusy)/dt, 0), 1)
		}
		c.lastBusy, c.lastTotal = busy, total
		iv.Joules = (c.opts.CPUIdleWatts + (c.opts.CPUTDPWatts-c.opts.CPUIdleWatts)*util) * now.Sub(c.lastT).Seconds()
	}
	c.primed, c.lastT = true, now
	return iv, primed, nil
}

// Delta is the increase of a counter that wraps at max (RAPL's
// max_energy_range_uj): a reading below the previous one has wrapped once.
func Delta(prev, cur, max uint64) uint64 {
	if cur >= prev {
		return cur - prev
	}
	return max - prev + cur
}

func gopsutilTimes(ctx context.Context) (busy, total float64, err error) {
	ts, err := cpu.TimesWithContext(ctx, false)
	if err != nil || len(ts) == 0 {
		return 0, 0, fmt.Errorf("cpu.Times: %w", err)
	}
	t := ts[0]
	idle := t.Idle + t.Iowait
	total = t.User + t.System + t.Idle + t.Nice + t.Iowait + t.Irq + t.Softirq + t.Steal
	return total - idle, total, nil
}

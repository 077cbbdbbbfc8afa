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
	"os"
	"path/filepath"
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
	CPUIdleWatts float64 // the model's idle power of all sockets
	// CPUTimes reads cumulative CPU busy and total seconds; nil uses gopsutil.
	CPUTimes func(ctx context.Context) (busy, total float64, err error)
	// ReadEnergy reads a RAPL zone's energy_uj; nil uses procfs
	// (sysfs.RaplZone.GetEnergyMicrojoules). Tests pass a reader that denies
	// a zone, since root (which runs the tests) reads a file whatever its mode.
	ReadEnergy func(sysfs.RaplZone) (uint64, error)
}

// Zone is one RAPL zone the meter reads.
type Zone struct {
	Name           string // package-0, dram-0, ...
	Path           string
	MaxMicrojoules uint64 // the counter wraps here
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
	timesAt   time.Time // when CPU times were last read
	util      float64   // CPU utilisation over the last CPU-times period
	// RAPL that failed at run time: intervals are held at the last measured
	// power until it reads again, and counting restarts from that read.
	raplFailing bool
	lastW       float64 // mean power of the last RAPL interval
	resetSeen   bool    // a counter reset was logged
}

type zone struct {
	z    sysfs.RaplZone
	last uint64
}

// Open finds the RAPL package and DRAM zones; without them it says once,
// in one line, why, and uses the model.
func Open(ctx context.Context, opts Options, log *slog.Logger) *Collector {
	c := &Collector{opts: opts, log: log, lastW: -1}
	if opts.CPUTimes == nil {
		c.opts.CPUTimes = gopsutilTimes
	}
	if opts.ReadEnergy == nil {
		c.opts.ReadEnergy = sysfs.RaplZone.GetEnergyMicrojoules
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
		for i, z := range c.Zones() {
			names[i] = z.Name
		}
		log.Info("host energy from RAPL", "zones", strings.Join(names, ","))
	}
	return c
}

// openRAPL keeps the package and DRAM zones. Package zones contain core and
// uncore, psys overlaps everything, and the MMIO interface
// (intel-rapl-mmio) repeats a package the MSR interface already shows:
// counting only package and DRAM zones, each once, counts each joule once.
func (c *Collector) openRAPL() error {
	fsys, err := sysfs.NewFS(c.opts.SysfsRoot)
	if err != nil {
		return fmt.Errorf("no sysfs at %s: %w", c.opts.SysfsRoot, err)
	}
	zones, err := sysfs.GetRaplZones(fsys)
	powercap := filepath.Join(c.opts.SysfsRoot, "class/powercap")
	const guess = "(a VM, an ARM host, or a CPU without the driver)"
	switch {
	case err != nil:
		if _, serr := os.Stat(powercap); errors.Is(serr, fs.ErrNotExist) {
			return fmt.Errorf("no RAPL powercap zones under %s %s: %w", powercap, guess, err)
		}
		return fmt.Errorf("RAPL powercap zones under %s cannot be read: %w", powercap, err)
	case len(zones) == 0:
		return fmt.Errorf("no RAPL powercap zones under %s %s", powercap, guess)
	}
	seen := map[string]bool{}
	for _, z := range zones {
		if z.Name != "package" && z.Name != "dram" || strings.HasPrefix(filepath.Base(z.Path), "intel-rapl-mmio") {
			continue
		}
		key := fmt.Sprintf("%s-%d", z.Name, z.Index)
		if seen[key] {
			continue
		}
		seen[key] = true
		v, err := c.opts.ReadEnergy(z)
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("RAPL %s/energy_uj is readable by root only (mode 0400 since Linux 5.10); run as root or grant read access, see docs/operations.md", z.Path)
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

// Zones lists the RAPL zones read; none when the model is used.
func (c *Collector) Zones() []Zone {
	if c.fallback != "" {
		return nil
	}
	out := make([]Zone, len(c.zones))
	for i, z := range c.zones {
		out[i] = Zone{Name: fmt.Sprintf("%s-%d", z.z.Name, z.z.Index), Path: z.z.Path, MaxMicrojoules: z.z.MaxMicrojoules}
	}
	return out
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
// primes the counters. The error is a failure of the CPU times the model
// needs; a RAPL read that fails gives a modelled interval instead (logged
// once), so that the host meter never holds up records.
func (c *Collector) Poll(ctx context.Context, now time.Time) (estimator.Interval, bool, error) {
	iv := estimator.Interval{Device: estimator.HostDevice, Start: c.lastT, End: now, Method: c.Method()}
	primed := c.primed && now.After(c.lastT)
	dt := now.Sub(c.lastT).Seconds()
	if c.fallback == "" {
		j, err := c.readRAPL()
		switch {
		case err != nil:
			if !c.raplFailing {
				c.log.Warn("RAPL read failed: host energy is held at the last measured power until it reads again", "err", err)
			}
			c.raplFailing = true
			iv.Joules, iv.Method = c.heldWatts()*dt, estimator.MethodModelled
		case c.raplFailing:
			// Counting restarts from this read: its delta spans the failure.
			c.log.Info("RAPL reads again")
			c.raplFailing = false
			iv.Joules, iv.Method = c.heldWatts()*dt, estimator.MethodModelled
		case primed && j > c.resetWatts()*dt:
			// A counter that restarted (module reload, CPU hot-plug) reads
			// below its last value like a wrap, and the "wrap" is up to
			// max_energy_range_uj: hold the last power, count on from here.
			if !c.resetSeen {
				c.log.Warn("RAPL counter reset: that interval is held at the last measured power",
					"implied_watts", j/dt, "limit_watts", c.resetWatts())
			} else {
				c.log.Debug("RAPL counter reset", "implied_watts", j/dt)
			}
			c.resetSeen = true
			iv.Joules, iv.Method = c.heldWatts()*dt, estimator.MethodModelled
		default:
			iv.Joules = j
			if primed {
				c.lastW = j / dt
			}
		}
	} else {
		if err := c.readUtil(ctx, now); err != nil {
			return estimator.Interval{}, false, err
		}
		iv.Joules = (c.opts.CPUIdleWatts + (c.opts.CPUTDPWatts-c.opts.CPUIdleWatts)*c.util) * dt
	}
	c.primed, c.lastT = true, now
	return iv, primed, nil
}

// cpuTimesEvery is how often the model reads CPU times (/proc/stat): a
// read costs an open, a read and a parse, which at every 100 ms poll was a
// third of the idle daemon's CPU; the polls in between use the latest
// utilisation.
const cpuTimesEvery = time.Second

// readUtil updates the CPU utilisation from the CPU times, at most every
// cpuTimesEvery.
func (c *Collector) readUtil(ctx context.Context, now time.Time) error {
	if c.primed && now.Sub(c.timesAt) < cpuTimesEvery {
		return nil
	}
	busy, total, err := c.opts.CPUTimes(ctx)
	if err != nil {
		return fmt.Errorf("CPU times: %w", err)
	}
	if d := total - c.lastTotal; c.primed && d > 0 {
		c.util = min(max((busy-c.lastBusy)/d, 0), 1)
	}
	c.lastBusy, c.lastTotal, c.timesAt = busy, total, now
	return nil
}

// readRAPL reads every zone and, only if all of them read, moves the
// counters on and returns the joules since the previous read.
func (c *Collector) readRAPL() (float64, error) {
	var vals [16]uint64
	cur := vals[:0]
	for _, z := range c.zones {
		v, err := c.opts.ReadEnergy(z.z)
		if err != nil {
			return 0, fmt.Errorf("RAPL %s: %w", z.z.Path, err)
		}
		cur = append(cur, v)
	}
	var j float64
	for i := range c.zones {
		z := &c.zones[i]
		if !c.raplFailing {
			j += float64(Delta(z.last, cur[i], z.z.MaxMicrojoules)) / 1e6
		}
		z.last = cur[i]
	}
	return j, nil
}

// A counter reset "wraps" by up to max_energy_range_uj (262 kJ) in one
// poll: megawatts at 100 ms. Deltas are believed up to twice the CPU TDP,
// at least resetFloorWatts (a TDP configured too low must not discard real
// readings), or up to absurdWatts when the TDP is not known.
const (
	resetFloorWatts = 1000
	absurdWatts     = 10000
)

// resetWatts is the mean power above which a RAPL delta is taken for a
// counter reset rather than energy.
func (c *Collector) resetWatts() float64 {
	if c.opts.CPUTDPWatts <= 0 {
		return absurdWatts
	}
	return max(2*c.opts.CPUTDPWatts, resetFloorWatts)
}

// heldWatts is the power a failed RAPL interval is given: the last
// measured mean, or the model's idle power before any.
func (c *Collector) heldWatts() float64 {
	if c.lastW >= 0 {
		return c.lastW
	}
	return c.opts.CPUIdleWatts
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
	return sumTimes(cpu.TimesWithContext(ctx, false))
}

// sumTimes is the busy and total seconds of gopsutil's CPU times; no
// times without an error is an error of its own, not "%!w(<nil>)".
func sumTimes(ts []cpu.TimesStat, err error) (busy, total float64, _ error) {
	if err != nil {
		return 0, 0, fmt.Errorf("cpu.Times: %w", err)
	}
	if len(ts) == 0 {
		return 0, 0, errors.New("cpu.Times: no CPU times reported")
	}
	t := ts[0]
	idle := t.Idle + t.Iowait
	total = t.User + t.System + t.Idle + t.Nice + t.Iowait + t.Irq + t.Softirq + t.Steal
	return total - idle, total, nil
}

// CPUs describes the host's processors for the power model: the model name
// of the first and the number of sockets.
func CPUs(ctx context.Context) (model string, sockets int, err error) {
	infos, err := cpu.InfoWithContext(ctx)
	if err != nil {
		return "", 0, fmt.Errorf("cpu.Info: %w", err)
	}
	if len(infos) == 0 {
		return "", 0, errors.New("cpu.Info: no processors reported")
	}
	ids := map[string]bool{}
	for _, in := range infos {
		ids[in.PhysicalID] = true
	}
	return infos[0].ModelName, len(ids), nil
}

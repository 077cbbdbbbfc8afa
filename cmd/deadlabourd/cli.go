package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/collector/host"
	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/internal/redact"
)

func cmdCheckConfig(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check-config", stderr)
	gpus := fs.Int("gpus", -1, "number of GPUs to check indices against (default: ask NVML; unchecked without a driver)")
	simulate := fs.String("simulate", "", "check against a simulated node, e.g. h100:8")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: deadlabourd check-config [--gpus N | --simulate KIND:N] FILE")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: want exactly one FILE, got %d arguments", errUsage, fs.NArg())
	}
	path := fs.Arg(0)
	count, source := *gpus, "--gpus"
	if *simulate != "" {
		spec, err := gpu.ParseSimSpec(*simulate)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		count, source = spec.Count, "--simulate"
	}
	if count < 0 {
		// The library the daemon would load: gpu.library_path, if the
		// file says (its problems are reported below either way).
		lib := ""
		if cfg, err := config.Load(path, -1); err == nil {
			lib = cfg.GPU.LibraryPath
		}
		count, source = nvmlDeviceCount(lib)
	}
	cfg, err := config.Load(path, count)
	var ce *config.Error
	if errors.As(err, &ce) {
		for _, p := range ce.Problems {
			fmt.Fprintln(stdout, p)
		}
		return fmt.Errorf("%s: %d problem(s)", path, len(ce.Problems))
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, summary(path, cfg, count, source))
	return nil
}

// nvmlDeviceCount asks the real NVML (the library at libPath, or the
// loader's when empty) how many GPUs there are; -1 without a driver, and
// the source says why.
func nvmlDeviceCount(libPath string) (int, string) {
	lib, err := nvmlLibrary("", libPath, config.Config{}, nil)
	if err != nil {
		return -1, "no NVML: " + err.Error()
	}
	where := ""
	if libPath != "" {
		where = " at " + libPath
	}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return -1, fmt.Sprintf("no NVML%s: %v", where, ret)
	}
	defer lib.Shutdown()
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return -1, fmt.Sprintf("no NVML%s: %v", where, ret)
	}
	return n, "NVML" + where
}

func summary(path string, cfg *config.Config, gpus int, source string) string {
	ups := make([]string, len(cfg.Upstreams))
	for i, u := range cfg.Upstreams {
		g := "no GPUs"
		if len(u.GPUs) > 0 {
			g = "GPUs " + strings.Join(u.GPUs, ",")
		}
		ups[i] = fmt.Sprintf("%s %s->%s (%s)", u.Name, u.Listen, u.Target, g)
	}
	check := fmt.Sprintf("GPU indices checked against %d GPUs (%s)", gpus, source)
	if gpus < 0 {
		check = fmt.Sprintf("GPU indices not checked (%s; use --gpus N)", source)
	}
	influx := "InfluxDB " + redact.URL(cfg.Influx.URL)
	if cfg.Influx.URL == "" {
		influx = "no InfluxDB (spool only)"
	}
	models := fmt.Sprintf("%d model(s)", len(cfg.Models))
	if len(cfg.Models) == 0 {
		models = "no models (every record is tagged model=other)"
	}
	return fmt.Sprintf("%s: ok: node %s, %d upstream(s) [%s], %s, %s weighting, %s, %s",
		path, cfg.Node, len(cfg.Upstreams), strings.Join(ups, "; "), models, cfg.Attribution.Weighting, influx, check)
}

func cmdProbe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("probe", stderr)
	simulate := fs.String("simulate", "", "probe a simulated node, e.g. h100:8 or a100:2:mig=3g")
	sysfs := fs.String("sysfs", "/sys", "root of sysfs, for RAPL")
	libPath := fs.String("nvml-library", "", "path of libnvidia-ml.so.1 (default: the loader's search)")
	measure := fs.Duration("measure", 0, "then read every GPU for this long and compare its energy counter with the integral of its power samples, e.g. 60s")
	interval := fs.Duration("interval", 100*time.Millisecond, "poll interval of --measure")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if *measure < 0 || *interval <= 0 {
		return fmt.Errorf("%w: --measure and --interval must be positive", errUsage)
	}
	log := slog.New(slog.DiscardHandler)
	lib, err := nvmlLibrary(*simulate, *libPath, config.Default(), nil)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	c, err := gpu.Open(lib, log, nowFunc())
	if err != nil {
		fmt.Fprintf(stdout, "GPUs: none: %v\n", err)
	} else {
		defer c.Close()
		printGPUs(stdout, c)
	}
	h := host.Open(ctx, host.Options{SysfsRoot: *sysfs, UseRAPL: true}, log)
	if h.Fallback() != "" {
		fmt.Fprintf(stdout, "Host energy: modelled (%s)\n", h.Fallback())
	} else {
		var zones []string
		for _, z := range h.Zones() {
			zones = append(zones, fmt.Sprintf("%s (%s)", z.Name, z.Path))
		}
		fmt.Fprintf(stdout, "Host energy: RAPL counters: %s\n", strings.Join(zones, ", "))
	}
	if *measure > 0 && c != nil {
		return measureGPUs(ctx, c, *measure, *interval, stdout)
	}
	return nil
}

// printGPUs is probe's table: per GPU what it is and what it supports, and
// under a GPU in MIG mode one line per instance.
func printGPUs(w io.Writer, c *gpu.Collector) {
	fmt.Fprintf(w, "GPUs: %d, driver %s\n", len(c.Devices()), c.Driver())
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tNAME\tUUID\tDRIVER\tENERGY COUNTER\tPOWER READING\tMIG\tMEMORY\tHEALTH")
	health := c.Health()
	for i, d := range c.Devices() {
		mig := "off"
		if d.MIG {
			mig = fmt.Sprintf("on: %d instance(s) of %d slices, split by %s", len(d.Instances), d.Slices, d.Activity)
		}
		state := "ok"
		if !health[i].Healthy {
			state = "unhealthy: " + health[i].Reason
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Index, d.Name, d.UUID, c.Driver(), yesNo(d.EnergyCounter),
			d.Power.Describe(), mig, gib(d.MemoryBytes), state)
		for _, in := range d.Instances {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t\t\t\t%s, %d SMs\t%s\t\n", in.ID, in.Name, in.UUID, in.Profile, in.SMs, gib(in.MemoryBytes))
		}
	}
	tw.Flush()
}

func gib(b uint64) string { return fmt.Sprintf("%.0f GiB", float64(b)/(1<<30)) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// nvmlLibrary builds the nvml.Interface: the simulator when asked for, else
// the real library.
func nvmlLibrary(simulate, libPath string, cfg config.Config, load gpu.LoadFunc) (nvml.Interface, error) {
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
	names := map[string]string{"a100": "A100", "h100": "H100", "h200": "H200", "b200": "B200"}
	hw, ok := cfg.HardwareFor(names[spec.Kind])
	if !ok {
		return nil, fmt.Errorf("no hardware entry for %s", spec.Kind)
	}
	return gpu.Simulate(spec, gpu.PowerModel{IdleW: hw.IdleWatts, TDPW: hw.TDPWatts}, load, nowFunc)
}

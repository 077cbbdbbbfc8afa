package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/collector/host"
	"github.com/deadlabour/deadlabour/config"
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
		count, source = nvmlDeviceCount()
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

// nvmlDeviceCount asks the real NVML how many GPUs there are; -1 without a driver.
func nvmlDeviceCount() (int, string) {
	lib := nvml.New()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return -1, "no NVML"
	}
	defer lib.Shutdown()
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return -1, "no NVML"
	}
	return n, "NVML"
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
		check = "GPU indices not checked (no NVML; use --gpus N)"
	}
	influx := "InfluxDB " + cfg.Influx.URL
	if cfg.Influx.URL == "" {
		influx = "no InfluxDB (spool only)"
	}
	return fmt.Sprintf("%s: ok: node %s, %d upstream(s) [%s], %d model(s), %s weighting, %s, %s",
		path, cfg.Node, len(cfg.Upstreams), strings.Join(ups, "; "), len(cfg.Models), cfg.Attribution.Weighting, influx, check)
}

func cmdProbe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("probe", stderr)
	simulate := fs.String("simulate", "", "probe a simulated node, e.g. h100:8")
	sysfs := fs.String("sysfs", "/sys", "root of sysfs, for RAPL")
	libPath := fs.String("nvml-library", "", "path of libnvidia-ml.so.1 (default: the loader's search)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	lib, err := nvmlLibrary(*simulate, *libPath, config.Default(), nil)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	c, err := gpu.Open(lib, log, nowFunc())
	if err != nil {
		fmt.Fprintf(stdout, "GPUs: none: %v\n", err)
	} else {
		defer c.Close()
		fmt.Fprintf(stdout, "GPUs: %d, driver %s\n", len(c.Devices()), c.Driver())
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "INDEX\tNAME\tUUID\tENERGY COUNTER\tMEMORY")
		for _, d := range c.Devices() {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%.0f GiB\n", d.Index, d.Name, d.UUID, yesNo(d.EnergyCounter), float64(d.MemoryBytes)/(1<<30))
		}
		tw.Flush()
	}
	h := host.Open(ctx, host.Options{SysfsRoot: *sysfs, UseRAPL: true}, log)
	if h.Fallback() != "" {
		fmt.Fprintf(stdout, "Host energy: modelled (%s)\n", h.Fallback())
	} else {
		fmt.Fprintf(stdout, "Host energy: RAPL counters\n")
	}
	return nil
}

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

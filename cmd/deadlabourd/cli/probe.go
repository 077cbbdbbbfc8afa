package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/collector/host"
	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/daemon"
	"github.com/deadlabour/deadlabour/probe"
)

func cmdProbe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("probe", "[--simulate h100:8] [--measure 60s]", stderr)
	simulate := fs.String("simulate", "", "probe a simulated node, e.g. h100:8 or a100:2:mig=3g")
	sysfs := fs.String("sysfs", "/sys", "root of sysfs, for RAPL")
	libPath := fs.String("nvml-library", "", "path of libnvidia-ml.so.1 (default: the loader's search)")
	measure := fs.Duration("measure", 0, "then read every GPU for this long and compare its energy counter with the integral of its power samples, e.g. 60s")
	interval := fs.Duration("interval", 100*time.Millisecond, "poll interval of --measure")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *measure < 0 || *interval <= 0 {
		return fmt.Errorf("%w: --measure and --interval must be positive", errUsage)
	}
	log := slog.New(slog.DiscardHandler)
	lib, err := daemon.NVMLLibrary(*simulate, *libPath, config.Default(), nil)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	c, err := gpu.Open(lib, log, time.Now())
	if err != nil {
		fmt.Fprintf(stdout, "GPUs: none: %v\n", err)
	} else {
		defer c.Close()
		probe.PrintGPUs(stdout, c)
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
		return probe.Measure(ctx, c, *measure, *interval, stdout)
	}
	return nil
}

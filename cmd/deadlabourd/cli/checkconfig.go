package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/daemon"
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
	if err := parseOneArg(fs, args, "FILE"); err != nil {
		return err
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
	lib, err := daemon.NVMLLibrary("", libPath, config.Config{}, nil)
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

package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/daemon"
	"github.com/deadlabour/deadlabour/internal/discover"
	"github.com/deadlabour/deadlabour/internal/redact"
)

func cmdCheckConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check-config", "[--gpus N | --simulate KIND:N] [--online] FILE", stderr)
	gpus := fs.Int("gpus", -1, "number of GPUs to check indices against (default: ask NVML; unchecked without a driver)")
	simulate := fs.String("simulate", "", "check against a simulated node, e.g. h100:8")
	online := fs.Bool("online", false, "also ask each upstream (GET /v1/models, else /) and InfluxDB (/ping) whether they answer")
	timeout := fs.Duration("timeout", 5*time.Second, "with --online, how long to wait for each answer")
	path, err := parseOneArg(fs, args, "FILE")
	if err != nil {
		return err
	}
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
	cfg, err := loadConfig(path, count)
	if err == nil {
		// What run checks before it opens anything: files, the spool,
		// targets that resolve to the daemon itself.
		if problems := cfg.Preflight(ctx, nil); len(problems) > 0 {
			err = &config.Error{Problems: problems}
		}
	}
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
	// What run would warn about at start: defaults standing in for a
	// factor, keys no longer used, files others can read.
	for _, w := range slices.Concat(cfg.DefaultFactorWarnings(), cfg.DeprecationWarnings(path), cfg.PermissionWarnings()) {
		fmt.Fprintln(stdout, "warning:", w)
	}
	if *online {
		return checkOnline(ctx, cfg, *timeout, stdout)
	}
	return nil
}

// checkOnline asks every upstream and InfluxDB whether they answer, one
// line each, and fails naming those that did not.
func checkOnline(ctx context.Context, cfg *config.Config, timeout time.Duration, stdout io.Writer) error {
	var silent []string
	upstreams := discover.UpstreamClient(timeout)
	defer upstreams.CloseIdleConnections()
	for _, u := range cfg.Upstreams {
		what := fmt.Sprintf("upstream %s (%s)", u.Name, redact.URL(u.Target))
		answer, err := askUpstream(ctx, upstreams, u.Target)
		if err != nil {
			fmt.Fprintf(stdout, "online: %s: did not answer: %v\n", what, err)
			silent = append(silent, what)
			continue
		}
		fmt.Fprintf(stdout, "online: %s: %s\n", what, answer)
	}
	if cfg.Influx.URL == "" {
		fmt.Fprintln(stdout, "online: no InfluxDB to ask (influx.url is empty: records stay in the spool)")
	} else {
		what := "InfluxDB " + redact.URL(cfg.Influx.URL)
		client := &http.Client{Timeout: timeout, Transport: http.DefaultTransport.(*http.Transport).Clone()}
		defer client.CloseIdleConnections()
		answer, err := discover.Influx(ctx, client, cfg.Influx.URL)
		if err != nil {
			fmt.Fprintf(stdout, "online: %s: did not answer: %v\n", what, err)
			silent = append(silent, what)
		} else {
			fmt.Fprintf(stdout, "online: %s: answered %s\n", what, answer)
		}
	}
	if len(silent) > 0 {
		return fmt.Errorf("%d did not answer: %s", len(silent), strings.Join(silent, ", "))
	}
	return nil
}

// askUpstream says what an inference server answered: its models, or at
// least an HTTP status at "/".
func askUpstream(ctx context.Context, client *http.Client, target string) (string, error) {
	names, path, err := discover.Models(ctx, client, target)
	switch {
	case err == nil:
		return fmt.Sprintf("answered GET %s: %d model(s): %s", path, len(names), listNames(names, 8)), nil
	case !errors.Is(err, discover.ErrNoList):
		return "", err
	}
	status, rerr := discover.Reach(ctx, client, target)
	if rerr != nil {
		return "", rerr
	}
	return fmt.Sprintf("answered GET / %d, but %v: discover_models will tag nothing; list its models in models[]", status, err), nil
}

// listNames is names joined, the first max of them and a count of the rest.
func listNames(names []string, max int) string {
	if len(names) <= max {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:max], ", "), len(names)-max)
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
		if u.Discovers() {
			g += fmt.Sprintf(", models listed every %s", u.ModelsRefresh)
		}
		ups[i] = fmt.Sprintf("%s %s->%s (%s)", u.Name, u.Listen, redact.URL(u.Target), g)
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
		models = "no models configured (tagged as the upstreams list them, else model=other)"
		if !slices.ContainsFunc(cfg.Upstreams, config.Upstream.Discovers) {
			models = "no models (every record is tagged model=other)"
		}
	}
	return fmt.Sprintf("%s: ok: node %s, %d upstream(s) [%s], %s, %s weighting, %s, %s",
		path, cfg.Node, len(cfg.Upstreams), strings.Join(ups, "; "), models, cfg.Attribution.Weighting, influx, check)
}

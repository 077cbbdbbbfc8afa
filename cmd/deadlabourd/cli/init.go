package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/daemon"
	"github.com/deadlabour/deadlabour/internal/discover"
	"github.com/deadlabour/deadlabour/internal/redact"
)

// listFlag is a flag that may be given several times.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// initUpstream is one --upstream and what it answered.
type initUpstream struct {
	name, target, listen string
	gpus                 []int
	models               []string
	path                 string // where it listed them
	err                  error  // why it did not
}

// initNode is everything init learnt, from which it writes the config.
type initNode struct {
	upstreams []*initUpstream
	gpus      []gpu.DeviceInfo
	gpuSource string // "NVML, driver X", "--simulate h100:8", or why none
	influx    string
	admin     string
	spool     string
	cfg       config.Config // the defaults, for the hardware catalogue
}

// cmdInit writes a minimal config from what the upstreams and the GPUs
// say: each upstream's models (GET /v1/models, or Ollama's /api/tags), the
// GPUs and their names (NVML as `run` loads it, or --simulate).
func cmdInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("init", "--upstream [NAME=]URL [--upstream ...] [--influx URL] [--out FILE] [--simulate h100:8]", stderr)
	var ups listFlag
	fs.Var(&ups, "upstream", "an inference server's URL, e.g. http://127.0.0.1:8000, or NAME=URL; repeat for each (required)")
	influx := fs.String("influx", "", "InfluxDB URL, e.g. http://127.0.0.1:8086 (default: none, records stay in the spool)")
	out := fs.String("out", "-", "the config file to write; never overwritten ('-': standard output)")
	listen := fs.String("listen", "127.0.0.1:8081", "the first upstream's proxy listener; each next one takes the next port")
	admin := fs.String("admin", config.Default().Admin.Listen, "the admin listener (event API, /metrics, audit)")
	spool := fs.String("spool", config.Default().Spool.Dir, "the spool directory")
	simulate := fs.String("simulate", "", "take the GPUs from a simulated node, e.g. h100:8")
	libPath := fs.String("nvml-library", "", "path of libnvidia-ml.so.1 (default: the loader's search)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for each upstream's answer")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if len(ups) == 0 {
		return fmt.Errorf("%w: want at least one --upstream URL, the inference server clients use now", errUsage)
	}
	if *out != "-" {
		if _, err := os.Lstat(*out); err == nil {
			return fmt.Errorf("%s exists: init never overwrites a config; remove it, or write to another --out", *out)
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	host, port, err := net.SplitHostPort(*listen)
	if err != nil {
		return fmt.Errorf("%w: --listen %q: want host:port", errUsage, *listen)
	}
	first, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("%w: --listen %q: want a port number", errUsage, *listen)
	}

	node := &initNode{influx: *influx, admin: *admin, spool: *spool, cfg: config.Default()}
	node.gpus, node.gpuSource = initGPUs(*simulate, *libPath)
	client := discover.UpstreamClient(*timeout)
	defer client.CloseIdleConnections()
	names := map[string]bool{}
	for _, arg := range ups {
		u := &initUpstream{target: arg}
		if name, target, ok := strings.Cut(arg, "="); ok && !strings.Contains(name, "/") {
			u.name, u.target = name, target
		}
		if t, err := url.Parse(u.target); err != nil || (t.Scheme != "http" && t.Scheme != "https") || t.Host == "" {
			return fmt.Errorf("%w: --upstream %q: want an http:// or https:// URL", errUsage, redact.URL(arg))
		}
		u.models, u.path, u.err = discover.Models(ctx, client, u.target)
		if u.err != nil {
			fmt.Fprintf(stderr, "deadlabourd init: %s did not list its models (%v): written without them; discover_models asks again while running\n", redact.URL(u.target), u.err)
		}
		if u.name == "" {
			u.name = upstreamName(u)
		}
		for base, n := u.name, 2; names[u.name]; n++ {
			u.name = fmt.Sprintf("%s-%d", base, n)
		}
		names[u.name] = true
		node.upstreams = append(node.upstreams, u)
	}
	node.listeners(host, first)
	node.shareGPUs()

	text := node.config(*out)
	// What init writes, check-config accepts: checked here, as it would be.
	if _, err := config.Parse(*out, text, len(node.gpus)); err != nil {
		return fmt.Errorf("the config init made does not validate (a bug; please report it):\n%v", err)
	}
	if *out == "-" {
		_, err := stdout.Write(text)
		return err
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists: init never overwrites a config; remove it, or write to another --out", *out)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(text); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	models := 0
	for _, u := range node.upstreams {
		models += len(u.models)
	}
	fmt.Fprintf(stdout, "wrote %s: %d upstream(s), %d model(s), %d GPU(s) (%s)\ncheck it with: deadlabourd check-config --online %s\n",
		*out, len(node.upstreams), models, len(node.gpus), node.gpuSource, *out)
	return nil
}

// initGPUs lists the GPUs as `run` would find them: NVML (or the
// simulator), opened and closed again.
func initGPUs(simulate, libPath string) ([]gpu.DeviceInfo, string) {
	lib, err := daemon.NVMLLibrary(simulate, libPath, config.Default(), nil)
	if err != nil {
		return nil, "no NVML: " + err.Error()
	}
	c, err := gpu.Open(lib, slog.New(slog.DiscardHandler), time.Now())
	if err != nil {
		return nil, "no GPUs: " + err.Error()
	}
	defer c.Close()
	source := "NVML, driver " + c.Driver()
	if simulate != "" {
		source = "simulated " + simulate + ", driver " + c.Driver()
	}
	return c.Devices(), source
}

var notName = regexp.MustCompile(`[^a-z0-9_.-]+`)

// upstreamName names an upstream after the one model it lists, else after
// its port: letters, digits, '.', '_' and '-', as config wants.
func upstreamName(u *initUpstream) string {
	if len(u.models) == 1 {
		m := u.models[0]
		m = m[strings.LastIndexByte(m, '/')+1:]
		if n := strings.Trim(notName.ReplaceAllString(strings.ToLower(m), "-"), "-._"); n != "" {
			return n[:min(len(n), 48)]
		}
	}
	t, _ := url.Parse(u.target)
	port := t.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[t.Scheme]
	}
	return "upstream-" + port
}

// listeners gives the upstreams ports from first on, passing over the
// ports of the targets (a proxy must not listen where its server does);
// port 0 leaves the choice to the system.
func (n *initNode) listeners(host string, first int) {
	taken := map[int]bool{}
	for _, u := range n.upstreams {
		if t, err := url.Parse(u.target); err == nil {
			if p, err := strconv.Atoi(t.Port()); err == nil {
				taken[p] = true
			}
		}
	}
	port := first
	for _, u := range n.upstreams {
		for port != 0 && taken[port] {
			port++
		}
		u.listen = net.JoinHostPort(host, strconv.Itoa(port))
		if port != 0 {
			port++
		}
	}
}

// shareGPUs gives every GPU to the one upstream, or splits them in order
// among several: a guess the config says is one.
func (n *initNode) shareGPUs() {
	k := len(n.upstreams)
	for i, g := range n.gpus {
		u := n.upstreams[min(i*k/len(n.gpus), k-1)]
		u.gpus = append(u.gpus, g.Index)
	}
}

// config is the file: a few keys, each with a comment, and hints for the
// keys the node will want next.
func (n *initNode) config(out string) []byte {
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	host, _ := os.Hostname()
	w("# deadlabour configuration, written by `deadlabourd init` on %s from what", host)
	w("# the upstreams and the GPUs said. config/example.yaml documents every key and")
	if out == "-" {
		out = "FILE"
	}
	w("# its default; check this file with: deadlabourd check-config --online %s", out)
	w("")
	w("# The host tag of every point; default: the hostname (%s).", host)
	w("# node: %s", quote(cmpDefault(host, "gpu-node-01")))
	w("")
	w("# Where the electricity comes from, as an ISO 3166-1 code (DE, FR, US, ...):")
	w("# it picks the grid's carbon intensity and the water of its electricity.")
	w("# Without it the world averages apply and the daemon warns at start; or set")
	w("# carbon_g_per_kwh (and water_offsite_l_per_kwh) yourself.")
	w("# facility:")
	w("#   region: DE")
	w("")
	n.gpuComment(w)
	w("")
	w("# Clients connect to listen instead of the server's own URL (target); every")
	w("# request is forwarded unchanged and metered.")
	w("upstreams:")
	for _, u := range n.upstreams {
		switch {
		case u.err != nil:
			w("  # %s listed no models when init asked: %s", redact.URL(u.target), oneLine(u.err.Error()))
		default:
			w("  # %s lists %d model(s) at GET %s.", redact.URL(u.target), len(u.models), u.path)
		}
		w("  - name: %s", u.name)
		w("    listen: %s", quote(u.listen))
		w("    target: %s", quote(u.target))
		switch {
		case len(u.gpus) == 0:
			w("    # gpus: [0]   # the indices of the GPUs this server runs on (none found here)")
		case len(n.upstreams) == 1:
			w("    gpus: %s   # every GPU found; or those this server runs on (or set process_name)", intList(u.gpus))
		default:
			w("    gpus: %s   # a guess, the GPUs split in order: set those this server runs on (or set process_name)", intList(u.gpus))
		}
		w("    discover_models: true   # its listed models are tags too, asked again every models_refresh (10m)")
	}
	w("")
	var models []string
	seen := map[string]bool{}
	for _, u := range n.upstreams {
		for _, m := range u.models {
			if !seen[m] {
				seen[m] = true
				models = append(models, m)
			}
		}
	}
	if len(models) > 0 {
		w("# The models the upstreams listed: records are tagged with these (and any")
		w("# an upstream lists later), any other model `other`. Training figures per")
		w("# model (training_cost, lifetime_tokens, ...): config/example.yaml.")
		w("models:")
		for _, m := range models[:min(len(models), daemon.MaxDiscoveredModels)] {
			w("  - name: %s", quote(m))
		}
		if more := len(models) - daemon.MaxDiscoveredModels; more > 0 {
			w("  # ... and %d more listed, left out: each model is a series in InfluxDB; add those you report on", more)
		}
	} else {
		w("# models: no upstream listed any; list them as requests name them, e.g.")
		w("#   - name: meta-llama/Llama-3.1-8B-Instruct")
	}
	w("")
	if n.admin != config.Default().Admin.Listen {
		w("admin:")
		w("  listen: %s   # the event API, /metrics and `deadlabourd audit`", quote(n.admin))
		w("")
	}
	w("influx:")
	if n.influx == "" {
		w("  # No InfluxDB: records stay in the spool, and `deadlabourd report` reads them")
		w("  # there. Set the URL (v2 write API: 1.8+, 2.x, 3.x) to deliver them.")
		w("  url: \"\"")
	} else {
		w("  url: %s", quote(n.influx))
	}
	w("  bucket: %s   # 1.x: database/retention-policy; 2.x and 3.x: the bucket (and set org)", quote(n.cfg.Influx.Bucket))
	w("  token_env: %s   # 1.x: user:password", n.cfg.Influx.TokenEnv)
	w("  # Under the systemd unit (make install), the credential instead of token_env:")
	w("  # token_file: /run/credentials/deadlabourd.service/influx-token")
	w("")
	w("spool:")
	w("  dir: %s   # records wait here, on disk, until InfluxDB has them", quote(n.spool))
	return b.Bytes()
}

// gpuComment says which GPUs were found and what the hardware catalogue
// knows of each model: what their depreciation and embodied carbon come from.
func (n *initNode) gpuComment(w func(string, ...any)) {
	if len(n.gpus) == 0 {
		w("# GPUs: none found (%s): the daemon meters host energy only.", oneLine(n.gpuSource))
		return
	}
	w("# GPUs (%s):", n.gpuSource)
	byName, memory := map[string][]int{}, map[string]uint64{}
	var names []string
	for _, g := range n.gpus {
		if byName[g.Name] == nil {
			names = append(names, g.Name)
			memory[g.Name] = g.MemoryBytes
		}
		byName[g.Name] = append(byName[g.Name], g.Index)
	}
	var unknown []string
	for _, name := range names {
		hw, ok := n.cfg.HardwareFor(name, memory[name])
		if !ok {
			w("#   %s %s: not in the hardware catalogue: no depreciation or embodied carbon until hardware names it", intList(byName[name]), name)
			unknown = append(unknown, name)
			continue
		}
		w("#   %s %s: the catalogue's %q: capex %v + server %v %s over %s, %v + %v kgCO2e per GPU",
			intList(byName[name]), name, hw.Match, hw.Capex, hw.ServerShare, n.cfg.Facility.Currency, config.Duration(hw.Life), hw.EmbodiedKgCO2e, hw.ServerEmbodiedKgCO2e)
	}
	w("# What you paid differs? Override it under hardware (config/example.yaml).")
	if len(unknown) > 0 {
		w("# hardware:")
		for _, name := range unknown {
			w("#   - match: %s", quote(name))
			w("#     capex: 0        # the GPU, in facility.currency (required)")
			w("#     life: 5y        # depreciation life (required)")
		}
	}
}

// quote writes s as a YAML double-quoted scalar (JSON's escapes are YAML's).
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func intList(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func cmpDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

var _ flag.Value = (*listFlag)(nil)

// Command deadlabour-demo runs deadlabourd against simulated H100s and
// OpenAI-compatible fake upstreams, sends a few hundred prompts, and prints
// what each model cost, read back from InfluxDB. `make demo` runs it with a
// local InfluxDB (scripts/influxdb.sh) and stops everything afterwards.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/deadlabour/deadlabour/internal/cmdmain"
	"github.com/deadlabour/deadlabour/internal/fakeupstream"
)

func main() { cmdmain.Run("deadlabour-demo", run) }

type upstream struct {
	deployment
	fake   *fakeupstream.Server
	listen string // where the driver sends: the daemon's proxy
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("deadlabour-demo", flag.ContinueOnError)
	bin := fs.String("daemon", "bin/deadlabourd", "the deadlabourd binary")
	influx := fs.String("influx", os.Getenv("INFLUX_URL"), "InfluxDB URL (1.8+, database deadlabour)")
	duration := fs.Duration("duration", 15*time.Second, "how long to keep each upstream's batch full (the requests in flight then finish)")
	seed := fs.Uint64("seed", 1, "random seed of the prompt mix")
	keep := fs.String("keep", "", "after the table, start the daemon again, detached, with its config and log in this folder, and leave it running (make demo KEEP=1)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *influx == "" {
		return errors.New("no InfluxDB: pass --influx or set INFLUX_URL (make demo starts one)")
	}
	dir, err := os.MkdirTemp("", "deadlabour-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	var ups []*upstream
	for _, d := range deployments {
		u := &upstream{deployment: d}
		u.fake, err = fakeupstream.Start(ctx, fakeupstream.Options{Batch: &u.step, Models: []string{u.model}})
		if err != nil {
			return err
		}
		defer u.fake.Close()
		if u.listen, err = freeAddr(); err != nil {
			return err
		}
		ups = append(ups, u)
	}
	admin, err := freeAddr()
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(demoConfig(ups, admin, *influx, dir)), 0o600); err != nil {
		return err
	}

	fmt.Fprintf(out, "Starting deadlabourd --simulate h100:8 with %d upstreams; InfluxDB at %s\n", len(ups), *influx)
	daemon := exec.Command(*bin, "run", "--config", cfgPath, "--simulate", "h100:8")
	logFile, err := os.Create(filepath.Join(dir, "deadlabourd.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	daemon.Stdout, daemon.Stderr = logFile, logFile
	daemon.Env = append(os.Environ(), "INFLUX_TOKEN=")
	if err := daemon.Start(); err != nil {
		return fmt.Errorf("start %s: %w (run make build first)", *bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- daemon.Wait() }()
	stopDaemon := func() error {
		daemon.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(30 * time.Second):
			daemon.Process.Kill()
			return errors.New("deadlabourd did not stop within 30 s")
		}
	}
	for _, u := range ups {
		if err := waitListening(ctx, u.listen, exited); err != nil {
			stopDaemon()
			return fmt.Errorf("%w\n%s", err, tail(logFile.Name()))
		}
	}

	start := time.Now()
	fmt.Fprintf(out, "Keeping %s in flight for %s, %d-%d output tokens each\n", batches(ups), *duration, minOutput, maxOutput)
	sent, failed := load(ctx, ups, loadSpec{duration: *duration, minOutput: minOutput, maxOutput: maxOutput, seed: *seed})
	fmt.Fprintf(out, "Sent %d prompts (%d failed) in %.1f s; stopping the daemon to flush the last records\n",
		sent, failed, time.Since(start).Seconds())
	if err := stopDaemon(); err != nil {
		return fmt.Errorf("deadlabourd: %w\n%s", err, tail(logFile.Name()))
	}
	if warnings := problems(logFile.Name()); warnings != "" {
		fmt.Fprintf(out, "The daemon logged warnings:\n%s", warnings)
	}
	if err := printTable(ctx, out, *influx, ups); err != nil {
		return err
	}
	if *keep != "" {
		return keepRunning(out, *bin, *keep, demoConfig(ups, admin, *influx, *keep), *influx, admin)
	}
	return nil
}

// keepRunning starts the daemon again, detached from the demo (its own
// session: it outlives make), on the same simulated GPUs, so that Grafana
// and report have a live node to look at, and says how to use and stop it.
func keepRunning(out io.Writer, bin, dir, config, influx, admin string) error {
	cfgPath := filepath.Join(dir, "deadlabourd.yaml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		return err
	}
	logPath := filepath.Join(dir, "deadlabourd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	d := exec.Command(bin, "run", "--config", cfgPath, "--simulate", "h100:8")
	d.Stdout, d.Stderr = logFile, logFile
	d.Env = append(os.Environ(), "INFLUX_TOKEN=")
	d.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := d.Start(); err != nil {
		return err
	}
	pid := d.Process.Pid
	d.Process.Release()
	fmt.Fprintf(out, `
KEEP: deadlabourd keeps running (pid %d, admin http://%s, log %s),
on the same 8 simulated H100s; the fake upstreams are gone, so it meters idle.
Grafana (deploy/grafana/README.md): with its provisioning folder pointed at deploy/grafana/provisioning,
  DEADLABOUR_INFLUX_URL=%s DEADLABOUR_INFLUX_DATABASE=deadlabour DEADLABOUR_INFLUX_TOKEN= grafana-server ...
A report: bin/deadlabourd report --config %s --since 1h --format html --out report.html
Stop it:  kill %d
`, pid, admin, logPath, influx, cfgPath, pid)
	return nil
}

func batches(ups []*upstream) string {
	var parts []string
	for _, u := range ups {
		parts = append(parts, fmt.Sprintf("%d requests on %s", u.batch, u.name))
	}
	return strings.Join(parts, ", ")
}

func gpuList(gpus []int) string {
	s := make([]string, len(gpus))
	for i, g := range gpus {
		s[i] = fmt.Sprint(g)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

func demoConfig(ups []*upstream, admin, influx, dir string) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "node: demo-node\ngpu:\n  interval: 100ms\n  report_interval: 2s\n")
	// Every factor given, as a node should: no world average stands in.
	fmt.Fprintf(&b, "facility:\n  region: US\n  price_per_kwh: 0.15\n")
	fmt.Fprintf(&b, "admin:\n  listen: %s\ninflux:\n  url: %s\n  bucket: deadlabour/autogen\n  flush_interval: 200ms\n", admin, influx)
	fmt.Fprintf(&b, "spool:\n  dir: %s\n", filepath.Join(dir, "spool"))
	fmt.Fprintf(&b, "models:\n")
	training := map[string]string{
		// Llama 3.1 70B: 7.0M H100-hours (Meta model card); the cost and
		// lifetime tokens are illustrative.
		"meta-llama/Llama-3.1-70B-Instruct":  "training_cost: 2.0e7\n    training_co2e_kg: 2.04e6\n    lifetime_tokens: 1.0e13",
		"meta-llama/Llama-3.1-8B-Instruct":   "training_cost: 3.0e6\n    training_co2e_kg: 4.2e5\n    lifetime_tokens: 1.0e13",
		"mistralai/Mistral-7B-Instruct-v0.3": "training_cost: 2.0e6\n    lifetime_tokens: 5.0e12",
	}
	for _, u := range ups {
		fmt.Fprintf(&b, "  - name: %s\n    %s\n", u.model, training[u.model])
	}
	fmt.Fprintf(&b, "upstreams:\n")
	for _, u := range ups {
		fmt.Fprintf(&b, "  - name: %s\n    listen: %s\n    target: %s\n    gpus: %s\n", u.name, u.listen, u.fake.URL(), gpuList(u.gpus))
	}
	return b.String()
}

var columns = []column{
	{head: "requests", request: "count(request_id)", scale: 1, format: "%.0f"},
	{head: "prompt tok", request: "sum(prompt_tokens)", scale: 1, format: "%.0f"},
	{head: "output tok", request: "sum(completion_tokens)", scale: 1, format: "%.0f"},
	{head: "GPU Wh", request: "sum(gpu_energy_j)", idle: "energy_j", gpuOnly: true, scale: 1.0 / 3600, format: "%.3f"},
	{head: "facility Wh", request: "sum(facility_energy_j)", idle: "facility_energy_j", scale: 1.0 / 3600, format: "%.3f"},
	{head: "CO2e g", request: "sum(co2e_g)", idle: "co2e_g", scale: 1, format: "%.3f"},
	{head: "water mL", request: "sum(water_l)", idle: "water_l", scale: 1000, format: "%.2f"},
	{head: "energy USD", request: "sum(energy_cost)", idle: "energy_cost", scale: 1, format: "%.5f"},
	{head: "depreciation USD", request: "sum(depreciation_cost)", idle: "depreciation_cost", scale: 1, format: "%.5f"},
	{head: "dead labour USD", request: "sum(dead_labour_cost)", idle: "dead_labour_cost", scale: 1, format: "%.5f"},
	{head: "loaded USD", request: "sum(loaded_dead_labour_cost)", noTotal: true, scale: 1, format: "%.5f"},
}

// Indexes of the columns the derived figures use.
const (
	colRequests = 0
	colOutput   = 2
	colGPU      = 3
)

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitListening(ctx context.Context, addr string, exited <-chan error) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("deadlabourd exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("deadlabourd did not listen on %s within 20 s", addr)
}

// problems returns the daemon's WARN and ERROR lines.
func problems(path string) string {
	b, _ := os.ReadFile(path)
	var out strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			out.WriteString("  " + line + "\n")
		}
	}
	return out.String()
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return "daemon log:\n" + string(b)
}

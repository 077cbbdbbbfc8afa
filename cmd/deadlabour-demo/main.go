// This file is over 500 lines: it is the demo from flags to table (start
// the fakes, the daemon and InfluxDB, drive load, print); the physics and
// its cited ranges are in physics.go.

// Command deadlabour-demo runs deadlabourd against simulated H100s and
// OpenAI-compatible fake upstreams, sends a few hundred prompts, and prints
// what each model cost, read back from InfluxDB. `make demo` runs it with a
// local InfluxDB (scripts/influxdb.sh) and stops everything afterwards.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
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

type loadSpec struct {
	duration             time.Duration
	minOutput, maxOutput int
	seed                 uint64
}

// load keeps each upstream's batch of requests in flight for spec.duration
// (a closed loop: each of an upstream's batch workers sends its next prompt
// when the last is answered), then lets the requests in flight finish. A
// third of the prompts are streamed.
func load(ctx context.Context, ups []*upstream, spec loadSpec) (sent, failed int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	n := 0
	for _, u := range ups {
		n += u.batch
	}
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(spec.duration)
	for ui, u := range ups {
		for w := range u.batch {
			rng := rand.New(rand.NewPCG(spec.seed, uint64(ui<<16|w)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil && time.Now().Before(deadline) {
					err := post(ctx, client, "http://"+u.listen+"/v1/chat/completions", prompt(rng, u.model, spec))
					mu.Lock()
					sent++
					if err != nil {
						failed++
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	return sent, failed
}

// prompt is one request body: 5-200 words of prompt, an output length in
// [spec.minOutput, spec.maxOutput], streamed one time in three.
func prompt(rng *rand.Rand, model string, spec loadSpec) []byte {
	words := 5 + rng.IntN(200)
	text := make([]byte, 0, words*6)
	for range words {
		text = append(text, "lorem "...)
	}
	req := map[string]any{
		"model":      model,
		"messages":   []map[string]string{{"role": "user", "content": string(text)}},
		"max_tokens": spec.minOutput + rng.IntN(spec.maxOutput-spec.minOutput+1),
		"stream":     rng.IntN(3) == 0,
	}
	body, _ := json.Marshal(req)
	return body
}

func post(ctx context.Context, c *http.Client, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer demo-key-"+fmt.Sprint(len(body)%3))
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// column is one figure of the table: an aggregate of deadlabour_request per
// model, and the deadlabour_idle field summed into the idle line. A figure
// the daemon adds to deadlabour_idle joins the idle line by naming it here.
type column struct {
	head    string
	request string  // InfluxQL aggregate over deadlabour_request
	idle    string  // deadlabour_idle field, summed over its devices; "": none
	gpuOnly bool    // the idle part is that of the GPUs alone (device != 'host')
	noTotal bool    // not summed into the total line (the loaded figures already hold idle)
	scale   float64 // from the stored unit to the printed one
	format  string
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

// row is one line of the table, in the stored units; NaN: not known.
type row struct {
	label string
	v     []float64
}

// printTable reads the per-model totals and the idle line back from
// InfluxDB and prints them, then each model's J per output token against
// its cited range.
func printTable(ctx context.Context, out io.Writer, influx string, ups []*upstream) error {
	var sel []string
	for i, c := range columns {
		sel = append(sel, fmt.Sprintf("%s AS c%d", c.request, i))
	}
	series, err := influxQuery(ctx, influx, "SELECT "+strings.Join(sel, ", ")+" FROM deadlabour_request GROUP BY model")
	if err != nil {
		return err
	}
	var rows []row
	for _, s := range series {
		r := row{label: s.Tags["model"], v: make([]float64, len(columns))}
		for i := range columns {
			r.v[i] = math.NaN()
			if f, ok := s.Values[0][i+1].(float64); ok {
				r.v[i] = f
			}
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		return errors.New("InfluxDB holds no request records: see the daemon log")
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].label < rows[j].label })
	idle, err := idleRow(ctx, influx)
	if err != nil {
		return err
	}
	total := row{label: "total", v: make([]float64, len(columns))}
	for i, c := range columns {
		for _, r := range append(rows, idle) {
			total.v[i] += zeroNaN(r.v[i])
		}
		if c.noTotal || (c.idle != "" && math.IsNaN(idle.v[i])) {
			total.v[i] = math.NaN()
		}
	}

	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', tabwriter.AlignRight)
	var head []string
	for _, c := range columns {
		head = append(head, c.head)
	}
	fmt.Fprintf(tw, "model\t%s\tJ/out tok\tGPU Wh/req\t\n", strings.Join(head, "\t"))
	for _, r := range append(append(rows, idle), total) {
		fmt.Fprintf(tw, "%s\t", r.label)
		for i, c := range columns {
			fmt.Fprintf(tw, "%s\t", figure(c.format, r.v[i]*c.scale))
		}
		j, wh := r.v[colGPU]/r.v[colOutput], r.v[colGPU]/3600/r.v[colRequests]
		if r.label == total.label {
			j, wh = math.NaN(), math.NaN() // mixed models
		}
		fmt.Fprintf(tw, "%s\t%s\t\n", figure("%.3f", j), figure("%.4f", wh))
	}
	tw.Flush()
	fmt.Fprintln(out, "\n(idle = energy and wear no request used, deadlabour_idle: GPUs 6-7 served nothing, the rest between requests;")
	fmt.Fprintln(out, " loaded = dead labour plus the idle of the intervals each request ran in; with the idle no request")
	fmt.Fprintln(out, " absorbed (overcapacity, deadlabour_idle share=unabsorbed) it adds up to the meters, as the active figures do with all idle;")
	fmt.Fprintln(out, " J/out tok = GPU energy over output tokens; - = not written by this daemon, or no total.)")
	if g := idle.v[colGPU]; !math.IsNaN(g) {
		fmt.Fprintf(out, "Idle GPU energy: %.3f Wh, %.0f %% of all GPU energy.\n", g/3600, 100*g/total.v[colGPU])
	}
	printCited(out, rows, ups)
	return nil
}

// idleRow sums deadlabour_idle: every numeric field over all its devices,
// and the GPUs' energy alone. A column whose idle field is absent is NaN.
func idleRow(ctx context.Context, influx string) (row, error) {
	idle := row{label: "(idle)", v: make([]float64, len(columns))}
	sums := map[string]float64{}
	for _, q := range []struct{ prefix, query string }{
		{"", `SELECT sum(*) FROM deadlabour_idle`},
		{"gpu:", `SELECT sum(energy_j) AS sum_energy_j FROM deadlabour_idle WHERE device != 'host'`},
	} {
		series, err := influxQuery(ctx, influx, q.query)
		if err != nil {
			return row{}, err
		}
		for _, s := range series {
			for i, name := range s.Columns {
				if f, ok := s.Values[0][i].(float64); ok {
					sums[q.prefix+strings.TrimPrefix(name, "sum_")] = f
				}
			}
		}
	}
	for i, c := range columns {
		key := c.idle
		if c.gpuOnly {
			key = "gpu:" + key
		}
		idle.v[i] = math.NaN()
		if f, ok := sums[key]; ok && c.idle != "" {
			idle.v[i] = f
		}
	}
	return idle, nil
}

// printCited prints each model's J per output token and GPU Wh per request
// beside the published range it is held to (physics.go), and the sources.
func printCited(out io.Writer, rows []row, ups []*upstream) {
	fmt.Fprintln(out, "\nAgainst published figures (the model's GPUs, idle excluded):")
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "model\tGPUs\tbatch\tJ/out tok\tcited\tEcoLogits\tGPU Wh/req\tcited\tinside\tsource\t")
	var sources []string
	for _, u := range ups {
		var r *row
		for i := range rows {
			if rows[i].label == u.model {
				r = &rows[i]
			}
		}
		if r == nil {
			continue
		}
		c := u.cited
		j := r.v[colGPU] / r.v[colOutput]
		wh := r.v[colGPU] / 3600 / r.v[colRequests]
		inside := j >= c.lo && j <= c.hi
		whCited := "-"
		if c.whHi > 0 {
			whCited = fmt.Sprintf("%.3f-%.2f", c.whLo, c.whHi)
			inside = inside && wh >= c.whLo && wh <= c.whHi
		}
		ref := slices.Index(sources, c.source)
		if ref < 0 {
			ref = len(sources)
			sources = append(sources, c.source)
		}
		fmt.Fprintf(tw, "%s\t%dxH100\t%d\t%.3f\t%.2f-%.2f\t%.3f\t%.4f\t%s\t%s\t[%d]\t\n", u.model, len(u.gpus), u.batch,
			j, c.lo, c.hi, ecologitsJPerToken(u.paramsB, u.batch, len(u.gpus)), wh, whCited, yesNo(inside), ref+1)
	}
	tw.Flush()
	for i, s := range sources {
		fmt.Fprintf(out, "[%d] %s\n", i+1, s)
	}
	fmt.Fprintf(out, "GPU Wh/req: within 3x of Google 2025's median Gemini Apps prompt, %.2f Wh under the narrow boundary (%.2f Wh in all).\n",
		googleMedianAcceleratorWh, googleMedianWh)
	fmt.Fprintln(out, "EcoLogits: alpha*exp(beta*batch)*params + gamma Wh per GPU per output token, for the same GPUs and batch.")
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

func figure(format string, v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

func zeroNaN(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return v
}

type influxSeries struct {
	Name    string            `json:"name"`
	Tags    map[string]string `json:"tags"`
	Columns []string          `json:"columns"`
	Values  [][]any           `json:"values"`
}

func influxQuery(ctx context.Context, base, q string) ([]influxSeries, error) {
	u := base + "/query?db=deadlabour&q=" + url.QueryEscape(q)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("query InfluxDB: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		Results []struct {
			Series []influxSeries `json:"series"`
			Error  string         `json:"error"`
		} `json:"results"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("query InfluxDB: %w", err)
	}
	if body.Error != "" {
		return nil, fmt.Errorf("query InfluxDB: %s", body.Error)
	}
	if len(body.Results) > 0 && body.Results[0].Error != "" {
		return nil, fmt.Errorf("query InfluxDB: %s", body.Results[0].Error)
	}
	if len(body.Results) == 0 {
		return nil, nil
	}
	return body.Results[0].Series, nil
}

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

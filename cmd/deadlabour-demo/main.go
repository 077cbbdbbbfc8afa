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
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/deadlabour/deadlabour/internal/fakeupstream"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "deadlabour-demo:", err)
		os.Exit(1)
	}
}

type upstream struct {
	name, model string
	gpus        string
	delay       time.Duration
	share       float64 // of the requests
	fake        *fakeupstream.Server
	listen      string
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("deadlabour-demo", flag.ContinueOnError)
	bin := fs.String("daemon", "bin/deadlabourd", "the deadlabourd binary")
	influx := fs.String("influx", os.Getenv("INFLUX_URL"), "InfluxDB URL (1.8+, database deadlabour)")
	requests := fs.Int("requests", 300, "prompts to send")
	concurrency := fs.Int("concurrency", 12, "prompts in flight at once")
	seed := fs.Uint64("seed", 1, "random seed of the prompt mix")
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

	ups := []*upstream{
		{name: "vllm-llama70b", model: "meta-llama/Llama-3.1-70B-Instruct", gpus: "[0, 1, 2, 3]", delay: 4 * time.Millisecond, share: 0.4},
		{name: "vllm-llama8b", model: "meta-llama/Llama-3.1-8B-Instruct", gpus: "[4]", delay: time.Millisecond, share: 0.4},
		{name: "vllm-mistral", model: "mistralai/Mistral-7B-Instruct-v0.3", gpus: "[5]", delay: 2 * time.Millisecond, share: 0.2},
	}
	for _, u := range ups {
		u.fake, err = fakeupstream.Start(ctx, fakeupstream.Options{TokenDelay: u.delay, DefaultMaxTokens: 64, Models: []string{u.model}})
		if err != nil {
			return err
		}
		defer u.fake.Close()
		if u.listen, err = freeAddr(); err != nil {
			return err
		}
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
	sent, failed := load(ctx, ups, *requests, *concurrency, *seed)
	fmt.Fprintf(out, "Sent %d prompts (%d failed) in %.1f s; stopping the daemon to flush the last records\n",
		sent, failed, time.Since(start).Seconds())
	if err := stopDaemon(); err != nil {
		return fmt.Errorf("deadlabourd: %w\n%s", err, tail(logFile.Name()))
	}
	if warnings := problems(logFile.Name()); warnings != "" {
		fmt.Fprintf(out, "The daemon logged warnings:\n%s", warnings)
	}
	return printTable(ctx, out, *influx)
}

func demoConfig(ups []*upstream, admin, influx, dir string) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "node: demo-node\ngpu:\n  interval: 100ms\n  report_interval: 2s\n")
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
		fmt.Fprintf(&b, "  - name: %s\n    listen: %s\n    target: %s\n    gpus: %s\n", u.name, u.listen, u.fake.URL(), u.gpus)
	}
	return b.String()
}

// load sends n prompts, streamed and not, spread over the upstreams.
func load(ctx context.Context, ups []*upstream, n, concurrency int, seed uint64) (sent, failed int) {
	rng := rand.New(rand.NewPCG(seed, 0))
	type job struct {
		u    *upstream
		body []byte
	}
	jobs := make(chan job)
	var mu sync.Mutex
	var wg sync.WaitGroup
	client := &http.Client{Timeout: time.Minute}
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				err := post(ctx, client, "http://"+j.u.listen+"/v1/chat/completions", j.body)
				mu.Lock()
				sent++
				if err != nil {
					failed++
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		r, u := rng.Float64(), ups[len(ups)-1]
		for _, c := range ups {
			if r < c.share {
				u = c
				break
			}
			r -= c.share
		}
		words := 5 + rng.IntN(200)
		prompt := make([]byte, 0, words*6)
		for w := 0; w < words; w++ {
			prompt = append(prompt, "lorem "...)
		}
		req := map[string]any{
			"model":      u.model,
			"messages":   []map[string]string{{"role": "user", "content": string(prompt)}},
			"max_tokens": 8 + rng.IntN(120),
			"stream":     rng.IntN(2) == 0,
		}
		body, _ := json.Marshal(req)
		jobs <- job{u, body}
	}
	close(jobs)
	wg.Wait()
	return sent, failed
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

type row struct {
	model                                           string
	requests, tokens                                float64
	gpuJ, facilityJ, depreciation, deadLabour, co2e float64
	loaded                                          float64
}

// printTable reads the per-model totals back from InfluxDB.
func printTable(ctx context.Context, out io.Writer, influx string) error {
	q := `SELECT count(request_id) AS requests, sum(prompt_tokens) AS prompt, sum(completion_tokens) AS completion,
	sum(gpu_energy_j) AS gpu, sum(facility_energy_j) AS facility, sum(depreciation_cost) AS depreciation,
	sum(dead_labour_cost) AS dead_labour, sum(co2e_g) AS co2e, sum(loaded_dead_labour_cost) AS loaded
	FROM deadlabour_request GROUP BY model`
	series, err := influxQuery(ctx, influx, q)
	if err != nil {
		return err
	}
	var rows []row
	for _, s := range series {
		v := s.Values[0]
		num := func(i int) float64 {
			f, _ := v[i].(float64)
			return f
		}
		rows = append(rows, row{model: s.Tags["model"], requests: num(1), tokens: num(2) + num(3), gpuJ: num(4),
			facilityJ: num(5), depreciation: num(6), deadLabour: num(7), co2e: num(8), loaded: num(9)})
	}
	if len(rows) == 0 {
		return errors.New("InfluxDB holds no request records: see the daemon log")
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].model < rows[j].model })
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "model\trequests\ttokens\tGPU Wh\tfacility Wh\tCO2e g\tdepreciation USD\tdead labour USD\tloaded USD\tJ/token\t")
	var total row
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.3f\t%.3f\t%.3f\t%.5f\t%.5f\t%.5f\t%.3f\t\n", r.model, r.requests, r.tokens,
			r.gpuJ/3600, r.facilityJ/3600, r.co2e, r.depreciation, r.deadLabour, r.loaded, r.gpuJ/max(r.tokens, 1))
		total.requests += r.requests
		total.tokens += r.tokens
		total.gpuJ += r.gpuJ
		total.facilityJ += r.facilityJ
	}
	tw.Flush()
	fmt.Fprintln(out, "\n(loaded = dead labour plus the request's share of its GPUs' idle energy and wear: what idle capacity adds to each prompt.)")
	idle, err := influxQuery(ctx, influx, `SELECT sum(energy_j) FROM deadlabour_idle WHERE device != 'host'`)
	if err == nil && len(idle) > 0 {
		f, _ := idle[0].Values[0][1].(float64)
		fmt.Fprintf(out, "\nIdle GPU energy (no request running; GPUs 6-7 served nothing): %.3f Wh, %.0f %% of all GPU energy.\n",
			f/3600, 100*f/(f+total.gpuJ))
	}
	return nil
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

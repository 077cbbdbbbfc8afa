// Command fleetsizing measures what one GPU node costs an InfluxDB 1.8:
// points per day and bytes per point, on the wire (line protocol) and on
// disk (compressed TSM), per measurement. It generates a day of one node's
// points with the daemon's own encoders (schema.RequestPoint, GPUPoint,
// IdlePoint) and realistic, full-precision values, writes each measurement
// into its own database of a throwaway influxd configured to snapshot its
// cache to TSM files after one idle second, and reads the sizes back.
//
//	make fleet-sizing    (go run ./scripts/fleetsizing --gpus 8 --rps 1)
//
// docs/operations.md ("Fleet: many nodes, one InfluxDB") quotes its output.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/cmdmain"
	"github.com/deadlabour/deadlabour/schema"
)

func main() { cmdmain.Run("fleetsizing", run) }

type measurement struct {
	name   string
	points int
	lp     int64 // line-protocol bytes
	disk   int64 // TSM bytes
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fset := flag.NewFlagSet("fleetsizing", flag.ContinueOnError)
	gpus := fset.Int("gpus", 8, "GPUs of the node")
	rps := fset.Float64("rps", 1, "requests per second, day average")
	report := fset.Duration("report-interval", 10*time.Second, "gpu.report_interval")
	influxd := fset.String("influxd", envOr("DEADLABOUR_INFLUXD", ".cache/influxdb/bin/influxd"), "influxd 1.8 binary (make influxdb builds it)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "fleetsizing-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	base, stopInflux, err := startInflux(ctx, *influxd, dir)
	if err != nil {
		return err
	}
	defer stopInflux()

	day := 24 * time.Hour
	end := time.Now().Truncate(*report)
	start := end.Add(-day)
	rng := rand.New(rand.NewPCG(1, 2))
	ms := []*measurement{
		{name: schema.MeasurementRequest}, {name: schema.MeasurementGPU}, {name: schema.MeasurementIdle}, {name: "deadlabour_health"},
	}
	gens := map[string]func(emit func(schema.Point) error) error{
		schema.MeasurementRequest: func(emit func(schema.Point) error) error {
			n := int(*rps * day.Seconds())
			for i := range n {
				at := start.Add(time.Duration(float64(day) * float64(i) / float64(n)))
				if err := emit(requestPoint(rng, at, i, *gpus)); err != nil {
					return err
				}
			}
			return nil
		},
		schema.MeasurementGPU: func(emit func(schema.Point) error) error {
			for t := start; t.Before(end); t = t.Add(*report) {
				for g := range *gpus {
					if err := emit(schema.GPUPoint("gpu-node-01", false, gpuWindow(rng, t, g, *report))); err != nil {
						return err
					}
				}
			}
			return nil
		},
		schema.MeasurementIdle: func(emit func(schema.Point) error) error {
			for t := start; t.Before(end); t = t.Add(*report) {
				for g := 0; g <= *gpus; g++ {
					dev := fmt.Sprint(g)
					if g == *gpus {
						dev = estimator.HostDevice
					}
					// Both kinds of idle, as a node that is neither idle nor
					// full writes them: the most points per window.
					for _, unabsorbed := range []bool{false, true} {
						j := 700 * rng.Float64()
						s := estimator.IdleShare{Device: dev, Start: t, End: t.Add(*report), Joules: j,
							StaticJoules: 100 * rng.Float64(), DepreciationCost: 1e-4 * rng.Float64(), EmbodiedCO2eG: 0.01 * rng.Float64(),
							FacilityEnergyJ: 1.2 * j, CO2eG: j * 1.2 / 3.6e6 * 473, WaterOnsiteL: j / 3.6e6 * 0.5, WaterOffsiteL: j * 1.2 / 3.6e6 * 3.9,
							EnergyCost: j * 1.2 / 3.6e6 * 0.15, Method: estimator.MethodCounter, Unabsorbed: unabsorbed}
						if err := emit(schema.IdlePoint("gpu-node-01", "USD", false, false, s)); err != nil {
							return err
						}
					}
				}
			}
			return nil
		},
		"deadlabour_health": func(emit func(schema.Point) error) error {
			sent := int64(0)
			for t := start; t.Before(end); t = t.Add(*report) {
				sent += int64(*rps*report.Seconds()) + int64(2**gpus+1)
				if err := emit(healthPoint(rng, t, *gpus, sent)); err != nil {
					return err
				}
			}
			return nil
		},
	}
	for _, m := range ms {
		if err := write(ctx, base, m, gens[m.name]); err != nil {
			return err
		}
	}
	// Wait for every cache to be snapshotted to TSM (cold after 1 s).
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		stable := true
		for _, m := range ms {
			n, err := tsmBytes(filepath.Join(dir, "data", m.name))
			if err != nil {
				return err
			}
			if n != m.disk || n == 0 {
				stable = false
			}
			m.disk = n
		}
		if stable {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("TSM files did not settle within 2 minutes")
		}
		time.Sleep(3 * time.Second)
	}

	fmt.Fprintf(out, "one node, %d GPUs, %.3g requests/s, report_interval %v, one day:\n\n", *gpus, *rps, *report)
	fmt.Fprintf(out, "| measurement | points/day | line protocol B/point | TSM on disk B/point | TSM MiB/day |\n|---|---:|---:|---:|---:|\n")
	var tp int
	var tl, td int64
	for _, m := range ms {
		fmt.Fprintf(out, "| `%s` | %d | %.0f | %.1f | %.2f |\n", m.name, m.points, float64(m.lp)/float64(m.points),
			float64(m.disk)/float64(m.points), float64(m.disk)/(1<<20))
		tp, tl, td = tp+m.points, tl+m.lp, td+m.disk
	}
	fmt.Fprintf(out, "| total | %d | %.0f | %.1f | %.2f |\n", tp, float64(tl)/float64(tp), float64(td)/float64(tp), float64(td)/(1<<20))
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// write sends a measurement's points in batches into a database of its own.
func write(ctx context.Context, base string, m *measurement, gen func(func(schema.Point) error) error) error {
	if err := post(ctx, base+"/query", url.Values{"q": {"CREATE DATABASE " + m.name}}.Encode(), "application/x-www-form-urlencoded"); err != nil {
		return err
	}
	var batch bytes.Buffer
	flush := func() error {
		if batch.Len() == 0 {
			return nil
		}
		err := post(ctx, base+"/write?db="+m.name+"&precision=ns", batch.String(), "text/plain")
		batch.Reset()
		return err
	}
	err := gen(func(p schema.Point) error {
		line, err := schema.Line(p)
		if err != nil {
			return err
		}
		m.points++
		m.lp += int64(len(line)) + 1
		batch.WriteString(line)
		batch.WriteByte('\n')
		if batch.Len() > 4<<20 {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

func post(ctx context.Context, u, body, ctype string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", ctype)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 || bytes.Contains(b, []byte(`"error"`)) {
		return fmt.Errorf("%s: %s: %s", u, resp.Status, b)
	}
	return nil
}

// tsmBytes is the size of the .tsm files under a database's directory.
func tsmBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if strings.HasSuffix(p, ".tsm") {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

func requestPoint(rng *rand.Rand, end time.Time, i, gpus int) schema.Point {
	models := []string{"meta-llama/Llama-3.1-70B-Instruct", "meta-llama/Llama-3.1-8B-Instruct", "mistralai/Mistral-7B-Instruct-v0.3"}
	m := i % 3
	dur := time.Duration((0.5 + 10*rng.Float64()) * float64(time.Second))
	prompt, completion := int64(50+rng.IntN(2000)), int64(10+rng.IntN(600))
	devs := [][]string{{"0", "1", "2", "3"}, {"4"}, {fmt.Sprint(gpus - 1)}}[m]
	ngpu := len(devs)
	gpuJ := (200 + 400*rng.Float64()) * dur.Seconds() * float64(ngpu) / 8
	hostJ, staticJ := gpuJ*0.08*rng.Float64(), gpuJ*0.05*rng.Float64()
	it := gpuJ + hostJ + staticJ
	fac := it * 1.2
	r := estimator.Record{
		Span: estimator.Span{ID: fmt.Sprintf("chatcmpl-%016x%016x", rng.Uint64(), rng.Uint64()), Upstream: []string{"vllm-70b", "vllm-8b", "vllm-mistral"}[m],
			Model: models[m], Tenant: fmt.Sprintf("%016x", rng.Uint64()%40), Start: end.Add(-dur), FirstToken: end.Add(-dur + 200*time.Millisecond),
			End: end, Status: "200", PromptTokens: prompt, CompletionTokens: completion, CachedTokens: -1, ReasoningTokens: -1,
			UsageSource: "reported", Devices: devs, Served: true},
		Node: "gpu-node-01", Time: end,
		GPUEnergyJ: gpuJ, HostEnergyJ: hostJ, StaticEnergyJ: staticJ, ITEnergyJ: it, FacilityEnergyJ: fac,
		CO2eG: fac / 3.6e6 * 473, EmbodiedCO2eG: dur.Seconds() * 1e-3 * rng.Float64(), WaterL: fac / 3.6e6 * 4.4,
		EnergyCost: fac / 3.6e6 * 0.15, DepreciationCost: dur.Seconds() * 2e-4 * rng.Float64(),
		TrainingCost: float64(prompt+completion) * 2e-6, GPUMeter: estimator.MethodCounter, HostMeter: estimator.MethodCounter,
		MethodVersion: "1", ParamsHash: "3f2a9c1b7d4e",
	}
	r.DeadLabourCost = r.EnergyCost + r.DepreciationCost + r.TrainingCost
	u := 0.1 + rng.Float64()
	r.IdleUplift = u
	r.LoadedGPUEnergyJ, r.LoadedITEnergyJ, r.LoadedFacilityEnergyJ = gpuJ*(1+u), it*(1+u), fac*(1+u)
	r.LoadedCO2eG, r.LoadedDepreciationCost, r.LoadedEnergyCost = r.CO2eG*(1+u), r.DepreciationCost*(1+u), r.EnergyCost*(1+u)
	r.LoadedDeadLabourCost = r.DeadLabourCost * (1 + u)
	r.WaterOnsiteL, r.WaterOffsiteL = it/3.6e6*0.5, fac/3.6e6*3.9
	r.TrainingCO2eG, r.HasTrainingCO2e = float64(prompt+completion)*2e-4, true
	r.LivingLabourS, r.HasLivingLabour = float64(prompt+completion)*1.8e-4, true
	r.Weighting = estimator.WeightTime
	p, err := schema.RequestPoint(r)
	if err != nil {
		panic(err)
	}
	return p
}

func gpuWindow(rng *rand.Rand, start time.Time, g int, report time.Duration) schema.GPUWindow {
	util := 100 * rng.Float64()
	p := 70 + 6.3*util + 20*rng.Float64()
	return schema.GPUWindow{Device: fmt.Sprint(g), Name: "NVIDIA H100 80GB HBM3", Start: start, End: start.Add(report), Samples: int(report / (100 * time.Millisecond)),
		PowerMeanW: p, PowerMaxW: math.Min(700, p*1.2), EnergyJ: p * report.Seconds(), UtilGPUPct: util, UtilMemPct: util * 0.6 * rng.Float64(),
		MemUsedBytes: uint64(60e9 + 1e9*rng.Float64()), MemTotalBytes: 85520809984, TempC: float64(35 + rng.IntN(40)), SMClockMHz: float64(1755 + 15*rng.IntN(10)),
		PowerLimitW: 700}
}

func healthPoint(rng *rand.Rand, t time.Time, gpus int, sent int64) schema.Point {
	return schema.Point{Measurement: "deadlabour_health", Tags: []schema.Tag{{Key: "host", Value: "gpu-node-01"}}, Time: t,
		Fields: []schema.Field{{Key: "gpus_total", Value: int64(gpus)}, {Key: "gpus_unhealthy", Value: int64(0)}, {Key: "host_meter", Value: "counter"},
			{Key: "spool_points", Value: int64(rng.IntN(50))}, {Key: "spool_bytes", Value: int64(rng.IntN(50000))}, {Key: "oldest_undelivered_s", Value: rng.Float64()},
			{Key: "points_sent", Value: sent}, {Key: "points_dropped", Value: int64(0)}, {Key: "points_dead_lettered", Value: int64(0)},
			{Key: "sink_state", Value: "ok"}, {Key: "simulated", Value: false}}}
}

// startInflux runs influxd 1.8 with the tests' configuration, changed to
// snapshot the cache to TSM after one cold second.
func startInflux(ctx context.Context, bin, dir string) (string, func(), error) {
	if _, err := os.Stat(bin); err != nil {
		return "", nil, fmt.Errorf("influxd: %w (run make influxdb, or set DEADLABOUR_INFLUXD)", err)
	}
	tmpl, err := os.ReadFile("internal/influxtest/influxd.conf")
	if err != nil {
		return "", nil, fmt.Errorf("run from the repository root: %w", err)
	}
	addrs := make([]string, 2)
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", nil, err
		}
		addrs[i] = l.Addr().String()
		l.Close()
	}
	conf := strings.NewReplacer("@DIR@", dir, "@HTTP_ADDR@", addrs[0], "@RPC_ADDR@", addrs[1], "@FLUX@", "false",
		`wal-fsync-delay = "0s"`, "wal-fsync-delay = \"0s\"\n  cache-snapshot-write-cold-duration = \"1s\"\n  compact-full-write-cold-duration = \"2s\"").Replace(string(tmpl))
	confPath := filepath.Join(dir, "influxd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return "", nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "influxd.log"))
	if err != nil {
		return "", nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "run", "-config", confPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		logf.Close()
	}
	base := "http://" + addrs[0]
	for deadline := time.Now().Add(30 * time.Second); ; {
		if resp, err := http.Get(base + "/ping"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return base, stop, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, errors.New("influxd did not answer /ping within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

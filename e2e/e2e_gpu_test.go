package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/influxtest"
)

// gpuRig is a daemon on simulated GPUs in front of fake upstreams, with a
// real InfluxDB.
type gpuRig struct {
	t      *testing.T
	influx *influxtest.Server
	d      *testDaemon
}

// startGPURig starts the daemon; upstreams is YAML for the upstreams list,
// with %s standing for each one's fake target, in order.
func startGPURig(t *testing.T, simulate, extra string, upstreams []string) *gpuRig {
	t.Helper()
	influx := influxtest.Start(t)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "node: e2e-gpu\ngpu:\n  interval: 50ms\n  report_interval: 1s\n  process_refresh: 1s\n%s", extra)
	fmt.Fprintf(&cfg, "influx:\n  url: %s\n  bucket: %s\n  flush_interval: 100ms\nspool:\n  dir: %s\nupstreams:\n", influx.URL(), influx.Bucket(), t.TempDir())
	for _, u := range upstreams {
		fake, err := fakeupstream.Start(context.Background(), fakeupstream.Options{TokenDelay: 8 * time.Millisecond, DefaultMaxTokens: 16})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fake.Close() })
		fmt.Fprintf(&cfg, u, fake.URL())
	}
	return &gpuRig{t: t, influx: influx, d: startDaemon(t, cfg.String(), simulate)}
}

// send makes n requests to an upstream, a few at a time. Each lasts longer
// than a poll (8 to 27 tokens, 8 ms apart), so that the simulator, which
// reads the load at each poll, sees it.
func (r *gpuRig) send(upstream string, n int) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			body := fmt.Sprintf(`{"model":"m","stream":true,"messages":[{"role":"user","content":"%s"}],"max_tokens":%d}`, strings.Repeat("x ", 5+i%40), 8+i%20)
			if status, _ := call(r.t, r.d.proxyURL(upstream), []byte(body), fmt.Sprintf("%s-%03d", upstream, i)); status != http.StatusOK {
				r.t.Errorf("%s: status %d", upstream, status)
			}
		}()
	}
	wg.Wait()
}

// measured is what the simulated counter of a GPU advanced while read.
func (r *gpuRig) measured(board int) float64 {
	first, last, reads := r.d.Simulation().Device(board).CounterReads()
	if reads < 10 {
		r.t.Fatalf("GPU %d read only %d times", board, reads)
	}
	return float64(last-first) / 1000
}

func (r *gpuRig) float(q string) float64 {
	rows := r.influx.Rows(r.t, q)
	if len(rows) == 0 {
		return 0
	}
	v, _ := rows[0].Float("e")
	return v
}

// conserved checks that the records of the upstreams plus the idle ledger
// of the devices equal what the board's counter advanced.
func (r *gpuRig) conserved(board int, upstreams, devices []string) {
	r.t.Helper()
	var got float64
	for _, u := range upstreams {
		got += r.float(fmt.Sprintf(`SELECT sum(gpu_energy_j) AS e FROM deadlabour_request WHERE upstream = %s`, influxtest.QuoteString(u)))
	}
	for _, dev := range devices {
		got += r.float(fmt.Sprintf(`SELECT sum(energy_j) AS e FROM deadlabour_idle WHERE device = %s`, influxtest.QuoteString(dev)))
	}
	want := r.measured(board)
	if math.Abs(got-want) > 1e-9*want {
		r.t.Errorf("GPU %d: records of %v + idle of %v = %.12g J, its counter advanced %.12g J", board, upstreams, devices, got, want)
	}
}

// noneTruncated checks that every record was charged for all of its
// requests' time: at shutdown the intervals still open because a counter
// had not moved are closed (engine.final, gpu.Collector.Flush).
func (r *gpuRig) noneTruncated() {
	r.t.Helper()
	if n := r.influx.Count(r.t, "deadlabour_request", "history_truncated = true"); n != 0 {
		r.t.Errorf("%d records flagged history_truncated", n)
	}
}

// MIG end to end: two upstreams on two instances of one simulated H100.
// Each request is charged from its instance's share of the board's counter,
// which is split, never copied: per board, records + idle of the board and
// its instances = what the counter advanced.
func TestEndToEndMIG(t *testing.T) {
	mig := func(gi int) string { return fmt.Sprintf("MIG-5e1a0000-0000-4000-8000-%04d%08d", 0, gi) }
	r := startGPURig(t, "h100:2:mig=3g", "admin:\n  listen: \"\"\n", []string{
		"  - name: a\n    listen: 127.0.0.1:0\n    target: %s\n    gpus: [" + mig(0) + "]\n",
		"  - name: b\n    listen: 127.0.0.1:0\n    target: %s\n    gpus: [" + mig(1) + "]\n",
	})
	devs := r.d.GPUs()
	if !devs[0].MIG || len(devs[0].Instances) != 2 || devs[0].Instances[0].UUID != mig(0) || devs[0].Activity != gpu.ActivityGPM {
		t.Fatalf("devices %+v", devs[0])
	}
	var wg sync.WaitGroup
	wg.Go(func() { r.send("a", 24) })
	wg.Go(func() { r.send("b", 8) })
	wg.Wait()
	if err := r.d.stop(); err != nil {
		t.Fatal(err)
	}
	for _, u := range []struct{ name, dev string }{{"a", "0/0"}, {"b", "0/1"}} {
		rows := r.influx.Rows(t, fmt.Sprintf(`SELECT gpus, gpu_energy_j FROM deadlabour_request WHERE upstream = %s`, influxtest.QuoteString(u.name)))
		if len(rows) == 0 {
			t.Fatalf("no records of %s", u.name)
		}
		for _, row := range rows {
			g, _ := row.String("gpus")
			e, _ := row.Float("gpu_energy_j")
			if g != u.dev || e <= 0 {
				t.Errorf("%s: a record on %q with %v J, want on %s with some energy", u.name, g, e, u.dev)
			}
		}
	}
	r.conserved(0, []string{"a", "b"}, []string{"0", "0/0", "0/1"})
	r.noneTruncated()
	r.conserved(1, nil, []string{"1", "1/0", "1/1"})
}

// An upstream mapped by its process: pid_file names this test process, and
// NVML lists it on GPU 3, so its requests are charged GPU 3.
func TestEndToEndPIDFile(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "server.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startGPURig(t, "h100:4", "admin:\n  listen: \"\"\n", []string{
		"  - name: tp\n    listen: 127.0.0.1:0\n    target: %s\n    pid_file: " + pidFile + "\n",
	})
	r.d.Simulation().Device(3).SetProcesses([]nvml.ProcessInfo{{Pid: uint32(os.Getpid()), GpuInstanceId: 0xFFFFFFFF}})
	r.d.RefreshResolver()
	r.send("tp", 12)
	if err := r.d.stop(); err != nil {
		t.Fatal(err)
	}
	rows := r.influx.Rows(t, `SELECT gpus, gpu_energy_j FROM deadlabour_request`)
	if len(rows) != 12 {
		t.Fatalf("%d records, want 12", len(rows))
	}
	for _, row := range rows {
		if g, _ := row.String("gpus"); g != "3" {
			t.Errorf("a record on GPUs %q, want 3", g)
		}
	}
	r.conserved(3, []string{"tp"}, []string{"3"})
	r.noneTruncated()
	if !strings.Contains(r.d.log.String(), "upstream GPUs found from its processes") {
		t.Errorf("no log line of the mapping:\n%s", r.d.log)
	}
}

// A GPU lost mid-run shows in /healthz, the others carry on, and it is
// healthy again once it answers; one log line each way.
func TestHealthzGPULost(t *testing.T) {
	r := startGPURig(t, "h100:2", "admin:\n  listen: 127.0.0.1:0\n", []string{
		"  - name: a\n    listen: 127.0.0.1:0\n    target: %s\n    gpus: [0]\n",
	})
	url := "http://" + r.d.AdminAddr() + "/healthz"
	health := func() []gpu.DeviceHealth {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Status string
			GPUs   []gpu.DeviceHealth
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || body.Status != "alive" {
			t.Fatalf("/healthz: %d %+v %v", resp.StatusCode, body, err)
		}
		return body.GPUs
	}
	waitFor := func(what string, ok func([]gpu.DeviceHealth) bool) []gpu.DeviceHealth {
		deadline := time.Now().Add(10 * time.Second)
		for {
			h := health()
			if ok(h) {
				return h
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /healthz still says %+v", what, h)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("at start", func(h []gpu.DeviceHealth) bool { return len(h) == 2 && h[0].Healthy && h[1].Healthy })
	r.d.Simulation().Device(1).Fail(nvml.ERROR_GPU_IS_LOST)
	h := waitFor("lost", func(h []gpu.DeviceHealth) bool { return !h[1].Healthy })
	if !h[0].Healthy || !strings.Contains(h[1].Reason, "ERROR_GPU_IS_LOST") || h[1].UUID == "" {
		t.Errorf("health %+v", h)
	}
	r.send("a", 3) // GPU 0 still meters
	r.d.Simulation().Device(1).Recover()
	waitFor("recovered", func(h []gpu.DeviceHealth) bool { return h[1].Healthy })
	if err := r.d.stop(); err != nil {
		t.Fatal(err)
	}
	logs := r.d.log.String()
	if strings.Count(logs, "GPU unhealthy") != 1 || strings.Count(logs, "GPU healthy again") != 1 {
		t.Errorf("want one line each way:\n%s", logs)
	}
	r.conserved(0, []string{"a"}, []string{"0"})
}

package gpu

import (
	"errors"
	"io"
	"log/slog"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/deadlabour/deadlabour/estimator"
)

type fakeClock struct{ t atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.t.Add(int64(d)) }

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// The real NVML on a machine without a driver: Open fails with a clear
// error naming the nvml.Init result, and calls nothing else.
func TestNoDriver(t *testing.T) {
	_, err := Open(nvml.New(nvml.WithLibraryPath("/nonexistent/libnvidia-ml.so.1")), discard(), time.Time{})
	if !errors.Is(err, ErrNoDriver) || !errors.Is(err, nvml.ERROR_LIBRARY_NOT_FOUND) {
		t.Fatalf("err = %v, want ErrNoDriver wrapping ERROR_LIBRARY_NOT_FOUND", err)
	}
	if got, want := err.Error(), "NVML is not available: nvml.Init returned ERROR_LIBRARY_NOT_FOUND"; got != want {
		t.Errorf("message = %q, want %q", got, want)
	}
}

func TestParseSimSpec(t *testing.T) {
	for in, want := range map[string]SimSpec{"h100:8": {"h100", 8}, "A100:1": {"a100", 1}, "b200": {"b200", 8}, "h200:16": {"h200", 16}} {
		if got, err := ParseSimSpec(in); err != nil || got != want {
			t.Errorf("ParseSimSpec(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"h100:0", "h100:17", "v100:8", "h100:x", ""} {
		if _, err := ParseSimSpec(bad); err == nil {
			t.Errorf("ParseSimSpec(%q) accepted", bad)
		}
	}
}

// A load trace through every simulated kind: the collector's counter
// intervals add up to the trace's exact integral, to the counter's
// millijoule resolution.
func TestSimulatedCounterMatchesTrace(t *testing.T) {
	for _, kind := range []string{"a100", "h100", "h200", "b200"} {
		t.Run(kind, func(t *testing.T) {
			clk := &fakeClock{}
			var load [4]atomic.Uint64 // load x 1000 per GPU
			model := PowerModel{IdleW: 70, TDPW: 700}
			sim, err := Simulate(SimSpec{Kind: kind, Count: 4}, model,
				func(i int) float64 { return float64(load[i].Load()) / 1000 }, clk.now)
			if err != nil {
				t.Fatal(err)
			}
			c, err := Open(sim, discard(), clk.now())
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Devices()) != 4 || !c.Devices()[0].EnergyCounter {
				t.Fatalf("devices = %+v", c.Devices())
			}
			want := make([]float64, 4)
			got := make([]float64, 4)
			c.Poll(clk.now()) // primes
			trace := []struct {
				dt   time.Duration
				load [4]uint64
			}{
				{100 * time.Millisecond, [4]uint64{0, 1000, 500, 0}},
				{250 * time.Millisecond, [4]uint64{1000, 1000, 0, 0}},
				{70 * time.Millisecond, [4]uint64{333, 0, 1000, 0}},
				{1 * time.Second, [4]uint64{0, 0, 0, 0}},
			}
			for step := 0; step < 40; step++ {
				tr := trace[step%len(trace)]
				// Power during the coming interval follows the load set now;
				// the simulator samples it at the first read.
				for i := range load {
					load[i].Store(tr.load[i])
				}
				for i := range 4 {
					sim.Device(i).GetPowerUsage() // the load is read at each read
					want[i] += model.Watts(float64(tr.load[i])/1000) * tr.dt.Seconds()
				}
				clk.advance(tr.dt)
				ivs, samples := c.Poll(clk.now())
				if len(ivs) != 4 || len(samples) != 4 {
					t.Fatalf("poll gave %d intervals, %d samples", len(ivs), len(samples))
				}
				for _, iv := range ivs {
					if iv.Method != estimator.MethodCounter {
						t.Fatalf("method = %q, want counter", iv.Method)
					}
				}
				for i, iv := range ivs {
					got[i] += iv.Joules
				}
			}
			for i := range 4 {
				if math.Abs(got[i]-want[i]) > 0.002 {
					t.Errorf("gpu %d: counter intervals %v J, trace integral %v J", i, got[i], want[i])
				}
			}
		})
	}
}

// noCounter is a device whose energy counter is unsupported.
type noCounter struct{ *SimDevice }

func (noCounter) GetTotalEnergyConsumption() (uint64, nvml.Return) {
	return 0, nvml.ERROR_NOT_SUPPORTED
}

type wrapped struct {
	*Simulation
	dev nvml.Device
}

func (w wrapped) DeviceGetCount() (int, nvml.Return) { return 1, nvml.SUCCESS }
func (w wrapped) DeviceGetHandleByIndex(int) (nvml.Device, nvml.Return) {
	return w.dev, nvml.SUCCESS
}

// Without a counter, power samples are integrated by trapezoid.
func TestPowerIntegralFallback(t *testing.T) {
	clk := &fakeClock{}
	load := atomic.Uint64{}
	sim, err := Simulate(SimSpec{Kind: "h100", Count: 1}, PowerModel{IdleW: 100, TDPW: 700},
		func(int) float64 { return float64(load.Load()) / 1000 }, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Open(wrapped{sim, noCounter{sim.Device(0)}}, discard(), clk.now())
	if err != nil {
		t.Fatal(err)
	}
	if c.Devices()[0].EnergyCounter {
		t.Fatal("counter reported as supported")
	}
	c.Poll(clk.now()) // 100 W
	load.Store(1000)
	clk.advance(time.Second)
	ivs, _ := c.Poll(clk.now()) // 700 W
	if len(ivs) != 1 || ivs[0].Method != estimator.MethodPowerIntegral || math.Abs(ivs[0].Joules-400) > 1e-9 {
		t.Fatalf("intervals = %+v, want one power_integral of 400 J", ivs)
	}
}

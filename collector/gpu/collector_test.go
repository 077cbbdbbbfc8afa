package gpu

import (
	"errors"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/testlog"
	"github.com/deadlabour/deadlabour/internal/testutil/basic"
)

type fakeClock struct{ t atomic.Int64 }

func newClock() *fakeClock {
	c := &fakeClock{}
	c.t.Store(time.Unix(1_700_000_000, 0).UnixNano())
	return c
}

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.t.Add(int64(d)) }

var kinds = []string{"a100", "h100", "h200", "b200"}

// The real NVML on a machine without a driver: Open fails with a clear
// error naming the nvml.Init result, and calls nothing else.
func TestNoDriver(t *testing.T) {
	_, err := Open(nvml.New(nvml.WithLibraryPath("/nonexistent/libnvidia-ml.so.1")), basic.Discard(), time.Time{})
	if !errors.Is(err, ErrNoDriver) || !errors.Is(err, nvml.ERROR_LIBRARY_NOT_FOUND) {
		t.Fatalf("err = %v, want ErrNoDriver wrapping ERROR_LIBRARY_NOT_FOUND", err)
	}
	if got, want := err.Error(), "NVML is not available: nvml.Init returned ERROR_LIBRARY_NOT_FOUND"; got != want {
		t.Errorf("message = %q, want %q", got, want)
	}
}

func TestParseSimSpec(t *testing.T) {
	p := DefaultCounterPeriod
	for in, want := range map[string]SimSpec{
		"h100:8": {"h100", 8, "", p}, "A100:1": {"a100", 1, "", p}, "b200": {"b200", 8, "", p},
		"h200:16": {"h200", 16, "", p}, "a100:2:mig=3g": {"a100", 2, "3g", p}, "h100:mig=1g": {"h100", 8, "1g", p},
	} {
		if got, err := ParseSimSpec(in); err != nil || got != want {
			t.Errorf("ParseSimSpec(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"h100:0", "h100:17", "v100:8", "h100:x", "", "h100:2:mig=5g", "h100:2:mig=3g:x"} {
		if _, err := ParseSimSpec(bad); err == nil {
			t.Errorf("ParseSimSpec(%q) accepted", bad)
		}
	}
}

// rig is a simulated node, its collector and a fake clock, polled by hand.
type rig struct {
	t    *testing.T
	clk  *fakeClock
	t0   time.Time
	sim  *Simulation
	c    *Collector
	logs *testlog.Buffer
	ivs  map[string][]estimator.Interval
	smp  map[string][]estimator.DeviceSample
}

func newRig(t *testing.T, spec SimSpec, load LoadFunc, setup func(*Simulation)) *rig {
	t.Helper()
	return newRigTimeout(t, spec, load, setup, readTimeout)
}

// newRigTimeout is newRig with a read deadline of its own.
func newRigTimeout(t *testing.T, spec SimSpec, load LoadFunc, setup func(*Simulation), timeout time.Duration) *rig {
	t.Helper()
	r := &rig{t: t, clk: newClock(), logs: &testlog.Buffer{}, ivs: map[string][]estimator.Interval{}, smp: map[string][]estimator.DeviceSample{}}
	r.t0 = r.clk.now()
	sim, err := Simulate(spec, PowerModel{IdleW: 70, TDPW: 700}, load, r.clk.now)
	if err != nil {
		t.Fatal(err)
	}
	r.sim = sim
	if setup != nil {
		setup(sim)
	}
	log := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if r.c, err = open(sim, log, r.clk.now(), timeout); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r
}

// poll advances the clock by dt and polls once.
func (r *rig) poll(dt time.Duration) []estimator.Interval {
	r.clk.advance(dt)
	ivs, samples := r.c.Poll(r.clk.now())
	for _, iv := range ivs {
		r.ivs[iv.Device] = append(r.ivs[iv.Device], iv)
	}
	for _, s := range samples {
		r.smp[s.Device] = append(r.smp[s.Device], s)
	}
	return ivs
}

// polls polls n times dt apart.
func (r *rig) polls(n int, dt time.Duration) {
	for range n {
		r.poll(dt)
	}
}

func (r *rig) sum(dev string) float64 {
	var j float64
	for _, iv := range r.ivs[dev] {
		j += iv.Joules
	}
	return j
}

// contiguous checks that a device's intervals tile [from, to) without gaps.
func (r *rig) contiguous(dev string, from, to time.Time) {
	r.t.Helper()
	ivs := r.ivs[dev]
	if len(ivs) == 0 {
		r.t.Fatalf("device %s: no intervals", dev)
	}
	if !ivs[0].Start.Equal(from) || !ivs[len(ivs)-1].End.Equal(to) {
		r.t.Errorf("device %s: intervals span %v - %v, want %v - %v", dev, ivs[0].Start.Sub(r.t0), ivs[len(ivs)-1].End.Sub(r.t0), from.Sub(r.t0), to.Sub(r.t0))
	}
	for i := 1; i < len(ivs); i++ {
		if !ivs[i].Start.Equal(ivs[i-1].End) {
			r.t.Errorf("device %s: interval %d starts at %v, the previous ended at %v", dev, i, ivs[i].Start.Sub(r.t0), ivs[i-1].End.Sub(r.t0))
		}
	}
}

func (r *rig) methods(dev string) map[estimator.Method]int {
	out := map[estimator.Method]int{}
	for _, iv := range r.ivs[dev] {
		out[iv.Method]++
	}
	return out
}

// near fails unless got is want to the counter's resolution (1 mJ a read,
// so 2 mJ for a difference) plus float rounding.
func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 0.002+1e-9*math.Abs(want) {
		t.Errorf("%s: %.6f J, want %.6f J (the trace's exact integral)", what, got, want)
	}
}

// Steady and bursty traces on every kind, counter moving at every read:
// the intervals tile the run and add up to the trace's exact integral;
// power is read from the instant field.
func TestTraceSteadyAndBursty(t *testing.T) {
	steady := Trace{{time.Hour, 250}}
	bursty := Trace{{30 * ms, 700}, {70 * ms, 90}, {15 * ms, 650}, {235 * ms, 70}, {400 * ms, 700}, {1 * ms, 120}, {249 * ms, 400}, {time.Hour, 80}}
	for _, kind := range kinds {
		for name, tr := range map[string]Trace{"steady": steady, "bursty": bursty} {
			t.Run(kind+"/"+name, func(t *testing.T) {
				r := newRig(t, SimSpec{Kind: kind, Count: 2}, nil, func(s *Simulation) { s.Device(0).SetTrace(tr) })
				if p := r.c.Devices()[0].Power; p != PowerInstant {
					t.Errorf("power kind %q, want instant", p)
				}
				r.polls(40, 37*ms)
				end := r.clk.now()
				r.contiguous("0", r.t0, end)
				if m := r.methods("0"); m[estimator.MethodCounter] != 40 || len(m) != 1 {
					t.Errorf("methods %v, want 40 counter intervals", m)
				}
				near(t, "GPU 0", r.sum("0"), tr.Energy(end.Sub(r.t0)))
				// GPU 1 draws idle power from the model all along.
				near(t, "GPU 1", r.sum("1"), 70*end.Sub(r.t0).Seconds())
			})
		}
	}
}

// A counter that moves every 100 ms, polled every 40 ms: polls that see no
// change close nothing, and each increment is spread over the whole wait.
// Nothing is lost: the sum is the trace's integral up to the last update.
func TestTraceCounterStalls(t *testing.T) {
	tr := Trace{{130 * ms, 600}, {500 * ms, 100}, {260 * ms, 690}, {time.Hour, 300}}
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			r := newRig(t, SimSpec{Kind: kind, Count: 1, CounterPeriod: 100 * ms}, nil, func(s *Simulation) { s.Device(0).SetTrace(tr) })
			const n = 50
			r.polls(n, 40*ms)
			ivs := r.ivs["0"]
			if len(ivs) >= n || len(ivs) < n/4 {
				t.Fatalf("%d intervals from %d polls: want fewer (stalls close nothing)", len(ivs), n)
			}
			for i, iv := range ivs {
				if iv.Joules <= 0 || iv.Method != estimator.MethodCounter {
					t.Errorf("interval %d: %v J by %s; a stall must not give zero", i, iv.Joules, iv.Method)
				}
				if i > 0 && iv.End.Sub(iv.Start) < 80*ms {
					t.Errorf("interval %d lasts %v: an increment must span the wait since the previous one", i, iv.End.Sub(iv.Start))
				}
			}
			last := ivs[len(ivs)-1].End
			r.contiguous("0", r.t0, last)
			// The counter showed the energy at its last update before last.
			update := last.Sub(r.t0) / (100 * ms) * (100 * ms)
			near(t, "stalled counter", r.sum("0"), tr.Energy(update))

			// At shutdown the stall since the last increment closes with 0 J.
			r.poll(10 * ms)
			flushed := r.c.Flush()
			if len(flushed) != 1 || flushed[0].Joules != 0 || !flushed[0].Start.Equal(last) || !flushed[0].End.Equal(r.clk.now()) {
				t.Errorf("flush = %+v, want one 0 J interval from %v to the last poll", flushed, last.Sub(r.t0))
			}
		})
	}
}

// A counter reset (driver reload) mid-run: that interval is integrated from
// instant power, logged once, counted in the health; the total is still
// the exact integral (power is steady around the reset, so the trapezoid
// is exact there).
func TestTraceCounterReset(t *testing.T) {
	tr := Trace{{time.Second, 500}, {time.Hour, 220}}
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			r := newRig(t, SimSpec{Kind: kind, Count: 1}, nil, func(s *Simulation) { s.Device(0).SetTrace(tr) })
			r.polls(15, 100*ms)
			r.sim.Device(0).ResetCounter()
			r.polls(5, 100*ms)
			r.sim.Device(0).ResetCounter()
			r.polls(5, 100*ms)
			end := r.clk.now()
			r.contiguous("0", r.t0, end)
			if m := r.methods("0"); m[estimator.MethodPowerIntegral] != 2 || m[estimator.MethodCounter] != 23 {
				t.Errorf("methods %v, want 2 power_integral (the resets) and 23 counter", m)
			}
			near(t, "with resets", r.sum("0"), tr.Energy(end.Sub(r.t0)))
			if n := strings.Count(r.logs.String(), "went backwards"); n != 1 {
				t.Errorf("%d log lines about the reset, want 1 (repeats at debug):\n%s", n, r.logs)
			}
			if h := r.c.Health()[0]; h.CounterResets != 2 || !h.Healthy {
				t.Errorf("health %+v, want healthy with 2 counter resets", h)
			}
		})
	}
}

// No energy counter: every poll is a trapezoid of instant power samples.
// Its result is exactly the trapezoid of the trace at the poll times, and
// within the trapezoid's error bound (half of each step change times the
// poll) of the exact integral; exact where the trace is steady.
func TestTraceUnsupportedCounter(t *testing.T) {
	tr := Trace{{time.Second, 300}, {400 * ms, 650}, {time.Hour, 120}}
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			r := newRig(t, SimSpec{Kind: kind, Count: 1}, nil, func(s *Simulation) {
				s.Device(0).SetTrace(tr)
				s.Device(0).SetNoCounter(true)
			})
			if d := r.c.Devices()[0]; d.EnergyCounter || d.Power != PowerInstant {
				t.Fatalf("device %+v: want no counter, instant power", d)
			}
			const dt = 100 * ms
			r.polls(30, dt)
			end := r.clk.now()
			r.contiguous("0", r.t0, end)
			if m := r.methods("0"); m[estimator.MethodPowerIntegral] != 30 {
				t.Errorf("methods %v, want 30 power_integral", m)
			}
			var trapz float64
			for at := time.Duration(0); at < end.Sub(r.t0); at += dt {
				trapz += (tr.At(at) + tr.At(at+dt)) / 2 * dt.Seconds()
			}
			near(t, "trapezoid", r.sum("0"), trapz)
			bound := (650-300)/2*dt.Seconds() + (650-120)/2*dt.Seconds()
			if diff := math.Abs(r.sum("0") - tr.Energy(end.Sub(r.t0))); diff > bound+1e-6 {
				t.Errorf("trapezoid off the exact integral by %v J, bound %v J", diff, bound)
			}
			// In a steady stretch every interval is exact.
			for _, iv := range r.ivs["0"] {
				a, b := iv.Start.Sub(r.t0), iv.End.Sub(r.t0)
				if b < time.Second || a >= 1400*ms {
					near(t, "steady interval", iv.Joules, tr.Energy(b)-tr.Energy(a))
				}
			}
		})
	}
}

// Without FI_DEV_POWER_INSTANT, GetPowerUsage is used: instant on GA100
// (A100), a one-second average on Hopper and Blackwell.
func TestPowerKind(t *testing.T) {
	want := map[string]PowerKind{"a100": PowerUsageInstant, "h100": PowerUsageAverage, "h200": PowerUsageAverage, "b200": PowerUsageAverage}
	for _, kind := range kinds {
		r := newRig(t, SimSpec{Kind: kind, Count: 1}, nil, func(s *Simulation) {
			s.Device(0).SetNoInstantPower(true)
			s.Device(0).SetTrace(Trace{{time.Second, 100}, {time.Hour, 600}})
		})
		if got := r.c.Devices()[0].Power; got != want[kind] {
			t.Errorf("%s: power kind %q, want %q", kind, got, want[kind])
		}
		r.polls(15, 100*ms) // 0.5 s into the 600 W step
		got := r.smp["0"][len(r.smp["0"])-1].PowerW
		wantW := map[PowerKind]float64{PowerUsageInstant: 600, PowerUsageAverage: 350}[want[kind]]
		if math.Abs(got-wantW) > 0.01 {
			t.Errorf("%s: power %v W, want %v W", kind, got, wantW)
		}
	}
}

// A GPU lost mid-run: marked unhealthy with the reason, one log line each
// way, retried with backoff (a handful of calls, not one per poll), while
// the other GPU carries on. Its counter kept counting, so the first
// interval after it came back spans the outage and nothing is lost.
func TestTraceGPULost(t *testing.T) {
	for _, kind := range kinds {
		for _, ret := range []nvml.Return{nvml.ERROR_GPU_IS_LOST, nvml.ERROR_UNKNOWN, nvml.ERROR_TIMEOUT} {
			t.Run(kind+"/"+ret.Error(), func(t *testing.T) {
				tr := Trace{{time.Hour, 333}}
				r := newRig(t, SimSpec{Kind: kind, Count: 2}, nil, func(s *Simulation) {
					s.Device(0).SetTrace(tr)
					s.Device(1).SetTrace(tr)
				})
				r.polls(10, 100*ms)
				r.sim.Device(1).Fail(ret)
				lostAt := r.clk.now()
				r.polls(200, 100*ms) // 20 s
				h := r.c.Health()
				if !h[0].Healthy || h[1].Healthy || !strings.Contains(h[1].Reason, ret.Error()) || !h[1].Since.After(lostAt) {
					t.Errorf("health %+v, want GPU 1 unhealthy since after %v because of %v", h, lostAt.Sub(r.t0), ret)
				}
				if n := r.c.Unhealthy(); n != 1 {
					t.Errorf("%d unhealthy GPUs, want 1", n)
				}
				if calls := r.sim.Device(1).FailedCalls(); calls > 8 {
					t.Errorf("%d calls to the failed GPU in 20 s: want backoff (1, 2, 4, 8 s ...), not a busy loop", calls)
				}
				if got := r.ivs["0"][len(r.ivs["0"])-1].End; !got.Equal(r.clk.now()) {
					t.Errorf("GPU 0 stopped at %v: the healthy GPU must carry on", got.Sub(r.t0))
				}
				r.sim.Device(1).Recover()
				r.polls(300, 100*ms) // the next retry is at most a minute away
				end := r.clk.now()
				if h := r.c.Health()[1]; !h.Healthy {
					t.Errorf("GPU 1 still unhealthy after it recovered: %+v", h)
				}
				logs := r.logs.String()
				if strings.Count(logs, "GPU unhealthy") != 1 || strings.Count(logs, "GPU healthy again") != 1 {
					t.Errorf("want one line each way, got:\n%s", logs)
				}
				for _, dev := range []string{"0", "1"} {
					r.contiguous(dev, r.t0, end)
					near(t, "GPU "+dev, r.sum(dev), tr.Energy(end.Sub(r.t0)))
				}
			})
		}
	}
}

// A GPU lost and reset meanwhile (its counter restarted): the outage is a
// gap (energy nobody measured), not a guess; the rest is exact.
func TestGPULostWithReset(t *testing.T) {
	tr := Trace{{time.Hour, 400}}
	r := newRig(t, SimSpec{Kind: "h100", Count: 1}, nil, func(s *Simulation) { s.Device(0).SetTrace(tr) })
	r.polls(10, 100*ms)
	lastGood := r.clk.now()
	r.sim.Device(0).Fail(nvml.ERROR_GPU_IS_LOST)
	r.polls(30, 100*ms)
	r.sim.Device(0).ResetCounter()
	r.sim.Device(0).Recover()
	r.polls(100, 100*ms)
	ivs := r.ivs["0"]
	back := -1
	for i := 1; i < len(ivs); i++ {
		if !ivs[i].Start.Equal(ivs[i-1].End) {
			back = i
		}
	}
	if back < 0 || !ivs[back-1].End.Equal(lastGood) {
		t.Fatalf("want one gap starting at %v", lastGood.Sub(r.t0))
	}
	end := r.clk.now()
	want := tr.Energy(lastGood.Sub(r.t0)) + tr.Energy(end.Sub(r.t0)) - tr.Energy(ivs[back].Start.Sub(r.t0))
	near(t, "around the gap", r.sum("0"), want)
}

// NVML calls that do not return within the read deadline (timeouts) mark
// the GPU unhealthy without holding the poll. What the late read found is
// dropped, the GPU is not asked again before its retry, and once it
// answers its counter covers the whole wait.
func TestSlowCalls(t *testing.T) {
	r := newRigTimeout(t, SimSpec{Kind: "h100", Count: 1}, nil, nil, 50*ms)
	dev := r.sim.Device(0)
	t.Cleanup(dev.Unblock)
	dev.Block()
	if ivs := r.pollWithin(100*ms, 10*time.Second); len(ivs) != 0 {
		t.Fatalf("intervals %+v from a read that did not return", ivs)
	}
	if h := r.c.Health()[0]; h.Healthy || !strings.Contains(h.Reason, "did not return within 50ms") {
		t.Errorf("health %+v, want unhealthy for calls that did not return", h)
	}
	dev.Unblock()
	for len(r.c.answers) == 0 { // the late answer
		time.Sleep(ms)
	}
	_, _, reads := dev.CounterReads()
	for range 5 {
		if ivs := r.poll(100 * ms); len(ivs) != 0 {
			t.Errorf("polled again before the retry: %+v", ivs)
		}
	}
	if _, _, n := dev.CounterReads(); n != reads {
		t.Errorf("%d counter reads before the retry, want none", n-reads)
	}
	r.polls(10, 100*ms)
	if h := r.c.Health()[0]; !h.Healthy {
		t.Errorf("health %+v after the retry, want healthy", h)
	}
	near(t, "across the wait", r.sum("0"), 70*r.clk.now().Sub(r.t0).Seconds())
	r.contiguous("0", r.t0, r.clk.now())
}

// MIG on: the board's counter is split among its instances, never copied.
// With GPM (Hopper, Blackwell) by SM utilisation times SMs; without (A100)
// equally among the instances running processes; with no activity all of
// it stays on the board.
func TestTraceMIG(t *testing.T) {
	tr := Trace{{300 * ms, 650}, {time.Hour, 410}}
	load := func(dev string) float64 { return map[string]float64{"0/0": 1, "0/1": 0.25}[dev] }
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			r := newRig(t, SimSpec{Kind: kind, Count: 1, MIG: "3g", CounterPeriod: 50 * ms}, load, func(s *Simulation) {
				s.Device(0).SetTrace(tr)
				if kind == "a100" {
					s.Device(0).SetProcesses([]nvml.ProcessInfo{{Pid: 77, GpuInstanceId: 0}, {Pid: 78, GpuInstanceId: 1}})
				}
			})
			d := r.c.Devices()[0]
			if !d.MIG || len(d.Instances) != 2 || d.Slices != 7 || d.Instances[0].Profile == "" {
				t.Fatalf("device %+v: want MIG with two 3g instances of 7 slices", d)
			}
			wantAct := map[bool]string{true: ActivityProcesses, false: ActivityGPM}[kind == "a100"]
			if d.Activity != wantAct {
				t.Errorf("activity %q, want %q", d.Activity, wantAct)
			}
			if got := d.Shares(); math.Abs(got["0"]-1.0/7) > 1e-12 || math.Abs(got["0/0"]-3.0/7) > 1e-12 || len(got) != 3 {
				t.Errorf("shares %v, want board 1/7 and 3/7 each", got)
			}
			r.polls(30, 70*ms)
			last := r.ivs["0"][len(r.ivs["0"])-1].End
			board := tr.Energy((last.Sub(r.t0)) / (50 * ms) * (50 * ms))
			for _, dev := range []string{"0", "0/0", "0/1"} {
				r.contiguous(dev, r.t0, last)
			}
			total := r.sum("0") + r.sum("0/0") + r.sum("0/1")
			near(t, "board + instances", total, board)
			want := map[string]float64{"0": 0, "0/0": board * 0.8, "0/1": board * 0.2}
			if kind == "a100" {
				want = map[string]float64{"0": 0, "0/0": board / 2, "0/1": board / 2}
			}
			for dev, w := range want {
				near(t, "share of "+dev, r.sum(dev), w)
			}
			if s := r.smp["0/0"]; len(s) == 0 || s[0].MemTotalBytes == 0 {
				t.Errorf("no telemetry of instance 0/0: %+v", s)
			} else if kind != "a100" && math.Abs(s[len(s)-1].UtilGPU-100) > 1e-9 {
				t.Errorf("instance 0/0 SM utilisation %v, want 100", s[len(s)-1].UtilGPU)
			}
		})
	}
	t.Run("hopper without GPM", func(t *testing.T) {
		r := newRig(t, SimSpec{Kind: "h100", Count: 1, MIG: "1g"}, nil, func(s *Simulation) {
			s.Device(0).SetTrace(tr)
			s.Device(0).SetGPM(false)
			s.Device(0).SetProcesses([]nvml.ProcessInfo{{Pid: 5, GpuInstanceId: 2}, {Pid: 6, GpuInstanceId: 4}, {Pid: 7, GpuInstanceId: 4}})
		})
		if d := r.c.Devices()[0]; d.Activity != ActivityProcesses || len(d.Instances) != 7 {
			t.Fatalf("device %+v: want 7 instances split by processes", d)
		}
		r.polls(10, 100*ms)
		board := tr.Energy(r.clk.now().Sub(r.t0))
		for dev, want := range map[string]float64{"0": 0, "0/2": board / 2, "0/4": board / 2, "0/0": 0, "0/6": 0} {
			near(t, "share of "+dev, r.sum(dev), want)
		}
	})
	t.Run("idle instances", func(t *testing.T) {
		r := newRig(t, SimSpec{Kind: "a100", Count: 1, MIG: "2g"}, nil, func(s *Simulation) { s.Device(0).SetTrace(tr) })
		r.polls(10, 100*ms)
		end := r.clk.now()
		near(t, "board", r.sum("0"), tr.Energy(end.Sub(r.t0)))
		for _, in := range r.c.Devices()[0].Instances {
			if r.sum(in.ID) != 0 || len(r.ivs[in.ID]) != 10 {
				t.Errorf("idle instance %s: %v J in %d intervals, want 0 J in 10", in.ID, r.sum(in.ID), len(r.ivs[in.ID]))
			}
		}
	})
}

// Upstreams map to GPUs by the NVML process list: a plain GPU by index, a
// MIG instance by its GPU-instance id.
func TestProcessDevices(t *testing.T) {
	r := newRig(t, SimSpec{Kind: "h100", Count: 3}, nil, func(s *Simulation) {
		s.Device(0).SetProcesses([]nvml.ProcessInfo{{Pid: 10, GpuInstanceId: noInstance}})
		s.Device(1).SetProcesses([]nvml.ProcessInfo{{Pid: 11, GpuInstanceId: noInstance}, {Pid: 10, GpuInstanceId: noInstance}})
		s.Device(2).SetProcesses([]nvml.ProcessInfo{{Pid: 12}, {Pid: 13, GpuInstanceId: 1}})
		if err := s.Device(2).EnableMIG("3g"); err != nil {
			t.Fatal(err)
		}
	})
	for _, tc := range []struct {
		pids []int
		want []string
	}{
		{[]int{10}, []string{"0", "1"}}, {[]int{11}, []string{"1"}}, {[]int{13, 11}, []string{"1", "2/1"}},
		{[]int{12}, []string{"2/0"}}, {[]int{99}, nil}, {nil, nil},
	} {
		got, err := r.c.ProcessDevices(tc.pids)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ProcessDevices(%v) = %v, %v; want %v", tc.pids, got, err, tc.want)
		}
	}
	r.sim.Device(1).Fail(nvml.ERROR_GPU_IS_LOST)
	r.poll(100 * ms)
	if got, _ := r.c.ProcessDevices([]int{10}); !slices.Equal(got, []string{"0"}) {
		t.Errorf("with GPU 1 lost: %v, want [0] (an unhealthy GPU is not asked)", got)
	}
}

// Probe's view of the simulated kinds: names, UUIDs, counters, memory.
func TestDevices(t *testing.T) {
	for _, kind := range kinds {
		r := newRig(t, SimSpec{Kind: kind, Count: 2}, nil, nil)
		ds := r.c.Devices()
		if len(ds) != 2 || r.c.Driver() == "" {
			t.Fatalf("%s: devices %+v, driver %q", kind, ds, r.c.Driver())
		}
		for i, d := range ds {
			if d.ID != []string{"0", "1"}[i] || !strings.HasPrefix(d.UUID, "GPU-5e1a") || !d.EnergyCounter || d.MemoryBytes == 0 ||
				!strings.Contains(strings.ToLower(d.Name), kind[:4]) || d.MIG {
				t.Errorf("%s: device %+v", kind, d)
			}
		}
	}
}

// BenchmarkPoll is one poll of 8 simulated H100s (counter, instant power,
// utilisation, memory, temperature, clocks, power limit, throttle), against
// BenchmarkSimReads: the same NVML calls on the simulator alone, which is
// the floor the collector adds to. See docs/benchmarks.md.
func BenchmarkPoll(b *testing.B) {
	clk := newClock()
	sim, err := Simulate(SimSpec{Kind: "h100", Count: 8}, PowerModel{IdleW: 70, TDPW: 700}, func(string) float64 { return 0.5 }, clk.now)
	if err != nil {
		b.Fatal(err)
	}
	c, err := Open(sim, basic.Discard(), clk.now())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ReportAllocs()
	for b.Loop() {
		clk.advance(100 * ms)
		c.Poll(clk.now())
	}
}

func BenchmarkSimReads(b *testing.B) {
	clk := newClock()
	sim, err := Simulate(SimSpec{Kind: "h100", Count: 8}, PowerModel{IdleW: 70, TDPW: 700}, func(string) float64 { return 0.5 }, clk.now)
	if err != nil {
		b.Fatal(err)
	}
	fv := make([]nvml.FieldValue, 1)
	b.ReportAllocs()
	for b.Loop() {
		clk.advance(100 * ms)
		for i := range 8 {
			d := sim.Device(i)
			d.GetTotalEnergyConsumption()
			fv[0] = nvml.FieldValue{FieldId: nvml.FI_DEV_POWER_INSTANT}
			d.GetFieldValues(fv)
			d.GetUtilizationRates()
			d.GetMemoryInfo()
			d.GetTemperature(nvml.TEMPERATURE_GPU)
			d.GetClockInfo(nvml.CLOCK_SM)
			d.GetEnforcedPowerLimit()
			d.GetCurrentClocksEventReasons()
		}
	}
}

var _ io.Writer = (*testlog.Buffer)(nil)

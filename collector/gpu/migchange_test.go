package gpu

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/deadlabour/deadlabour/estimator"
)

// meterLedger is a real ledger over the device ids the daemon builds its
// parameters from at start (DeviceInfo.Shares of Devices after Open).
type meterLedger struct {
	t     *testing.T
	l     *estimator.Ledger
	known map[string]bool
	fed   int // intervals of the rig fed so far, by device
	seen  map[string]int
}

func newMeterLedger(t *testing.T, devs []DeviceInfo) *meterLedger {
	t.Helper()
	p := estimator.Params{PUE: 1, Devices: map[string]estimator.DeviceParams{}}
	known := map[string]bool{}
	for _, d := range devs {
		for id := range d.Shares() {
			p.Devices[id] = estimator.DeviceParams{}
			known[id] = true
		}
	}
	l, err := estimator.New(p)
	if err != nil {
		t.Fatal(err)
	}
	return &meterLedger{t: t, l: l, known: known, seen: map[string]int{}}
}

// feed hands the ledger every interval the rig got since the last feed;
// it must take each one.
func (m *meterLedger) feed(r *rig) {
	m.t.Helper()
	devs := make([]string, 0, len(r.ivs))
	for dev := range r.ivs {
		devs = append(devs, dev)
	}
	slices.Sort(devs)
	for _, dev := range devs {
		for _, iv := range r.ivs[dev][m.seen[dev]:] {
			if err := m.l.AddInterval(iv); err != nil {
				m.t.Fatalf("the ledger refused an interval: %v", err)
			}
		}
		m.seen[dev] = len(r.ivs[dev])
	}
}

// idle closes the ledger (no requests ran: every joule is idle) and sums
// the idle energy of a GPU's ids.
func (m *meterLedger) idle(gpu string) float64 {
	var j float64
	for _, s := range m.l.Close().Idle {
		if board, _, _ := strings.Cut(s.Device, "/"); board == gpu {
			j += s.Joules
		}
	}
	return j
}

// The MIG layout of a GPU changes at run time (nvidia-smi mig -dci -dgi,
// then -cgi with another profile): within a rescan the collector finds the
// new instances (Devices, their telemetry, process lists), but the ledger
// knows only the ids of the layout at start. So the new instances' energy
// is charged to the board's id, the instances gone get 0 J intervals over
// the same spans (their requests settle), one line says to restart, and a
// real ledger takes every interval: not a joule of the counter is lost.
// The other GPU is untouched.
func TestMIGReconfigured(t *testing.T) {
	tr := Trace{{700 * ms, 480}, {time.Hour, 360}}
	load := func(dev string) float64 {
		return map[string]float64{"0/0": 1, "0/1": 0.5, "1/0": 1, "1/1": 0.5, "0/2": 1, "0/3": 0.25}[dev]
	}
	for _, kind := range []string{"a100", "h100"} {
		t.Run(kind, func(t *testing.T) {
			r := newRig(t, SimSpec{Kind: kind, Count: 2, MIG: "3g"}, load, func(s *Simulation) {
				s.Device(0).SetTrace(tr)
				s.Device(1).SetTrace(tr)
			})
			led := newMeterLedger(t, r.c.Devices())
			r.polls(20, 100*ms)
			led.feed(r)
			if err := r.sim.Device(0).ReconfigureMIG("2g"); err != nil {
				t.Fatal(err)
			}
			changed := r.clk.now()
			r.polls(300, 100*ms) // 30 s
			led.feed(r)
			end := r.clk.now()

			var ids []string
			for _, in := range r.c.Devices()[0].Instances {
				ids = append(ids, in.ID)
			}
			if !slices.Equal(ids, []string{"0/2", "0/3", "0/4"}) {
				t.Fatalf("instances of GPU 0 after the change: %v, want 0/2 0/3 0/4", ids)
			}
			if s := r.smp["0/2"]; len(s) == 0 {
				t.Errorf("no telemetry of the new instance 0/2")
			}
			for dev := range r.ivs {
				if !led.known[dev] {
					t.Errorf("intervals of %s, which the ledger does not know", dev)
				}
			}
			for _, dev := range []string{"0", "0/0", "0/1", "1", "1/0", "1/1"} {
				r.contiguous(dev, r.t0, end)
			}
			want := tr.Energy(end.Sub(r.t0))
			near(t, "GPU 0: board + instances", r.sum("0")+r.sum("0/0")+r.sum("0/1"), want)
			near(t, "GPU 1: board + instances", r.sum("1")+r.sum("1/0")+r.sum("1/1"), want)
			// Once the change is seen (within a rescan), the old instances
			// get 0 J and the board all of it: the new ones are busy.
			seen := changed.Add(migRescan + 100*ms)
			for _, dev := range []string{"0/0", "0/1"} {
				for _, iv := range r.ivs[dev] {
					if !iv.Start.Before(seen) && iv.Joules != 0 {
						t.Fatalf("%s: %v J after the change, want 0", dev, iv.Joules)
					}
				}
			}
			if got := r.sum("1/0") + r.sum("1/1"); got < want*0.99 {
				t.Errorf("GPU 1's instances took %v J of %v: its split must not change", got, want)
			}
			near(t, "GPU 0's idle in the ledger", led.idle("0"), want)

			// A process on a new instance is charged from the board.
			pid := 1<<22 + 2 // the simulator's made-up process on instance 2 of GPU 0
			if got, err := r.c.ProcessDevices([]int{pid}); err != nil || !slices.Equal(got, []string{"0"}) {
				t.Errorf("ProcessDevices on the new instance: %v, %v; want [0] (the board)", got, err)
			}
			if n := strings.Count(r.logs.String(), "MIG layout"); n != 1 {
				t.Errorf("%d lines about the MIG layout, want 1:\n%s", n, r.logs)
			}
		})
	}
}

// MIG mode turned off at run time: the board's id takes the whole counter,
// the instances the ledger knows get 0 J intervals.
func TestMIGDisabled(t *testing.T) {
	tr := Trace{{time.Hour, 400}}
	r := newRig(t, SimSpec{Kind: "h100", Count: 1, MIG: "3g"}, func(string) float64 { return 1 }, func(s *Simulation) { s.Device(0).SetTrace(tr) })
	led := newMeterLedger(t, r.c.Devices())
	r.polls(10, 100*ms)
	r.sim.Device(0).DisableMIG()
	r.polls(200, 100*ms)
	led.feed(r)
	end := r.clk.now()
	if d := r.c.Devices()[0]; d.MIG || len(d.Instances) != 0 {
		t.Errorf("device %+v: want MIG off", d)
	}
	for _, dev := range []string{"0", "0/0", "0/1"} {
		r.contiguous(dev, r.t0, end)
	}
	near(t, "board + instances", r.sum("0")+r.sum("0/0")+r.sum("0/1"), tr.Energy(end.Sub(r.t0)))
	near(t, "idle in the ledger", led.idle("0"), tr.Energy(end.Sub(r.t0)))
}

// A GPU in MIG mode that fails at start is known to the ledger by its
// board id only: when it answers, its instances are found, and their
// energy goes to the board id, which the ledger takes.
func TestMIGFoundAfterStart(t *testing.T) {
	tr := Trace{{time.Hour, 250}}
	r := newRig(t, SimSpec{Kind: "h100", Count: 2, MIG: "3g"}, func(string) float64 { return 1 }, func(s *Simulation) {
		s.Device(1).SetTrace(tr)
		s.Device(1).Fail(nvml.ERROR_GPU_IS_LOST)
	})
	if d := r.c.Devices()[1]; d.MIG || r.c.Health()[1].Healthy {
		t.Fatalf("GPU 1 at start: %+v, %+v; want unknown and unhealthy", d, r.c.Health()[1])
	}
	led := newMeterLedger(t, r.c.Devices())
	r.sim.Device(1).Recover()
	r.polls(50, 100*ms)
	led.feed(r)
	if d := r.c.Devices()[1]; !d.MIG || len(d.Instances) != 2 || !d.EnergyCounter {
		t.Fatalf("GPU 1 after it answered: %+v, want MIG with 2 instances and its counter", d)
	}
	ivs := r.ivs["1"]
	if len(ivs) == 0 {
		t.Fatal("no intervals of GPU 1")
	}
	for dev := range r.ivs {
		if !led.known[dev] {
			t.Errorf("intervals of %s, which the ledger does not know", dev)
		}
	}
	end := r.clk.now()
	r.contiguous("1", ivs[0].Start, end)
	near(t, "GPU 1 on its board id", r.sum("1"), tr.Energy(end.Sub(r.t0))-tr.Energy(ivs[0].Start.Sub(r.t0)))
}

// A GPU in MIG mode whose MIG devices NVML will not list: its energy goes
// to the board, and one warning says so with NVML's reason.
func TestMIGNotListed(t *testing.T) {
	r := newRig(t, SimSpec{Kind: "h100", Count: 1, MIG: "3g"}, func(string) float64 { return 1 }, func(s *Simulation) {
		s.Device(0).RefuseMIGListing(nvml.ERROR_NO_PERMISSION)
	})
	r.polls(5, 100*ms)
	if d := r.c.Devices()[0]; len(d.Instances) != 0 || len(r.ivs["0"]) == 0 {
		t.Errorf("device %+v with %d board intervals: want no instances, the board metered", d, len(r.ivs["0"]))
	}
	logs := r.logs.String()
	if n := strings.Count(logs, "its MIG devices cannot be listed"); n != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", n, logs)
	}
	if strings.Contains(logs, "err=SUCCESS") || !strings.Contains(logs, fmt.Sprint(nvml.ERROR_NO_PERMISSION)) {
		t.Errorf("the warning does not give NVML's reason:\n%s", logs)
	}
}

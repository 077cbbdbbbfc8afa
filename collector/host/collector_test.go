package host

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs/sysfs"
	"golang.org/x/tools/txtar"

	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/testlog"
	"github.com/deadlabour/deadlabour/internal/testutil/basic"
)

// fixture extracts testdata/NAME.txtar (a sysfs tree, node_exporter style)
// into a temporary directory and returns the sysfs root in it.
func fixture(t *testing.T, name string) string {
	t.Helper()
	a, err := txtar.ParseFile(filepath.Join("testdata", name+".txtar"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, f := range a.Files {
		p := filepath.Join(dir, f.Name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "sys")
}

func zoneFile(root, dir, file string) string {
	return filepath.Join(root, "class/powercap", dir, file)
}

func readUint(t *testing.T, path string) uint64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func writeUint(t *testing.T, path string, v uint64) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strconv.FormatUint(v, 10)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Which zones each fixture tree gives: package and DRAM, each once; never
// core, uncore (inside the package), psys (around everything) or the MMIO
// repeat of a package. A VM falls back to the model, saying why.
func TestFixtureZones(t *testing.T) {
	for _, tc := range []struct {
		fixture string
		zones   []string
		reason  string
	}{
		{"xeon-2s", []string{"package-0", "dram-0", "package-1", "dram-1"}, ""},
		{"intel-client", []string{"package-0", "dram-0"}, ""},
		{"epyc-2s", []string{"package-0", "package-1"}, ""},
		{"vm", nil, "no RAPL powercap zones under"},
	} {
		t.Run(tc.fixture, func(t *testing.T) {
			c := Open(context.Background(), Options{SysfsRoot: fixture(t, tc.fixture), UseRAPL: true, CPUTDPWatts: 300, CPUIdleWatts: 100}, basic.Discard())
			var got []string
			for _, z := range c.Zones() {
				got = append(got, z.Name)
				if strings.Contains(z.Path, "mmio") || z.MaxMicrojoules == 0 {
					t.Errorf("zone %+v", z)
				}
			}
			if !slices.Equal(got, tc.zones) {
				t.Errorf("zones %v, want %v", got, tc.zones)
			}
			if !strings.Contains(c.Fallback(), tc.reason) || (tc.reason == "") != (c.Method() == estimator.MethodCounter) {
				t.Errorf("method %q, fallback %q; want reason %q", c.Method(), c.Fallback(), tc.reason)
			}
		})
	}
}

// A power trace on the Xeon fixture: each interval is exactly the zones'
// energy over it, including a package counter that wraps at
// max_energy_range_uj.
func TestRAPLTraceWithWrap(t *testing.T) {
	root := fixture(t, "xeon-2s")
	dirs := []string{"intel-rapl:0", "intel-rapl:0:0", "intel-rapl:1", "intel-rapl:1:0"}
	// Package 0 sits 0.5 J below its wrap.
	max0 := readUint(t, zoneFile(root, dirs[0], "max_energy_range_uj"))
	writeUint(t, zoneFile(root, dirs[0], "energy_uj"), max0-500_000)
	ctx := context.Background()
	c := Open(ctx, Options{SysfsRoot: root, UseRAPL: true}, basic.Discard())
	t0 := time.Unix(100, 0)
	if _, ok, err := c.Poll(ctx, t0); ok || err != nil {
		t.Fatalf("first poll: ok=%v err=%v, want priming only", ok, err)
	}
	// Watts per zone per 100 ms step.
	trace := [][4]uint64{{310, 22, 290, 20}, {355, 30, 120, 9}, {90, 8, 95, 8}, {700, 40, 701, 41}}
	now := t0
	for step, w := range trace {
		var want uint64 // µJ
		for i, dir := range dirs {
			uj := w[i] * 100_000 // W over 100 ms in µJ
			want += uj
			p := zoneFile(root, dir, "energy_uj")
			v := readUint(t, p) + uj
			if max := readUint(t, zoneFile(root, dir, "max_energy_range_uj")); v > max {
				v -= max // wrapped
			}
			writeUint(t, p, v)
		}
		now = now.Add(100 * time.Millisecond)
		iv, ok, err := c.Poll(ctx, now)
		if !ok || err != nil {
			t.Fatalf("step %d: ok=%v err=%v", step, ok, err)
		}
		if math.Abs(iv.Joules-float64(want)/1e6) > 1e-9 || iv.Method != estimator.MethodCounter || iv.Device != estimator.HostDevice {
			t.Errorf("step %d: %+v, want %v J by counter", step, iv, float64(want)/1e6)
		}
	}
	if v := readUint(t, zoneFile(root, dirs[0], "energy_uj")); v > max0/2 {
		t.Fatalf("package-0 at %d: the trace did not wrap it", v)
	}
}

// energy_uj is root-only on modern kernels. Tests run as root, which reads
// a file whatever its mode, so the denial is made through the reader the
// collector uses (Options.ReadEnergy), returning what the kernel returns
// to others: EACCES. The collector says so in one line and falls back to
// the model. (Run as non-root, the chmod subtest below does it for real.)
func TestPermissionDenied(t *testing.T) {
	check := func(t *testing.T, c *Collector, logs string) {
		t.Helper()
		if c.Method() != estimator.MethodModelled || len(c.Zones()) != 0 {
			t.Fatalf("method %q, zones %v; want the model", c.Method(), c.Zones())
		}
		for _, want := range []string{"intel-rapl:1/energy_uj is readable by root only", "docs/operations.md"} {
			if !strings.Contains(c.Fallback(), want) {
				t.Errorf("fallback %q lacks %q", c.Fallback(), want)
			}
		}
		if n := strings.Count(logs, "\n"); n != 1 || !strings.Contains(logs, "host energy is modelled") {
			t.Errorf("want one log line, got:\n%s", logs)
		}
		ctx := context.Background()
		c.Poll(ctx, time.Unix(10, 0))
		iv, ok, err := c.Poll(ctx, time.Unix(11, 0))
		if !ok || err != nil || iv.Method != estimator.MethodModelled || iv.Joules <= 0 {
			t.Errorf("interval %+v, %v, %v; want a modelled one", iv, ok, err)
		}
	}
	times := func(context.Context) (float64, float64, error) { return 1, 2, nil }
	t.Run("reader", func(t *testing.T) {
		root := fixture(t, "xeon-2s")
		deny := func(z sysfs.RaplZone) (uint64, error) {
			if filepath.Base(z.Path) == "intel-rapl:1" {
				return 0, &fs.PathError{Op: "open", Path: filepath.Join(z.Path, "energy_uj"), Err: syscall.EACCES}
			}
			return z.GetEnergyMicrojoules()
		}
		logs := &testlog.Buffer{}
		c := Open(context.Background(), Options{SysfsRoot: root, UseRAPL: true, CPUTDPWatts: 300, CPUIdleWatts: 100,
			CPUTimes: times, ReadEnergy: deny}, slog.New(slog.NewTextHandler(logs, nil)))
		check(t, c, logs.String())
	})
	t.Run("chmod", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root reads a file whatever its mode; the reader subtest covers the denial")
		}
		root := fixture(t, "xeon-2s")
		if err := os.Chmod(zoneFile(root, "intel-rapl:1", "energy_uj"), 0o000); err != nil {
			t.Fatal(err)
		}
		logs := &testlog.Buffer{}
		c := Open(context.Background(), Options{SysfsRoot: root, UseRAPL: true, CPUTDPWatts: 300, CPUIdleWatts: 100,
			CPUTimes: times}, slog.New(slog.NewTextHandler(logs, nil)))
		check(t, c, logs.String())
	})
}

// RAPL that fails at run time never holds records up: the interval is held
// at the last measured power (flagged modelled), one warning is logged,
// and counting restarts from the first good read, not across the failure.
func TestRAPLFailsAtRunTime(t *testing.T) {
	root := fixture(t, "epyc-2s")
	fail := false
	read := func(z sysfs.RaplZone) (uint64, error) {
		if fail {
			return 0, errors.New("read error")
		}
		return z.GetEnergyMicrojoules()
	}
	logs := &testlog.Buffer{}
	ctx := context.Background()
	c := Open(ctx, Options{SysfsRoot: root, UseRAPL: true, ReadEnergy: read}, slog.New(slog.NewTextHandler(logs, nil)))
	add := func(uj uint64) {
		for _, dir := range []string{"intel-rapl:0", "intel-rapl:1"} {
			p := zoneFile(root, dir, "energy_uj")
			writeUint(t, p, readUint(t, p)+uj)
		}
	}
	tr := &trace{t: t, c: c}
	tr.poll(0)
	add(100e6) // 2 x 100 J in 1 s: 200 W
	tr.poll(time.Second)
	fail = true
	add(500e6)
	tr.poll(2 * time.Second) // held at 200 W
	tr.poll(3 * time.Second)
	fail = false
	add(500e6)
	tr.poll(4 * time.Second) // the read that restarts counting: held too
	add(50e6)
	tr.poll(5 * time.Second)
	tr.check([]traced{{200, estimator.MethodCounter}, {200, estimator.MethodModelled}, {200, estimator.MethodModelled},
		{200, estimator.MethodModelled}, {100, estimator.MethodCounter}})
	if strings.Count(logs.String(), "RAPL read failed") != 1 || strings.Count(logs.String(), "RAPL reads again") != 1 {
		t.Errorf("want one line each way:\n%s", logs)
	}
}

// Without RAPL the CPU model is used: idle + (tdp - idle) x utilisation.
func TestModelFallback(t *testing.T) {
	ctx := context.Background()
	busy, total := 0.0, 0.0
	c := Open(ctx, Options{SysfsRoot: fixture(t, "vm"), UseRAPL: true, CPUTDPWatts: 300, CPUIdleWatts: 100,
		CPUTimes: func(context.Context) (float64, float64, error) { return busy, total, nil }}, basic.Discard())
	if c.Method() != estimator.MethodModelled || c.Fallback() == "" {
		t.Fatalf("method = %q, fallback %q; want modelled with a reason", c.Method(), c.Fallback())
	}
	t0 := time.Unix(100, 0)
	c.Poll(ctx, t0)
	busy, total = 5, 20 // 25 % busy
	iv, ok, err := c.Poll(ctx, t0.Add(2*time.Second))
	if !ok || err != nil {
		t.Fatal(ok, err)
	}
	if want := (100 + 200*0.25) * 2; math.Abs(iv.Joules-want) > 1e-9 || iv.Method != estimator.MethodModelled {
		t.Errorf("interval = %+v, want %v J modelled", iv, want)
	}
	// CPU times are read at most once a second: polls in between keep the
	// last utilisation.
	busy, total = 20, 40 // 75 % busy since
	iv, _, _ = c.Poll(ctx, t0.Add(2500*time.Millisecond))
	if want := (100 + 200*0.25) * 0.5; math.Abs(iv.Joules-want) > 1e-9 {
		t.Errorf("half a second later: %v J, want %v J (the last utilisation)", iv.Joules, want)
	}
	iv, _, _ = c.Poll(ctx, t0.Add(3*time.Second))
	if want := (100 + 200*0.75) * 0.5; math.Abs(iv.Joules-want) > 1e-9 {
		t.Errorf("a second later: %v J, want %v J (the new utilisation)", iv.Joules, want)
	}
}

func TestDelta(t *testing.T) {
	for _, tc := range []struct{ prev, cur, max, want uint64 }{
		{10, 25, 100, 15}, {90, 5, 100, 15}, {0, 0, 100, 0},
	} {
		if got := Delta(tc.prev, tc.cur, tc.max); got != tc.want {
			t.Errorf("Delta(%d, %d, %d) = %d, want %d", tc.prev, tc.cur, tc.max, got, tc.want)
		}
	}
}

// The host's processors, for the model: this machine has at least one.
func TestCPUs(t *testing.T) {
	model, sockets, err := CPUs(context.Background())
	if err != nil || sockets < 1 {
		t.Fatalf("CPUs() = %q, %d, %v", model, sockets, err)
	}
}

// A RAPL counter that restarts (the module reloaded, a CPU hot-plugged)
// reads below its last value like a wrap, but the "wrap" implies up to
// max_energy_range_uj (262 kJ here) in one poll. A delta beyond twice the
// CPU TDP is a reset: the interval is held at the last measured power
// (flagged modelled), one warning is logged, and counting goes on from
// the new value.
func TestRAPLCounterReset(t *testing.T) {
	root := fixture(t, "xeon-2s")
	dirs := []string{"intel-rapl:0", "intel-rapl:0:0", "intel-rapl:1", "intel-rapl:1:0"}
	add := func(uj uint64) {
		for _, dir := range dirs {
			p := zoneFile(root, dir, "energy_uj")
			writeUint(t, p, readUint(t, p)+uj)
		}
	}
	logs := &testlog.Buffer{}
	ctx := context.Background()
	c := Open(ctx, Options{SysfsRoot: root, UseRAPL: true, CPUTDPWatts: 700, CPUIdleWatts: 200}, slog.New(slog.NewTextHandler(logs, nil)))
	tr := &trace{t: t, c: c}
	tr.poll(0)
	add(10e6) // 4 zones x 10 J in 100 ms: 400 W
	tr.poll(100 * time.Millisecond)
	// Package 0 restarts from zero (it read 112 kJ), the others count on.
	writeUint(t, zoneFile(root, dirs[0], "energy_uj"), 5e6)
	add(10e6)
	tr.poll(200 * time.Millisecond) // held at 400 W
	add(5e6)
	tr.poll(300 * time.Millisecond) // 200 W, counted from the restarted value
	tr.check([]traced{{40, estimator.MethodCounter}, {40, estimator.MethodModelled}, {20, estimator.MethodCounter}})
	if n := strings.Count(logs.String(), "RAPL counter reset"); n != 1 {
		t.Errorf("want one warning of the reset, got %d:\n%s", n, logs)
	}
}

// trace polls a collector at 100 s + d and keeps the intervals it closes.
type trace struct {
	t   *testing.T
	c   *Collector
	got []estimator.Interval
}

// traced is what one interval of a trace should be.
type traced struct {
	j float64
	m estimator.Method
}

func (tr *trace) poll(d time.Duration) {
	tr.t.Helper()
	iv, ok, err := tr.c.Poll(context.Background(), time.Unix(100, 0).Add(d))
	if err != nil {
		tr.t.Fatal(err)
	}
	if ok {
		tr.got = append(tr.got, iv)
	}
}

func (tr *trace) check(want []traced) {
	tr.t.Helper()
	if len(tr.got) != len(want) {
		tr.t.Fatalf("intervals %+v", tr.got)
	}
	for i, w := range want {
		if g := tr.got[i]; math.Abs(g.Joules-w.j) > 1e-9 || g.Method != w.m {
			tr.t.Errorf("interval %d: %v J by %s, want %v J by %s", i, g.Joules, g.Method, w.j, w.m)
		}
	}
}

// TestRAPLFallbackSaysWhy: when RAPL cannot be read, the fallback reason
// is procfs's own error, not a guess: a broken zone names its file; only a
// missing powercap class gets the hint about VMs and ARM hosts (with the
// error too).
func TestRAPLFallbackSaysWhy(t *testing.T) {
	root := fixture(t, "xeon-2s")
	if err := os.Remove(zoneFile(root, "intel-rapl:0", "max_energy_range_uj")); err != nil {
		t.Fatal(err)
	}
	c := Open(context.Background(), Options{SysfsRoot: root, UseRAPL: true, CPUTDPWatts: 300, CPUIdleWatts: 100}, basic.Discard())
	if why := c.Fallback(); !strings.Contains(why, "intel-rapl:0/max_energy_range_uj: no such file") || strings.Contains(why, "a VM") {
		t.Errorf("fallback %q; want procfs's error naming the missing file, and no guess", why)
	}
	c = Open(context.Background(), Options{SysfsRoot: t.TempDir(), UseRAPL: true, CPUTDPWatts: 300, CPUIdleWatts: 100}, basic.Discard())
	if why := c.Fallback(); !strings.Contains(why, "a VM") || !strings.Contains(why, "no such file") {
		t.Errorf("fallback %q; want the hint and the error", why)
	}
}

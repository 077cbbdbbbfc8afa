package host

import (
	"context"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/estimator"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func writeZone(t *testing.T, root, dir, name string, uj, max uint64) {
	t.Helper()
	d := filepath.Join(root, "class/powercap", dir)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, v := range map[string]string{"name": name, "energy_uj": strconv.FormatUint(uj, 10), "max_energy_range_uj": strconv.FormatUint(max, 10)} {
		if err := os.WriteFile(filepath.Join(d, f), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Package and DRAM zones are summed, core is not (it is inside the
// package), and a counter that wraps at max_energy_range_uj still counts.
func TestRAPL(t *testing.T) {
	root := t.TempDir()
	const max = 262143328850
	writeZone(t, root, "intel-rapl:0", "package-0", max-1_000_000, max)
	writeZone(t, root, "intel-rapl:0:0", "core", 5_000_000, max)
	writeZone(t, root, "intel-rapl:0:2", "dram", 1_000_000, max)
	ctx := context.Background()
	c := Open(ctx, Options{SysfsRoot: root, UseRAPL: true}, discard())
	if c.Method() != estimator.MethodCounter {
		t.Fatalf("method = %q (%s), want counter", c.Method(), c.Fallback())
	}
	t0 := time.Unix(100, 0)
	if _, ok, err := c.Poll(ctx, t0); ok || err != nil {
		t.Fatalf("first poll: ok=%v err=%v, want priming only", ok, err)
	}
	writeZone(t, root, "intel-rapl:0", "package-0", 2_000_000, max) // wrapped: +3 J
	writeZone(t, root, "intel-rapl:0:0", "core", 9_000_000, max)
	writeZone(t, root, "intel-rapl:0:2", "dram", 1_500_000, max) // +0.5 J
	iv, ok, err := c.Poll(ctx, t0.Add(time.Second))
	if !ok || err != nil {
		t.Fatal(ok, err)
	}
	if math.Abs(iv.Joules-3.5) > 1e-9 || iv.Device != estimator.HostDevice || iv.Method != estimator.MethodCounter {
		t.Errorf("interval = %+v, want 3.5 J of host by counter", iv)
	}
}

// Without RAPL the CPU model is used: idle + (tdp - idle) x utilisation.
func TestModelFallback(t *testing.T) {
	ctx := context.Background()
	busy, total := 0.0, 0.0
	c := Open(ctx, Options{SysfsRoot: t.TempDir(), UseRAPL: true, CPUTDPWatts: 300, CPUIdleWatts: 100,
		CPUTimes: func(context.Context) (float64, float64, error) { return busy, total, nil }}, discard())
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

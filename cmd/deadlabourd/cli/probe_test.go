package cli

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// probe lists, per GPU, index, name, UUID, driver, energy counter, power
// reading, MIG mode and instances, memory and health; with --simulate too.
func TestProbeMIG(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"probe", "--simulate", "h100:2:mig=3g"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{
		"INDEX  NAME", "DRIVER", "550.54.15", "ENERGY COUNTER", "instant (field FI_DEV_POWER_INSTANT)",
		"on: 2 instance(s) of 7 slices, split by gpm", "80 GiB",
		"  1/1  NVIDIA H100 80GB HBM3 MIG 3g.40gb  MIG-5e1a0000-0000-4000-8000-000100000001", "3g.40gb, 48 SMs", "40 GiB",
		"Host energy:",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("probe output lacks %q:\n%s", want, out.String())
		}
	}
}

// probe --measure compares each GPU's counter with the integral of its
// power samples and prints the agreement.
func TestProbeMeasure(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"probe", "--simulate", "b200:2", "--measure", "1200ms", "--interval", "50ms"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	m := regexp.MustCompile(`worst agreement: ([0-9.]+) % over 2 GPU\(s\)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no agreement line:\n%s", out.String())
	}
	// An idle simulated GPU draws constant power: the two agree up to the
	// counter's update lag at the ends (100 ms over a second).
	if a, _ := strconv.ParseFloat(m[1], 64); a < 80 || a > 100 {
		t.Errorf("agreement %v %%:\n%s", a, out.String())
	}
	if code := Run(context.Background(), []string{"probe", "--measure", "-1s"}, &out, &errb); code != 2 {
		t.Errorf("a negative --measure: exit %d, want 2", code)
	}
}

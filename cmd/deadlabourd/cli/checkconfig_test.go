package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckConfig(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"check-config", "--gpus", "8", exampleConfig(t)}, &out, &errb); code != 0 {
		t.Fatalf("example.yaml: exit %d\n%s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "ok: node gpu-node-01") || strings.Count(out.String(), "\n") != 1 {
		t.Errorf("want a one-line summary, got %q", out.String())
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("facility:\n  pue: 0.8\nupstreams:\n  - name: a\n    listen: 127.0.0.1:1\n    gpus: [9]\n"), 0o600)
	out.Reset()
	errb.Reset()
	if code := Run(context.Background(), []string{"check-config", "--gpus", "8", bad}, &out, &errb); code != 1 {
		t.Errorf("bad file: exit %d, want 1", code)
	}
	for _, want := range []string{"bad.yaml:2: facility.pue:", "bad.yaml:4: upstreams[0].target:", "bad.yaml:6: upstreams[0].gpus[0]: GPU 9 does not exist"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if code := Run(context.Background(), []string{"check-config"}, &out, &errb); code != 2 {
		t.Errorf("no file: exit %d, want 2", code)
	}
}

func TestProbeSimulated(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"probe", "--simulate", "b200:2"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"GPUs: 2, driver", "NVIDIA B200", "GPU-5e1a0000-0000-4000-8000-000000000001", "Host energy:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("probe output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestCheckConfigLibraryPath: without --gpus, check-config asks the NVML
// library the config names (gpu.library_path), as the daemon does, and
// says which one it could not load.
func TestCheckConfigLibraryPath(t *testing.T) {
	lib := filepath.Join(t.TempDir(), "not-here", "libnvidia-ml.so.1")
	path := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(path, []byte("gpu:\n  library_path: "+lib+"\n"), 0o600)
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"check-config", path}, &out, &errb); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "GPU indices not checked (no NVML at "+lib) {
		t.Errorf("summary does not say the configured library was tried:\n%s", out.String())
	}
}

// With no region and no carbon figure, check-config accepts the file but
// warns, as run does at start: a world average is no silent default. With
// a region, the warning about carbon and water goes.
func TestCheckConfigWarnsOfDefaultFactors(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		facility string
		want     []string
		absent   []string
	}{
		{"", []string{"warning: facility: no region and no carbon_g_per_kwh", "no water_offsite_l_per_kwh", "no price_per_kwh"}, nil},
		{"facility:\n  region: FR\n  price_per_kwh: 0.2\n", nil, []string{"warning: facility"}},
	} {
		path := filepath.Join(dir, "c.yaml")
		yaml := "node: t\ngpu:\n  enabled: false\nspool:\n  dir: " + filepath.Join(dir, "spool") + "\n" + tt.facility
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		if code := Run(context.Background(), []string{"check-config", "--gpus", "0", path}, &out, &errb); code != 0 {
			t.Fatalf("check-config %q: exit %d: %s%s", tt.facility, code, out.String(), errb.String())
		}
		for _, w := range tt.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("facility %q: no %q in\n%s", tt.facility, w, out.String())
			}
		}
		for _, w := range tt.absent {
			if strings.Contains(out.String(), w) {
				t.Errorf("facility %q: %q in\n%s", tt.facility, w, out.String())
			}
		}
	}
}

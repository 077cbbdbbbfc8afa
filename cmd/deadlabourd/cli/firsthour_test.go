package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/influxtest"
)

func run(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// Flags may follow the arguments, or sit between them; "--" ends them.
func TestFlagsAfterArguments(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	a := fs.Bool("a", false, "")
	b := fs.String("b", "", "")
	got, err := parseArgs(fs, []string{"x", "--a", "y", "-b", "v", "z", "--", "--a", "w"})
	if err != nil || !*a || *b != "v" || !slices.Equal(got, []string{"x", "y", "z", "--a", "w"}) {
		t.Errorf("parseArgs = %q, %v (a %v, b %q)", got, err, *a, *b)
	}

	code, out, errs := run("check-config", exampleConfig(t), "--simulate", "h100:8")
	if code != 0 || !strings.Contains(out, "GPU indices checked against 8 GPUs (--simulate)") {
		t.Errorf("check-config FILE --simulate h100:8: exit %d\n%s%s", code, out, errs)
	}
	if code, _, errs := run("check-config", "a.yaml", "b.yaml"); code != 2 || !strings.Contains(errs, "want exactly one FILE, got 2") {
		t.Errorf("two files: exit %d: %s", code, errs)
	}
	if code, _, errs := run("probe", "extra", "--simulate", "h100:1"); code != 2 || !strings.Contains(errs, `unexpected argument "extra"`) {
		t.Errorf("probe with an argument: exit %d: %s", code, errs)
	}
}

// Every subcommand's help writes its flags as --flag, as the README does.
func TestHelpWritesDoubleDash(t *testing.T) {
	for _, cmd := range []string{"init", "run", "check-config", "probe", "report", "audit", "version"} {
		code, _, errs := run(cmd, "--help")
		if code != 0 {
			t.Errorf("%s --help: exit %d", cmd, code)
		}
		if !strings.Contains(errs, "Usage: deadlabourd "+cmd) || !strings.Contains(errs, "\n  --") {
			t.Errorf("%s --help lacks its usage line or a --flag:\n%s", cmd, errs)
		}
		for _, line := range strings.Split(errs, "\n") {
			if strings.HasPrefix(line, "  -") && !strings.HasPrefix(line, "  --") {
				t.Errorf("%s --help writes %q", cmd, line)
			}
		}
	}
}

// run prints every config problem with its file and line, also those the
// daemon finds against the GPUs (an index past the last GPU).
func TestRunErrorsNameFile(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("upstreams:\n  - name: a\n    listen: 127.0.0.1:0\n    target: http://127.0.0.1:1\n    discover_models: false\n    gpus: [0, 1, 5]\n"), 0o600)
	code, _, errs := run("run", "--config", bad, "--simulate", "h100:2")
	if code != 1 || !strings.Contains(errs, "deadlabourd run: "+bad+":6: upstreams[0].gpus[2]: GPU 5 does not exist") {
		t.Errorf("exit %d, stderr:\n%s", code, errs)
	}
	os.WriteFile(bad, []byte("gpu:\n  interval: 1ms\nfacility:\n  pue: 0.5\n"), 0o600)
	code, _, errs = run("run", "--config", bad)
	for _, want := range []string{bad + ":2: gpu.interval: must be between 10ms and 1m, got 1ms", bad + ":4: facility.pue"} {
		if code != 1 || !strings.Contains(errs, "deadlabourd run: "+want) {
			t.Errorf("exit %d, stderr lacks %q:\n%s", code, want, errs)
		}
	}
}

// A missing config names the ways to make one, in every command that reads it.
func TestMissingConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	want := path + ": no such file: create one with `deadlabourd init --upstream URL --out " + path + "` or copy config/example.yaml"
	for _, args := range [][]string{{"check-config", path}, {"run", "--config", path}, {"report", "--config", path}, {"audit", "--config", path, "id"}} {
		if code, _, errs := run(args...); code != 1 || !strings.Contains(errs, want) {
			t.Errorf("%s: exit %d: %s", args[0], code, errs)
		}
	}
}

// version prints Go's version, and the driver's and NVML's ("none"
// without NVML); --json the same as an object.
func TestVersionJSON(t *testing.T) {
	code, out, errs := run("version", "--json", "--simulate", "h100:1")
	var v versionInfo
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil {
		t.Fatalf("exit %d, %v: %s%s", code, err, out, errs)
	}
	if v.Go != runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH || v.Driver != "550.54.15" || v.NVML != "12.550.54.15" || v.Version == "" {
		t.Errorf("version --json --simulate h100:1 = %+v", v)
	}
	lib := filepath.Join(t.TempDir(), "libnvidia-ml.so.1")
	code, out, _ = run("version", "--nvml-library", lib)
	if code != 0 || !strings.Contains(out, "NVIDIA driver none\nNVML none\n") || !strings.Contains(out, "go "+runtime.Version()) {
		t.Errorf("version without NVML: exit %d:\n%s", code, out)
	}
	rev := []debug.BuildSetting{{Key: "vcs.revision", Value: "b760015ab1cd0123456789"}, {Key: "vcs.modified", Value: "true"}}
	for main, want := range map[string]string{
		"v0.0.0-20261207000409-b760015ab1cd+dirty": "v0.0.0-20261207000409-b760015ab1cd+dirty",
		"(devel)": "(devel) b760015ab1cd+dirty",
	} {
		if got := versionOf(main, rev); got != want {
			t.Errorf("versionOf(%q) = %q, want %q", main, got, want)
		}
	}
}

// init asks the upstream for its models and the GPUs for their names, and
// writes a config check-config accepts as it is; it never overwrites one.
func TestInit(t *testing.T) {
	fake := httptest.NewServer(fakeupstream.New(fakeupstream.Options{Models: []string{"meta-llama/Llama-3.1-8B-Instruct"}}))
	defer fake.Close()
	path := filepath.Join(t.TempDir(), "etc", "config.yaml")
	code, out, errs := run("init", "--upstream", fake.URL, "--influx", "http://127.0.0.1:8086", "--out", path, "--simulate", "h100:8")
	if code != 0 || !strings.Contains(out, "wrote "+path+": 1 upstream(s), 1 model(s), 8 GPU(s)") {
		t.Fatalf("init: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := run("check-config", path, "--simulate", "h100:8"); code != 0 {
		t.Fatalf("check-config of init's file: exit %d\n%s%s", code, out, errs)
	}
	cfg, err := config.Load(path, 8)
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.Upstreams[0]
	if u.Name != "llama-3.1-8b-instruct" || u.Target != fake.URL || u.Listen != "127.0.0.1:8081" || len(u.GPUs) != 8 || !u.Discovers() ||
		len(cfg.Models) != 1 || cfg.Models[0].Name != "meta-llama/Llama-3.1-8B-Instruct" || cfg.Influx.URL != "http://127.0.0.1:8086" {
		t.Errorf("init wrote %+v, models %+v, influx %q", u, cfg.Models, cfg.Influx.URL)
	}
	text, _ := os.ReadFile(path)
	for _, want := range []string{"# facility:\n#   region: DE", `the catalogue's "H100`, "over 5y"} {
		if !strings.Contains(string(text), want) {
			t.Errorf("the config lacks %q:\n%s", want, text)
		}
	}
	// The region hint is a key: uncommented, it validates.
	uncommented := filepath.Join(filepath.Dir(path), "region.yaml")
	os.WriteFile(uncommented, bytes.Replace(text, []byte("# facility:\n#   region: DE"), []byte("facility:\n  region: DE"), 1), 0o600)
	if code, out, errs := run("check-config", "--simulate", "h100:8", uncommented); code != 0 {
		t.Errorf("the region hint uncommented: exit %d\n%s%s", code, out, errs)
	}
	code, _, errs = run("init", "--upstream", fake.URL, "--out", path)
	if code != 1 || !strings.Contains(errs, path+" exists: init never overwrites") {
		t.Errorf("init over an existing file: exit %d: %s", code, errs)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, text) {
		t.Error("init changed an existing file")
	}
	if code, _, errs := run("init", "--out", path+".2"); code != 2 || !strings.Contains(errs, "want at least one --upstream") {
		t.Errorf("init without --upstream: exit %d: %s", code, errs)
	}
}

// check-config --online says what answered and what did not: a live fake
// upstream and a real InfluxDB answer, a dead port does not (exit 1).
func TestCheckConfigOnline(t *testing.T) {
	influx := influxtest.Start(t)
	fake := httptest.NewServer(fakeupstream.New(fakeupstream.Options{Models: []string{"a", "b"}}))
	defer fake.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	write := func(name, targets string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("upstreams:\n"+targets+"influx:\n  url: "+influx.URL()+"\n"), 0o600)
		return p
	}
	up := func(name, target, port string) string {
		return "  - name: " + name + "\n    listen: 127.0.0.1:" + port + "\n    target: " + target + "\n"
	}
	good := write("good.yaml", up("live", fake.URL, "1"))
	code, out, errs := run("check-config", "--online", good, "--gpus", "0")
	if code != 0 || !strings.Contains(out, "online: upstream live ("+fake.URL+"): answered GET /v1/models: 2 model(s): a, b") ||
		!strings.Contains(out, "online: InfluxDB "+influx.URL()+": answered GET /ping: 204") {
		t.Errorf("live: exit %d\n%s%s", code, out, errs)
	}
	bad := write("bad.yaml", up("live", fake.URL, "1")+up("gone", dead, "2"))
	code, out, errs = run("check-config", bad, "--online", "--gpus", "0")
	if code != 1 || !strings.Contains(out, "online: upstream gone ("+dead+"): did not answer: ") || !strings.Contains(out, "connection refused") ||
		!strings.Contains(errs, "1 did not answer: upstream gone ("+dead+")") {
		t.Errorf("dead port: exit %d\n%s%s", code, out, errs)
	}
}

package daemon

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/deadlabour/deadlabour/internal/testlog"
	"github.com/deadlabour/deadlabour/internal/testutil"
)

// fakeDevicer runs GPU "3" for one PID, as NVML's process list would say.
type fakeDevicer struct{ pid int }

func (f fakeDevicer) ProcessDevices(pids []int) ([]string, error) {
	if slices.Contains(pids, f.pid) {
		return []string{"3"}, nil
	}
	return nil, nil
}

// An upstream's GPUs follow its processes: the PID in pid_file or the
// processes named process_name, and their descendants (the GPU process
// here is a child, as vLLM's tensor-parallel workers are); while none is
// found the configured gpus apply. Each change is logged once.
func TestResolver(t *testing.T) {
	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Skip("cannot start a child process:", err)
	}
	defer func() {
		child.Process.Kill()
		child.Wait()
	}()
	logs := &testlog.Buffer{}
	r := &gpuResolver{gpu: fakeDevicer{child.Process.Pid}, procRoot: "/proc", every: time.Second,
		log: slog.New(slog.NewTextHandler(logs, nil))}
	pidFile := filepath.Join(t.TempDir(), "vllm.pid")
	byFile := r.add("by-file", pidFile, "", []string{"0"})
	byName := r.add("by-name", "", "sleep", nil)
	byMe := r.add("by-parent-name", "", filepath.Base(os.Args[0]), nil)
	nobody := r.add("nobody", "", "no-such-process-xyz", []string{"1"})

	r.Refresh() // the pid file does not exist yet
	if got := byFile.Devices(); !slices.Equal(got, []string{"0"}) {
		t.Errorf("without its pid file: %v, want the configured [0]", got)
	}
	os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
	r.Refresh()
	r.Refresh()
	for _, u := range []*upstreamGPUs{byFile, byName, byMe} {
		if got := u.Devices(); !slices.Equal(got, []string{"3"}) {
			t.Errorf("%s: %v, want [3] (the child runs on GPU 3)", u.name, got)
		}
	}
	if got := nobody.Devices(); !slices.Equal(got, []string{"1"}) {
		t.Errorf("nobody: %v, want the configured [1]", got)
	}
	out := logs.String()
	for _, want := range []string{
		`level=WARN msg="upstream GPUs not found from its processes" upstream=by-file gpus=0 how="pid_file: open ` + pidFile,
		`level=INFO msg="upstream GPUs found from its processes" upstream=by-file gpus=3 how="the NVML processes of pid_file ` + pidFile,
		`no process named \"no-such-process-xyz\"; the configured gpus apply meanwhile`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "upstream=by-name"); n != 1 {
		t.Errorf("%d lines about by-name in three refreshes, want 1:\n%s", n, out)
	}
	os.WriteFile(pidFile, []byte("garbage"), 0o600)
	r.Refresh()
	if got := byFile.Devices(); !slices.Equal(got, []string{"0"}) || !strings.Contains(logs.String(), `want a process id, got \"garbage\"`) {
		t.Errorf("a bad pid file: %v\n%s", got, logs)
	}
}

// The resolver's goroutine is owned by the daemon: stop ends it and waits.
func TestResolverStops(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	// The upstream is this test's own process, so that every refresh asks
	// the devicer, which counts the refreshes.
	dev := &countingDevicer{}
	r := &gpuResolver{gpu: dev, procRoot: "/proc", every: 10 * time.Millisecond, log: slog.New(slog.DiscardHandler)}
	r.add("u", "", filepath.Base(os.Args[0]), nil)
	d := &Daemon{resolver: r}
	stop := d.startResolver(t.Context())
	testutil.WaitFor(t, "a few refreshes", 10*time.Second, func() bool { return dev.calls.Load() >= 3 })
	stop()
}

// countingDevicer counts the calls of ProcessDevices.
type countingDevicer struct{ calls atomic.Int64 }

func (c *countingDevicer) ProcessDevices([]int) ([]string, error) {
	c.calls.Add(1)
	return nil, nil
}

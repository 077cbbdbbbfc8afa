package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/procfs"

	"github.com/deadlabour/deadlabour/internal/ticker"
)

// processDevicer is what the resolver needs of the GPU collector.
type processDevicer interface {
	ProcessDevices(pids []int) ([]string, error)
}

// upstreamGPUs is the GPUs of one upstream that names its processes
// (pid_file or process_name): those NVML lists running one of them or one
// of their descendants (tensor-parallel workers), found again every
// refresh; the configured gpus while none is found.
type upstreamGPUs struct {
	name     string
	pidFile  string
	procName string
	static   []string
	cur      atomic.Pointer[[]string]
	state    string // how it was last resolved, so that each change is logged once
}

// Devices is the proxy's DevicesFunc: the GPUs as of the last refresh.
func (u *upstreamGPUs) Devices() []string { return *u.cur.Load() }

// gpuResolver refreshes the GPUs of every upstream that names its
// processes. Run is its goroutine; Refresh may be called before it starts.
type gpuResolver struct {
	gpu      processDevicer
	procRoot string // usually /proc
	every    time.Duration
	log      *slog.Logger
	ups      []*upstreamGPUs

	mu sync.Mutex // one Refresh at a time
}

func (r *gpuResolver) add(name, pidFile, procName string, static []string) *upstreamGPUs {
	u := &upstreamGPUs{name: name, pidFile: pidFile, procName: procName, static: static}
	u.cur.Store(&u.static)
	r.ups = append(r.ups, u)
	return u
}

// Run refreshes every r.every until ctx is done.
func (r *gpuResolver) Run(ctx context.Context) {
	ticker.Every(ctx, r.every, r.Refresh)
}

// Refresh matches every upstream's processes against NVML once.
func (r *gpuResolver) Refresh() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ups) == 0 {
		return
	}
	tree, err := readProcTree(r.procRoot)
	for _, u := range r.ups {
		devs, how, found := r.resolve(u, tree, err)
		u.cur.Store(&devs)
		if how == u.state {
			continue
		}
		u.state = how
		args := []any{"upstream", u.name, "gpus", strings.Join(devs, ","), "how", how}
		if found {
			r.log.Info("upstream GPUs found from its processes", args...)
		} else {
			r.log.Warn("upstream GPUs not found from its processes", args...)
		}
	}
}

// resolve finds one upstream's GPUs and says, in words, how; found is
// false when the configured gpus stand in.
func (r *gpuResolver) resolve(u *upstreamGPUs, tree *procTree, treeErr error) (devs []string, how string, found bool) {
	fallback := func(why string) ([]string, string, bool) {
		if len(u.static) == 0 {
			return u.static, why + "; until then its requests are charged no GPU energy", false
		}
		return u.static, why + "; the configured gpus apply meanwhile", false
	}
	if treeErr != nil {
		return fallback(fmt.Sprintf("cannot list processes: %v", treeErr))
	}
	var roots []int
	what := ""
	if u.pidFile != "" {
		what = "pid_file " + u.pidFile
		pid, err := readPIDFile(u.pidFile)
		if err != nil {
			return fallback(err.Error())
		}
		if !tree.has(pid) {
			return fallback(fmt.Sprintf("PID %d from %s is not running", pid, u.pidFile))
		}
		roots = []int{pid}
	} else {
		what = "process_name " + u.procName
		roots = tree.named(u.procName)
		if len(roots) == 0 {
			return fallback(fmt.Sprintf("no process named %q", u.procName))
		}
	}
	pids := tree.descendants(roots)
	devs, err := r.gpu.ProcessDevices(pids)
	if err != nil && len(devs) == 0 {
		return fallback(err.Error())
	}
	if len(devs) == 0 {
		return fallback(fmt.Sprintf("%s: none of its %d processes runs on a GPU yet", what, len(pids)))
	}
	return devs, fmt.Sprintf("the NVML processes of %s", what), true
}

func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("pid_file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid_file %s: want a process id, got %q", path, strings.TrimSpace(string(b)))
	}
	return pid, nil
}

// procTree is the processes of the host: parents, names.
type procTree struct {
	children map[int][]int
	names    map[int][2]string // comm, basename of argv[0]
}

func readProcTree(root string) (*procTree, error) {
	fs, err := procfs.NewFS(root)
	if err != nil {
		return nil, err
	}
	procs, err := fs.AllProcs()
	if err != nil {
		return nil, err
	}
	t := &procTree{children: map[int][]int{}, names: make(map[int][2]string, len(procs))}
	for _, p := range procs {
		st, err := p.Stat()
		if err != nil {
			continue // gone meanwhile
		}
		argv0 := ""
		if cmd, err := p.CmdLine(); err == nil && len(cmd) > 0 {
			argv0 = filepath.Base(cmd[0])
		}
		t.names[p.PID] = [2]string{st.Comm, argv0}
		t.children[st.PPID] = append(t.children[st.PPID], p.PID)
	}
	return t, nil
}

func (t *procTree) has(pid int) bool { _, ok := t.names[pid]; return ok }

// named returns the processes whose comm (truncated by the kernel to 15
// bytes) or argv[0] base name is name.
func (t *procTree) named(name string) []int {
	var out []int
	comm := name[:min(len(name), 15)]
	for pid, n := range t.names {
		if n[0] == comm || n[1] == name {
			out = append(out, pid)
		}
	}
	slices.Sort(out)
	return out
}

// descendants returns the roots and all their descendants.
func (t *procTree) descendants(roots []int) []int {
	seen := map[int]bool{}
	queue := append([]int(nil), roots...)
	var out []int
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		out = append(out, pid)
		queue = append(queue, t.children[pid]...)
	}
	return out
}

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/internal/testutil"
)

// nodeSection is the commands of README.md's "On a GPU node": the first
// ```sh block after its heading, one command a line.
func nodeSection(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## On a GPU node\n")
	if !ok {
		t.Fatal(`README.md has no "## On a GPU node" section`)
	}
	_, block, ok := strings.Cut(section, "```sh\n")
	if !ok {
		t.Fatal(`README.md's "On a GPU node" has no sh block`)
	}
	block, _, _ = strings.Cut(block, "```")
	var cmds []string
	for line := range strings.SplitSeq(strings.TrimSpace(block), "\n") {
		cmds = append(cmds, strings.TrimSpace(line))
	}
	return cmds
}

// comment is a command's trailing comment (two spaces or more, then #).
var comment = regexp.MustCompile(`\s{2,}#.*$`)

// freeAddr is a loopback address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestREADMENode runs README.md's "On a GPU node" literally, top to
// bottom, with the binary `make build` makes: only the paths and ports are
// this test's (a temporary directory, a fake upstream listing its model, a
// real InfluxDB, free ports), the GPUs simulated (--simulate h100:8) and
// --measure shortened. Each command must succeed; `run` stays up in the
// background until the end, as in a second shell.
func TestREADMENode(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed: the README's request is made with it")
	}
	start := time.Now()
	cmds := nodeSection(t)
	if len(cmds) == 0 || cmds[0] != "make build" {
		t.Fatalf("the node section does not start with make build: %q", cmds)
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(buildDaemon(t), filepath.Join(dir, "bin", "deadlabourd")); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: make build", time.Since(start).Round(time.Millisecond))
	influx := influxtest.Start(t)
	const model = "meta-llama/Llama-3.1-8B-Instruct"
	fake, err := fakeupstream.Start(context.Background(), fakeupstream.Options{Models: []string{model}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	proxy, admin := freeAddr(t), freeAddr(t)
	cfgPath := filepath.Join(dir, "etc", "config.yaml")
	replacer := strings.NewReplacer(
		"/etc/deadlabour/config.yaml", cfgPath,
		"http://127.0.0.1:8000", fake.URL(),
		"http://127.0.0.1:8086", influx.URL(),
		"127.0.0.1:8081", proxy,
		"--measure 60s", "--measure 1s",
		`"MODEL"`, `"`+model+`"`,
	)

	var daemon *exec.Cmd
	daemonDone := make(chan error, 1)
	daemonLog := filepath.Join(dir, "run.log")
	deadline := time.Now().Add(30 * time.Second)
	for _, line := range cmds[1:] {
		cmd := replacer.Replace(comment.ReplaceAllString(line, ""))
		fields := strings.Fields(cmd)
		sub := ""
		for i, f := range fields {
			if f == "bin/deadlabourd" && i+1 < len(fields) {
				sub = fields[i+1]
			}
		}
		switch sub {
		case "init":
			cmd += fmt.Sprintf(" --listen %s --admin %s --spool %s --simulate h100:8", proxy, admin, filepath.Join(dir, "spool"))
		case "check-config", "probe", "run":
			cmd += " --simulate h100:8"
		case "report":
			cmd += " --simulated" // records made under --simulate are left out otherwise
		}
		if sub == "run" {
			logf, err := os.Create(daemonLog)
			if err != nil {
				t.Fatal(err)
			}
			// bash runs a lone command in its own process (exec), so the
			// SIGTERM below reaches the daemon itself.
			daemon = exec.Command("bash", "-c", cmd)
			daemon.Dir, daemon.Stdout, daemon.Stderr = dir, logf, logf
			if err := daemon.Start(); err != nil {
				t.Fatal(err)
			}
			logf.Close()
			go func() { daemonDone <- daemon.Wait() }()
			t.Cleanup(func() {
				daemon.Process.Kill()
				if t.Failed() {
					b, _ := os.ReadFile(daemonLog)
					t.Logf("run's log:\n%s", b)
				}
			})
			testutil.WaitFor(t, "run to be ready", 30*time.Second, func() bool {
				resp, err := http.Get("http://" + admin + "/readyz")
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == http.StatusOK
			})
			continue
		}
		// audit and report wait for the record: settled, then delivered.
		want := map[string]string{"audit": "first-1", "report": model, "curl": `"object":"chat.completion"`}[cmp(sub, fields[0])]
		for {
			c := exec.Command("bash", "-c", cmd)
			c.Dir = dir
			out, err := c.CombinedOutput()
			if err == nil && strings.Contains(string(out), want) {
				t.Logf("%s $ %s\n%s", time.Since(start).Round(time.Millisecond), cmd, out)
				break
			}
			if (sub != "audit" && sub != "report") || time.Now().After(deadline) {
				t.Fatalf("$ %s\n%v\n%s", cmd, err, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if daemon == nil {
		t.Fatal("the node section runs no daemon")
	}
	daemon.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-daemonDone:
		if err != nil {
			t.Errorf("run exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("run did not stop within 30 s of SIGTERM")
	}
}

// cmp is the subcommand, or the program where there is none (curl).
func cmp(sub, program string) string {
	if sub != "" {
		return sub
	}
	return program
}

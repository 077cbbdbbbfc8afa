package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/daemon"
	"github.com/deadlabour/deadlabour/internal/fakeupstream"
	"github.com/deadlabour/deadlabour/internal/influxtest"
)

// notifySocket listens where $NOTIFY_SOCKET points, as systemd does, and
// hands over every datagram received.
func notifySocket(t *testing.T) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	msgs := make(chan string, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			select {
			case msgs <- string(buf[:n]):
			default: // a test that stopped reading does not block the reader
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return msgs
}

func nextMessage(t *testing.T, msgs <-chan string, timeout time.Duration) string {
	t.Helper()
	select {
	case m := <-msgs:
		return m
	case <-time.After(timeout):
		t.Fatalf("no message on the notify socket within %v", timeout)
		return ""
	}
}

// Under systemd (Type=notify): READY=1 only once the proxy accepts
// requests, watchdog pings at half of WatchdogSec while the loop runs, and
// STOPPING=1 at shutdown.
func TestSystemdNotify(t *testing.T) {
	msgs := notifySocket(t)
	const watchdog = 400 * time.Millisecond
	t.Setenv("WATCHDOG_USEC", fmt.Sprint(watchdog.Microseconds()))
	t.Setenv("WATCHDOG_PID", fmt.Sprint(os.Getpid()))
	influx := influxtest.Start(t)
	fake, err := fakeupstream.Start(context.Background(), fakeupstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	yaml := fmt.Sprintf(`node: notify
gpu:
  interval: 20ms
admin:
  listen: ""
influx:
  url: %s
  bucket: %s
spool:
  dir: %s
upstreams:
  - name: up
    listen: 127.0.0.1:0
    target: %s
    gpus: [0]
`, influx.URL(), influx.Bucket(), t.TempDir(), fake.URL())
	d := startDaemon(t, yaml, "h100:1")

	first := nextMessage(t, msgs, 10*time.Second)
	if !strings.HasPrefix(first, "READY=1\n") || !strings.Contains(first, "STATUS=metering 1 upstream(s) on 1 GPU(s)") {
		t.Fatalf("first notification %q, want READY=1 with a status", first)
	}
	// Ready means serving: the proxy answers at once.
	if status, _ := call(t, d.proxyURL("up"), []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`), "notify-1"); status != http.StatusOK {
		t.Fatalf("status %d right after READY=1", status)
	}

	// Pings every watchdog/2 (the loop ticks every 20 ms, so not on every tick).
	const window = 1200 * time.Millisecond
	pings := 0
	deadline := time.After(window)
collect:
	for {
		select {
		case m := <-msgs:
			if m != "WATCHDOG=1" {
				t.Fatalf("unexpected notification %q while running", m)
			}
			pings++
		case <-deadline:
			break collect
		}
	}
	// At most one per half period (not one per tick: that would be 60); at
	// least a few, however slow a loaded machine ticks.
	if most := int(window/(watchdog/2)) + 1; pings < 2 || pings > most {
		t.Errorf("%d watchdog pings in %v, want 2 to %d (one per %v)", pings, window, most, watchdog/2)
	}

	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	var stopping bool
	for len(msgs) > 0 {
		m := <-msgs
		stopping = stopping || strings.HasPrefix(m, "STOPPING=1\n")
	}
	if !stopping {
		t.Error("no STOPPING=1 at shutdown")
	}
}

// unitFile is the systemd unit as shipped.
const unitFile = "../systemd/deadlabourd.service"

// systemdAnalyze finds systemd-analyze and checks that it runs here (it
// needs no running systemd for verify and --offline security); the test
// skips, saying why, only when it cannot. CI installs it (.ci/run).
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd; .ci/run does): the unit is not verified")
	}
	if out, err := exec.Command(bin, "--version").CombinedOutput(); err != nil {
		t.Skipf("systemd-analyze does not run here: %v\n%s", err, out)
	}
	return bin
}

// installedUnit is the unit as `make install` writes it, with ExecStart
// pointing at an executable that exists, so that verify checks the rest.
func installedUnit(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "ExecStart=/usr/local/bin/deadlabourd ") {
		t.Fatalf("%s: ExecStart no longer names /usr/local/bin/deadlabourd, which make install rewrites", unitFile)
	}
	unit := strings.Replace(string(b), "/usr/local/bin/deadlabourd", self, 1)
	path := filepath.Join(t.TempDir(), "deadlabourd.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestUnitVerifies(t *testing.T) {
	bin := systemdAnalyze(t)
	cmd := exec.Command(bin, "verify", "--man=no", installedUnit(t))
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The exposure that docs/operations.md records is what systemd-analyze
// says today, and within the target of 3.0.
func TestUnitSecurityExposure(t *testing.T) {
	bin := systemdAnalyze(t)
	out, err := exec.Command(bin, "security", "--offline=yes", "--no-pager", installedUnit(t)).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for deadlabourd\.service: (\d+\.\d)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure in:\n%s", out)
	}
	exposure := string(m[1])
	if x, _ := strconv.ParseFloat(exposure, 64); x > 3.0 {
		t.Errorf("exposure %s, target at most 3.0:\n%s", exposure, out)
	}
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	if want := "Overall exposure level for deadlabourd.service: " + exposure; !strings.Contains(string(doc), want) {
		t.Errorf("docs/operations.md does not record %q; update it from:\n%s", want, out)
	}
}

// The unit gives the daemon longer to stop than its own deadlines, so that
// systemd never SIGKILLs a flush; it is Type=notify with a watchdog; and it
// has every hardening setting the issue asks for.
func TestUnitSettings(t *testing.T) {
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	settings := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			settings[k] = append(settings[k], v)
		}
	}
	one := func(k string) string {
		if len(settings[k]) != 1 {
			t.Errorf("%s is set %d times, want once", k, len(settings[k]))
			return ""
		}
		return settings[k][0]
	}
	stop, err := time.ParseDuration(one("TimeoutStopSec"))
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v", err)
	}
	if margin := 5 * time.Second; stop < daemon.DrainTimeout+daemon.FlushTimeout+margin {
		t.Errorf("TimeoutStopSec=%v; the daemon may take %v (drain) + %v (flush): want at least %v more",
			stop, daemon.DrainTimeout, daemon.FlushTimeout, margin)
	}
	for k, want := range map[string]string{
		"Type": "notify", "NotifyAccess": "main", "Restart": "on-failure", "User": "deadlabour",
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"StateDirectory": "deadlabour", "CapabilityBoundingSet": "", "DevicePolicy": "closed",
		"LoadCredential": "influx-token:/etc/deadlabour/influx-token",
	} {
		if got := one(k); got != want {
			t.Errorf("%s=%s, want %s", k, got, want)
		}
	}
	if w, err := time.ParseDuration(one("WatchdogSec")); err != nil || w <= 0 {
		t.Errorf("WatchdogSec=%s: want a positive duration", one("WatchdogSec"))
	}
	allowed := map[string]bool{"/dev/nvidiactl rw": true, "char-nvidia-frontend rw": true, "/dev/nvidia-uvm rw": true}
	for _, d := range settings["DeviceAllow"] {
		if !allowed[d] {
			t.Errorf("DeviceAllow=%s: only the NVIDIA control, GPU and UVM nodes are allowed", d)
		}
		delete(allowed, d)
	}
	for d := range allowed {
		t.Errorf("DeviceAllow=%s is missing", d)
	}
	// The credential the unit loads is the file the installed config reads.
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mk), "token_file: /run/credentials/deadlabourd.service/influx-token") {
		t.Error("make install does not point influx.token_file at the credential LoadCredential=influx-token provides")
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

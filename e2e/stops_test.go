package e2e

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// stopDeadline is the systemd unit's TimeoutStopSec: how long a stop may
// take before systemd kills the daemon.
func stopDeadline(t *testing.T) time.Duration {
	t.Helper()
	unit, err := os.ReadFile("../systemd/deadlabourd.service")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^TimeoutStopSec=(\d+)(s?)$`).FindSubmatch(unit)
	if m == nil {
		t.Fatal("systemd/deadlabourd.service sets no TimeoutStopSec=<seconds>")
	}
	d, err := time.ParseDuration(string(m[1]) + "s")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// stall opens a connection to addr and sends a request whose body promises
// 1000 bytes and brings 10: the server waits for the rest.
func stall(t *testing.T, addr, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_, err = io.WriteString(c, "POST "+path+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"id\":\"st\"")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestEveryStopFinishes: an event post and a proxied upload that both stall
// mid-body, and an idle kept-alive connection, do not hold the daemon past
// the unit's TimeoutStopSec: the stalled clients are cut at the drain
// deadline, and each cut is logged.
func TestEveryStopFinishes(t *testing.T) {
	deadline := stopDeadline(t)
	d := startDaemon(t, daemonConfig("", "b", t.TempDir(), startFake(t).URL(), ""), "h100:1")
	stall(t, d.AdminAddr(), "/v1/requests")
	stall(t, d.ProxyListener("up").Addr().String(), "/v1/chat/completions")
	idle, err := net.Dial("tcp", d.AdminAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	time.Sleep(500 * time.Millisecond) // both handlers are reading their bodies

	start := time.Now()
	go d.stop()
	select {
	case <-d.exited:
	case <-time.After(deadline):
		t.Fatalf("the daemon is still running %s after the stop (TimeoutStopSec): systemd would kill it", deadline)
	}
	took := time.Since(start)
	t.Logf("stopped in %s with two stalled clients (TimeoutStopSec=%s)", took.Round(time.Millisecond), deadline)
	logs := d.log.String()
	for _, want := range []string{"event API: posts still arriving at the shutdown deadline are cut and not recorded",
		"requests still in flight at the deadline are cut"} {
		if !strings.Contains(logs, want) {
			t.Errorf("no log line %q", want)
		}
	}
}

// TestIdleConnectionsClosed: a kept-alive connection with no request for
// listeners.idle_timeout is closed by the server, on a proxy and on the
// admin listener.
func TestIdleConnectionsClosed(t *testing.T) {
	d := startDaemon(t, daemonConfig("", "b", t.TempDir(), startFake(t).URL(), "listeners:\n  idle_timeout: 300ms\n"), "h100:1")
	for name, addr := range map[string]string{"admin": d.AdminAddr(), "proxy": d.ProxyListener("up").Addr().String()} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		path := "/healthz"
		if name == "proxy" {
			path = "/v1/models"
		}
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.Close {
			t.Fatalf("%s: the server closes after one request; the test needs a kept-alive connection", name)
		}
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = br.ReadByte()
		took := time.Since(start)
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			t.Errorf("%s: an idle kept-alive connection is still open after %s (idle_timeout 300ms)", name, took.Round(time.Millisecond))
		case err == nil:
			t.Errorf("%s: the server sent a byte on an idle connection", name)
		default:
			t.Logf("%s: idle connection closed after %s (%v)", name, took.Round(time.Millisecond), err)
		}
	}
}

// TestLogNamesUpstreamOnce: a proxy's log lines carry upstream=<name>
// once, not twice (a logger With("upstream") applied in the daemon and in
// the proxy).
func TestLogNamesUpstreamOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close() // nothing listens: the upstream is unreachable
	d := startDaemon(t, daemonConfig("", "b", t.TempDir(), dead, ""), "h100:1")
	res, err := http.Post(d.proxyURL("up")+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	found := false
	for _, line := range strings.Split(d.log.String(), "\n") {
		if !strings.Contains(line, "upstream unreachable") {
			continue
		}
		found = true
		if n := strings.Count(line, "upstream=up"); n != 1 {
			t.Errorf("upstream=up %d times in %q; want once", n, line)
		}
	}
	if !found {
		t.Fatalf("no upstream-unreachable line in the log:\n%s", d.log.String())
	}
}

package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/deadlabour/deadlabour/internal/influxtest"
)

// TestMain checks that no test leaves a goroutine behind: every goroutine
// the daemon starts has an owner that stops it. No ignores are needed: the
// tests stop every server and InfluxDB they start.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// eventsDaemonConfig is a daemon with the event API on its admin listener
// (no token), one upstream "svc" on GPU 0, and a real InfluxDB.
func eventsDaemonConfig(t *testing.T, influx *influxtest.Server) string {
	return fmt.Sprintf(`node: shutdown
gpu:
  interval: 50ms
  report_interval: 1s
attribution:
  settle_delay: 100ms
admin:
  listen: 127.0.0.1:0
influx:
  url: %s
  bucket: %s
  flush_interval: 100ms
spool:
  dir: %s
upstreams:
  - name: svc
    listen: 127.0.0.1:0
    target: %s
    gpus: [0]
`, influx.URL(), influx.Bucket(), t.TempDir(), startFake(t).URL())
}

// TestListenerFailureShutsDown: a proxy listener that fails (here: closed
// under the server) stops the daemon in order, as SIGTERM would: run
// returns the listener's error, every goroutine it started ends (the event
// API's expiry loop too; goleak checks), and the records of the requests
// served before are in InfluxDB.
func TestListenerFailureShutsDown(t *testing.T) {
	influx := influxtest.Start(t)
	d := startDaemon(t, eventsDaemonConfig(t, influx), "h100:1")
	for i := range 5 {
		if err := complete(d.proxyURL("svc"), fmt.Sprintf("lf-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	d.proxies[0].ln.Close()
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon did not stop within 30 s after its listener failed")
	}
	if d.runErr == nil || !strings.Contains(d.runErr.Error(), "upstream svc") {
		t.Errorf("run() = %v, want the listener's error naming upstream svc", d.runErr)
	}
	if !strings.Contains(d.log.String(), "listener failed; shutting down") {
		t.Error("no log line about the failed listener")
	}
	if n := influx.Count(t, "deadlabour_request", ""); n != 5 {
		t.Errorf("%d records in InfluxDB, want the 5 served before the failure", n)
	}
	if _, err := http.Get(d.adminURL() + "/healthz"); err == nil {
		t.Error("the admin listener still answers after the daemon stopped")
	}
}

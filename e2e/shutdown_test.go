package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
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
// (no token), one upstream "up" on GPU 0, and a real InfluxDB.
func eventsDaemonConfig(t *testing.T, influx *influxtest.Server) string {
	return daemonConfig(influx.URL(), influx.Bucket(), t.TempDir(), startFake(t).URL(), "")
}

// postEvent posts one event-API body and returns the status.
func postEvent(client *http.Client, admin, body string) (int, error) {
	res, err := client.Post(admin+"/v1/requests", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	io.Copy(io.Discard, res.Body)
	return res.StatusCode, nil
}

// TestShutdownWithEventsInFlight: spans posted to the event API while the
// daemon shuts down are either accepted and recorded, or refused: a 202
// always means a record in InfluxDB (SIGTERM stops accepting before the
// engine stops).
func TestShutdownWithEventsInFlight(t *testing.T) {
	influx := influxtest.Start(t)
	d := startDaemon(t, eventsDaemonConfig(t, influx), "h100:1")
	admin := d.adminURL()
	client := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()

	var mu sync.Mutex
	accepted := map[string]time.Time{}
	refused := map[int]int{}
	var wg sync.WaitGroup
	var stopOnce sync.Once
	stopped := make(chan struct{})
	for g := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-d.exited:
					return
				default:
				}
				id := fmt.Sprintf("sd-%d-%06d", g, i)
				now := time.Now().UTC()
				body := fmt.Sprintf(`{"id":%q,"upstream":"up","start":%q,"end":%q,"completion_tokens":3}`,
					id, now.Add(-20*time.Millisecond).Format(time.RFC3339Nano), now.Format(time.RFC3339Nano))
				status, err := postEvent(client, admin, body)
				mu.Lock()
				switch {
				case err != nil:
					refused[0]++
				case status == http.StatusAccepted:
					accepted[id] = now
				default:
					refused[status]++
				}
				n := len(accepted)
				mu.Unlock()
				if n >= 50 {
					stopOnce.Do(func() {
						go func() {
							defer close(stopped)
							if err := d.stop(); err != nil {
								t.Error(err)
							}
						}()
					})
				}
				if err != nil {
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	<-stopped
	for status := range refused {
		if status != 0 && status != http.StatusServiceUnavailable {
			t.Errorf("refused with %d during shutdown; want 503 or no connection", status)
		}
	}
	exactlyOnce(t, storedIDs(t, influx), accepted)
	t.Logf("%d spans accepted and recorded; refused: %v (0: no connection)", len(accepted), refused)
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
		if err := complete(d.proxyURL("up"), fmt.Sprintf("lf-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	d.ProxyListener("up").Close()
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon did not stop within 30 s after its listener failed")
	}
	if d.runErr == nil || !strings.Contains(d.runErr.Error(), "upstream up") {
		t.Errorf("run() = %v, want the listener's error naming upstream up", d.runErr)
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

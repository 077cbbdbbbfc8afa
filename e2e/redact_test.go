package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/cmd/deadlabourd/cli"
	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/internal/testutil"
)

// TestInfluxPasswordNotLogged: an influx.url with user:password@ works, but
// the password reaches neither the journal (the daemon's log lines, the
// sink's) nor check-config's summary nor the report's heading.
func TestInfluxPasswordNotLogged(t *testing.T) {
	const password = "pw-do-not-log-7f3e"
	influx := influxtest.Start(t)
	url := strings.Replace(influx.URL(), "://", "://deadlabour:"+password+"@", 1)
	cfg := daemonConfig(url, influx.Bucket(), t.TempDir(), startFake(t).URL(), "")
	d := startDaemon(t, cfg, "h100:1")
	if err := complete(d.proxyURL("up"), "redact-1"); err != nil {
		t.Fatal(err)
	}
	influx.WaitCount(t, "deadlabour_request", "", 1, 10*time.Second)
	influx.Stop(t) // the sink logs its failing writes, with the URL
	testutil.WaitFor(t, "a failed write", 10*time.Second, func() bool { return strings.Contains(d.log.String(), "writes to InfluxDB failed") })
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	path := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(path, []byte(cfg), 0o600)
	cli.Run(context.Background(), []string{"check-config", "--gpus", "1", path}, &out, &errb)
	influx.Restart(t)
	cli.Run(context.Background(), []string{"report", "--config", path, "--simulated"}, &out, &errb)

	all := d.log.String() + out.String() + errb.String()
	if strings.Contains(all, password) {
		t.Errorf("the password appears in the logs or the output:\n%s", all)
	}
	if n := strings.Count(all, "deadlabour:xxxxx@127.0.0.1"); n < 4 {
		t.Errorf("the redacted URL appears %d times, want it in the start line, the sink's lines, check-config and report:\n%s", n, all)
	}
}

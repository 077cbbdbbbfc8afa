package e2e

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/deadlabour/deadlabour/internal/influxtest"
	"github.com/deadlabour/deadlabour/internal/testutil"
	"github.com/deadlabour/deadlabour/schema"
	"github.com/deadlabour/deadlabour/sink"
)

// Chaos tests: the daemon under load while InfluxDB goes away, the spool
// fills, the token is wrong, or the daemon itself is killed. All against
// the real InfluxDB, on loopback, bounded in time. The outage lasts
// $DEADLABOUR_CHAOS_OUTAGE (default 5s; `make chaos` runs 60s).

// load sends requests through the proxy: a new one every `every`, at
// most 8 at a time, until stopped.
type load struct {
	mu       sync.Mutex
	finished map[string]time.Time // request id -> when the client had the whole answer
	failed   int
	stop     func()
	wg       sync.WaitGroup
}

func startLoad(url, prefix string, every time.Duration) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{finished: map[string]time.Time{}, stop: cancel}
	sem := make(chan struct{}, 8)
	l.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			id := fmt.Sprintf("%s-%06d", prefix, i)
			l.wg.Go(func() {
				defer func() { <-sem }()
				err := complete(url, id)
				l.mu.Lock()
				defer l.mu.Unlock()
				if err != nil {
					l.failed++
					return
				}
				l.finished[id] = time.Now()
			})
		}
	})
	return l
}

// halt stops sending and waits for the requests in flight.
func (l *load) halt() map[string]time.Time {
	l.stop()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.finished
}

// storedIDs counts the records of each request id in InfluxDB.
func storedIDs(t *testing.T, influx *influxtest.Server) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, r := range influx.Rows(t, "SELECT request_id FROM deadlabour_request") {
		id, _ := r.String("request_id")
		out[id]++
	}
	return out
}

// exactlyOnce checks that every id in want has exactly one record, and that
// no record is there twice or for a request nobody sent.
func exactlyOnce(t *testing.T, stored map[string]int, want map[string]time.Time) {
	t.Helper()
	atMostOnce(t, stored, want, true)
}

// atMostOnce checks that no record is there twice or for a request not in
// want, and if all, that every request of want has one.
func atMostOnce(t *testing.T, stored map[string]int, want map[string]time.Time, all bool) {
	t.Helper()
	var missing, dup, stranger []string
	for id := range want {
		if stored[id] == 0 && all {
			missing = append(missing, id)
		}
	}
	for id, n := range stored {
		if n > 1 {
			dup = append(dup, fmt.Sprintf("%s x%d", id, n))
		}
		if _, ok := want[id]; !ok {
			stranger = append(stranger, id)
		}
	}
	sort.Strings(missing)
	if len(missing)+len(dup)+len(stranger) > 0 {
		t.Errorf("%d requests, %d records: missing %d %.10v, duplicated %v, unknown %.10v",
			len(want), len(stored), len(missing), missing, dup, stranger)
	}
}

func outage() time.Duration {
	if v := os.Getenv("DEADLABOUR_CHAOS_OUTAGE"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return 5 * time.Second
}

// TestChaosInfluxOutage: InfluxDB stopped under steady load, then started:
// every request's record arrives exactly once and the spool drains.
func TestChaosInfluxOutage(t *testing.T) {
	influx := influxtest.Start(t)
	fake := startFake(t)
	d := startDaemon(t, daemonConfig(influx.URL(), influx.Bucket(), t.TempDir(), fake.URL(), ""), "h100:2")
	l := startLoad(d.proxyURL("up"), "out", 25*time.Millisecond) // 40 requests/s

	time.Sleep(time.Second)
	influx.Stop(t)
	down := outage()
	t.Logf("InfluxDB down for %v under load", down)
	time.Sleep(min(2*time.Second, down))
	code, body := testutil.GetJSON(t, d.adminURL()+"/readyz")
	if code != http.StatusOK || body["status"] != "degraded" || !strings.Contains(fmt.Sprint(body["reasons"]), "sink: retrying") {
		t.Errorf("/readyz during the outage = %d %v; want 200 degraded, sink retrying", code, body)
	}
	time.Sleep(down - min(2*time.Second, down))
	m := testutil.Scrape(t, d.adminURL())
	if m["deadlabour_sink_spool_points{kind=cost}"] < 10 || m["deadlabour_sink_oldest_undelivered_seconds"] < down.Seconds()/2 {
		t.Errorf("at the end of the outage: %v records spooled, oldest %vs; want them waiting",
			m["deadlabour_sink_spool_points{kind=cost}"], m["deadlabour_sink_oldest_undelivered_seconds"])
	}
	influx.Restart(t)
	time.Sleep(time.Second)
	sent := l.halt()

	testutil.WaitFor(t, "the spool to drain", 20*time.Second, func() bool {
		m := testutil.Scrape(t, d.adminURL())
		return m["deadlabour_sink_spool_points{kind=cost}"] == 0 && m["deadlabour_sink_oldest_undelivered_seconds"] < 2
	})
	m = testutil.Scrape(t, d.adminURL())
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	if l.failed > 0 {
		t.Errorf("%d requests failed through the proxy during the outage", l.failed)
	}
	exactlyOnce(t, storedIDs(t, influx), sent)
	t.Logf("%d requests, %.0f write retries, %.0f points sent", len(sent), sumPrefix(m, "deadlabour_sink_write_retries_total"), m["deadlabour_sink_points_sent_total"])
	if m["deadlabour_sink_points_dropped_total{kind=cost,reason=spool_full}"] != 0 {
		t.Errorf("records dropped: %v", m)
	}
}

func sumPrefix(m map[string]float64, prefix string) float64 {
	var s float64
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			s += v
		}
	}
	return s
}

// TestChaosSpoolCap: the spool reaches spool.max_bytes during an outage.
// Telemetry is dropped first; what is missing from InfluxDB afterwards is
// exactly what /metrics counts as dropped, kind by kind.
func TestChaosSpoolCap(t *testing.T) {
	influx := influxtest.Start(t)
	fake := startFake(t)
	d := startDaemon(t, daemonConfig(influx.URL(), influx.Bucket(), t.TempDir(), fake.URL(), "  max_bytes: 1MiB\n"), "h100:1")
	influx.Stop(t)
	const n = 1800 // more than 1 MiB of records
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := complete(d.proxyURL("up"), fmt.Sprintf("cap-%05d", i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// Records over the cap are dropped at the next commit (until then they
	// count in spool_bytes); telemetry is refused as it comes (a window a
	// second).
	testutil.WaitFor(t, "records and telemetry dropped at the cap", 10*time.Second, func() bool {
		m := testutil.Scrape(t, d.adminURL())
		return m["deadlabour_sink_points_dropped_total{kind=cost,reason=spool_full}"] > 0 &&
			m["deadlabour_sink_points_dropped_total{kind=telemetry,reason=spool_full}"] > 0 &&
			m["deadlabour_sink_spool_bytes"] <= 1<<20
	})
	m := testutil.Scrape(t, d.adminURL())
	if tel, cost := m["deadlabour_sink_spool_points{kind=telemetry}"], m["deadlabour_sink_spool_points{kind=cost}"]; 20*tel > cost {
		t.Errorf("at the cap: %v bytes spooled, %v records, %v telemetry; want at most 1 MiB, mostly records",
			m["deadlabour_sink_spool_bytes"], m["deadlabour_sink_spool_points{kind=cost}"], m["deadlabour_sink_spool_points{kind=telemetry}"])
	}
	if !strings.Contains(d.log.String(), "spool full (spool.max_bytes): points are dropped to make room") {
		t.Error("no log line about the drops")
	}
	influx.Restart(t)
	testutil.WaitFor(t, "the spool to drain", 20*time.Second, func() bool {
		return testutil.Scrape(t, d.adminURL())["deadlabour_sink_spool_points{kind=cost}"] == 0
	})
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}

	m = d.gathered(t) // the final /metrics, after the last flush
	count := func(ms ...string) float64 {
		var c int
		for _, meas := range ms {
			c += influx.Count(t, meas, "")
		}
		return float64(c)
	}
	kinds := []struct {
		kind         string
		measurements []string
	}{
		{"cost", []string{schema.MeasurementRequest, schema.MeasurementIdle}},
		{"telemetry", []string{schema.MeasurementGPU, schema.MeasurementHealth}},
	}
	for _, k := range kinds {
		enq := m["deadlabour_sink_points_enqueued_total{kind="+k.kind+"}"]
		dropped := sumPrefix(m, "deadlabour_sink_points_dropped_total{kind="+k.kind+",")
		dead := m["deadlabour_sink_points_dead_lettered_total{kind="+k.kind+"}"]
		stored := count(k.measurements...)
		if enq-stored != dropped+dead || dropped == 0 {
			t.Errorf("%s: %v enqueued, %v in InfluxDB: %v missing; /metrics counts %v dropped, %v dead-lettered",
				k.kind, enq, stored, enq-stored, dropped, dead)
		}
		t.Logf("%s: %v enqueued, %v stored, %v dropped", k.kind, enq, stored, dropped)
	}
	if got := m["deadlabour_requests_total{status=200,upstream=up}"]; got != n {
		t.Errorf("requests_total %v, want %d", got, n)
	}
	stored := storedIDs(t, influx)
	for id, c := range stored {
		if c != 1 {
			t.Errorf("%s stored %d times", id, c)
		}
	}
	if missing := n - len(stored); missing == 0 || float64(missing) > m["deadlabour_sink_points_dropped_total{kind=cost,reason=spool_full}"] {
		t.Errorf("%d records missing, %v cost points dropped", missing, m["deadlabour_sink_points_dropped_total{kind=cost,reason=spool_full}"])
	}
}

// TestChaosWrongToken: InfluxDB refuses the token. Nothing is delivered and
// nothing lost: /readyz says why (503), one log line says so, shutdown
// leaves the records in the spool, and a restart with the right token
// delivers each exactly once.
func TestChaosWrongToken(t *testing.T) {
	influx := influxtest.StartWith(t, influxtest.Options{Auth: true})
	fake := startFake(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("admin:not-the-password\n"), 0o600)
	cfg := daemonConfig(influx.URL(), influx.Bucket(), dir, fake.URL(), "")
	cfg = strings.Replace(cfg, "influx:\n", "influx:\n  token_env: \"\"\n  token_file: "+tokenFile+"\n", 1)
	d := startDaemon(t, cfg, "h100:1")
	sent := map[string]time.Time{}
	for i := range 20 {
		id := fmt.Sprintf("tok-%02d", i)
		if err := complete(d.proxyURL("up"), id); err != nil {
			t.Fatal(err)
		}
		sent[id] = time.Now()
	}
	var body map[string]any
	testutil.WaitFor(t, "/readyz to say why", 10*time.Second, func() bool {
		var code int
		code, body = testutil.GetJSON(t, d.adminURL()+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(fmt.Sprint(body["reasons"]), "sink: unauthorized: authorization failed")
	})
	time.Sleep(time.Second) // a few more refusals
	if n := strings.Count(d.log.String(), "InfluxDB refused the token"); n != 1 {
		t.Errorf("%d log lines about the token, want 1:\n%s", n, d.log)
	}
	if m := testutil.Scrape(t, d.adminURL()); m["deadlabour_sink_state{state=unauthorized}"] != 1 || m["deadlabour_sink_spool_points{kind=cost}"] < 20 {
		t.Errorf("metrics: state unauthorized %v, %v records spooled; want 1, at least 20",
			m["deadlabour_sink_state{state=unauthorized}"], m["deadlabour_sink_spool_points{kind=cost}"])
	}
	start := time.Now()
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("shutdown took %v: a refused token should not hold the flush to its deadline", took)
	}
	if n := influx.Count(t, "deadlabour_request", ""); n != 0 {
		t.Fatalf("%d records stored with a wrong token", n)
	}

	os.WriteFile(tokenFile, []byte(influx.Token()+"\n"), 0o600)
	d2 := startDaemon(t, cfg, "h100:1")
	influx.WaitCount(t, "deadlabour_request", "", 20, 10*time.Second)
	if err := d2.stop(); err != nil {
		t.Fatal(err)
	}
	exactlyOnce(t, storedIDs(t, influx), sent)
}

// spooledIDs are the request ids of the records committed to a running
// daemon's spool (GET /v1/spool).
func spooledIDs(t *testing.T, admin string) map[string]time.Time {
	t.Helper()
	resp, err := http.Get(admin + "/v1/spool?measurement=" + schema.MeasurementRequest)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || strings.Contains(string(body), "# error") {
		t.Fatalf("GET /v1/spool: %d, %v: %.200s", resp.StatusCode, err, body)
	}
	ids := map[string]time.Time{}
	for _, m := range requestIDRe.FindAllStringSubmatch(string(body), -1) {
		ids[m[1]] = time.Time{}
	}
	return ids
}

var requestIDRe = regexp.MustCompile(`request_id="([^"\\]*)"`)

// buildDaemon compiles deadlabourd into a temporary directory.
func buildDaemon(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "deadlabourd")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/deadlabourd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "CGO_CFLAGS=-O2 -g -Wno-deprecated-declarations")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// process is the daemon run as a subprocess.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it exited; err is set then
	err  error
	log  string
	// The addresses it listens on, as its "deadlabourd running" line says
	// (the config asks for port 0: the kernel picks free ones).
	admin, proxy string
}

// runningLine finds the addresses in a daemon's "deadlabourd running" line.
var runningLine = regexp.MustCompile(`msg="deadlabourd running".* upstreams=up@(\S+) admin=(\S+)`)

func startProcess(t *testing.T, bin, cfgPath string) *process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "daemon.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "run", "--config", cfgPath, "--simulate", "h100:1")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("daemon log:\n%s", b)
		}
	})
	testutil.WaitFor(t, "the daemon to say where it listens", 30*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		m := runningLine.FindSubmatch(b)
		if m == nil {
			return false
		}
		p.proxy, p.admin = string(m[1]), string(m[2])
		return true
	})
	testutil.WaitFor(t, "the daemon to answer /healthz", 30*time.Second, func() bool {
		resp, err := http.Get("http://" + p.admin + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// TestChaosSIGKILL: the daemon is killed (SIGKILL) under load and started
// again on the same spool. Every record that was durable just before the
// kill (in InfluxDB, or committed to the spool: bbolt fsyncs a commit
// before anyone can read it, and GET /v1/spool reads what was committed)
// is in InfluxDB exactly once after the restart: records already sent but
// not yet deleted from the spool are sent again and overwrite themselves.
func TestChaosSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the daemon")
	}
	influx := influxtest.Start(t)
	fake := startFake(t)
	bin := buildDaemon(t)
	cfg := daemonConfig(influx.URL(), influx.Bucket(), t.TempDir(), fake.URL(), "")
	cfg = strings.Replace(cfg, "flush_interval: 100ms", "flush_interval: 1s", 1) // more waits in the spool
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)

	p := startProcess(t, bin, cfgPath)
	l := startLoad("http://"+p.proxy, "kill", 10*time.Millisecond)
	time.Sleep(2500 * time.Millisecond)
	// What is durable now: committed to the spool (read first), or in
	// InfluxDB (read second: a record delivered and deleted from the spool
	// in between is there). Whatever commits later is not counted.
	durable := spooledIDs(t, "http://"+p.admin)
	inSpool := len(durable)
	storedAtKill := storedIDs(t, influx)
	for id := range storedAtKill {
		durable[id] = time.Time{}
	}
	killedAt := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	finished := l.halt()

	p2 := startProcess(t, bin, cfgPath)
	testutil.WaitFor(t, "the replayed spool to drain", 20*time.Second, func() bool {
		m := testutil.Scrape(t, "http://"+p2.admin)
		return m["deadlabour_sink_spool_points{kind=cost}"] == 0 && m["deadlabour_sink_points_sent_total"] > 0
	})
	p2.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p2.done:
		if p2.err != nil {
			t.Errorf("daemon after SIGTERM: %v", p2.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not stop on SIGTERM")
	}

	stored := storedIDs(t, influx)
	known := maps.Clone(finished) // a record may be durable before its client read the whole answer
	maps.Copy(known, durable)
	atMostOnce(t, stored, known, false) // nothing twice, nothing unknown
	var lost []string
	for id := range durable {
		if stored[id] != 1 {
			lost = append(lost, id)
		}
	}
	sort.Strings(lost)
	if len(lost) > 0 || inSpool == 0 || len(durable) < 100 {
		t.Errorf("%d of %d records durable at the kill (%d in the spool, %d in InfluxDB) are not stored once: %.12v",
			len(lost), len(durable), inSpool, len(storedAtKill), lost)
	}
	t.Logf("%d requests finished; %d records durable at the kill (%d in the spool, %d in InfluxDB); %d stored after the restart",
		len(finished), len(durable), inSpool, len(storedAtKill), len(stored))
	// Answered before the last commit could hold its end (the fsync
	// interval, 200ms, and one poll, 50ms, before the kill): recorded from
	// the crash journal if not before, once.
	journaled := killedAt.Add(-250 * time.Millisecond)
	var unsaved []string
	answered := 0
	for id, at := range finished {
		if at.Before(journaled) {
			answered++
			if stored[id] != 1 {
				unsaved = append(unsaved, id)
			}
		}
	}
	sort.Strings(unsaved)
	if len(unsaved) > 0 {
		t.Errorf("%d of %d requests answered more than 250ms before the kill are not stored once: %.12v", len(unsaved), answered, unsaved)
	}
	t.Logf("%d of %d requests answered more than 250ms before the kill are lost", len(unsaved), answered)
	b, _ := os.ReadFile(p2.log)
	if !strings.Contains(string(b), "recorded from the crash journal") {
		t.Errorf("the restarted daemon did not record the requests of the crash journal")
	}
	if !strings.Contains(string(b), "replaying points left in the spool") {
		t.Errorf("the restarted daemon did not say it replays the spool")
	}
}

// TestChaosRefusedEveryLine: a gateway in front of InfluxDB answers 400 to
// every write. The daemon holds its records instead of dead-lettering them:
// /readyz is 503 and says why, the state metric says refused, one log line,
// no dead letters; once the gateway lets writes through, a restart
// delivers every record exactly once.
func TestChaosRefusedEveryLine(t *testing.T) {
	influx := influxtest.Start(t)
	target, _ := url.Parse(influx.URL())
	var refusing atomic.Bool
	refusing.Store(true)
	gateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refusing.Load() && strings.HasSuffix(r.URL.Path, "/write") {
			http.Error(w, "gateway: writes are not allowed from this network", http.StatusBadRequest)
			return
		}
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	}))
	defer gateway.Close()
	dir := t.TempDir()
	cfg := daemonConfig(gateway.URL, influx.Bucket(), dir, startFake(t).URL(), "")
	d := startDaemon(t, cfg, "h100:1")
	sent := map[string]time.Time{}
	for i := range 20 {
		id := fmt.Sprintf("gw-%02d", i)
		if err := complete(d.proxyURL("up"), id); err != nil {
			t.Fatal(err)
		}
		sent[id] = time.Now()
	}
	testutil.WaitFor(t, "/readyz to say why", 10*time.Second, func() bool {
		code, body := testutil.GetJSON(t, d.adminURL()+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(fmt.Sprint(body["reasons"]), "sink: refused: gateway: writes are not allowed")
	})
	m := testutil.Scrape(t, d.adminURL())
	if m["deadlabour_sink_state{state=refused}"] != 1 || sumPrefix(m, "deadlabour_sink_points_dead_lettered_total") != 0 {
		t.Errorf("metrics: state refused %v, dead-lettered %v; want 1, 0", m["deadlabour_sink_state{state=refused}"],
			sumPrefix(m, "deadlabour_sink_points_dead_lettered_total"))
	}
	if n := strings.Count(d.log.String(), "InfluxDB refuses lines alike"); n != 1 {
		t.Errorf("%d log lines about it, want 1", n)
	}
	start := time.Now()
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("shutdown took %v: a refused sink should not hold the flush to its deadline", took)
	}
	if _, err := os.Stat(filepath.Join(dir, sink.DeadLetterFile)); err == nil {
		t.Error("a dead-letter file was written")
	}

	refusing.Store(false)
	d2 := startDaemon(t, cfg, "h100:1")
	influx.WaitCount(t, "deadlabour_request", "", 20, 10*time.Second)
	if err := d2.stop(); err != nil {
		t.Fatal(err)
	}
	exactlyOnce(t, storedIDs(t, influx), sent)
}

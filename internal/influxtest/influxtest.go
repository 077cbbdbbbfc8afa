// Package influxtest gives tests a real InfluxDB OSS 1.8.3 process, never a
// mock: what the sink writes is parsed, typed and stored by the same server
// users run.
//
// Start builds influxd once if needed (scripts/influxdb.sh install, about a
// minute, cached in .cache/influxdb/bin), runs it on free 127.0.0.1 ports with
// its state in t.TempDir(), creates the database [Database] and stops it when
// the test ends. Each call gets its own server (about 50 ms to start), so
// tests can stop, restart and break it without disturbing each other. Flux
// is off (it adds about 2 s of start-up); scripts/influxdb.sh turns it on.
package influxtest

import (
	"cmp"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Database is the database Start creates; the v2 write API addresses it as
// the bucket Database+"/autogen".
const Database = "deadlabour"

// EnvBinary names an influxd binary to use instead of the cached build.
const EnvBinary = "DEADLABOUR_INFLUXD"

const (
	startTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
	// cachedBinary is where scripts/influxdb.sh install puts influxd,
	// relative to the module root.
	cachedBinary = ".cache/influxdb/bin/influxd"
	installer    = "scripts/influxdb.sh"
	// startAttempts bounds retries when a picked port is taken before
	// influxd binds it.
	startAttempts = 3
)

// configTemplate is shared with scripts/influxdb.sh.
//
//go:embed influxd.conf
var configTemplate string

var errAddrInUse = errors.New("address already in use")

// Server is one influxd process owned by one test. Its methods are meant for
// the test's goroutine; Query, Count and Write may also run concurrently.
type Server struct {
	opts     Options
	bin      string
	dir      string
	httpAddr string
	rpcAddr  string
	client   *http.Client
	proc     *process // nil while stopped
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once Wait returned; err is set then
	err  error
}

// Options change the server Start runs; the zero value is Start's.
type Options struct {
	// Auth turns on InfluxDB's auth-enabled. StartWith creates the admin
	// user [AdminUser] (password [AdminPassword]); the harness's own
	// queries and writes use it, and a writer needs Token().
	Auth bool
	// MaxBodyBytes is max-body-size: a write whose (decompressed) body is
	// larger is refused with 413. Zero keeps InfluxDB's 25 000 000.
	MaxBodyBytes int
}

// The admin user StartWith creates when Options.Auth is set.
const (
	AdminUser     = "admin"
	AdminPassword = "deadlabour-test"
)

// Start runs a fresh InfluxDB with an empty database [Database] and stops it
// when the test ends. It fails the test if influxd cannot be built or started.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return StartWith(tb, Options{})
}

// StartWith is Start with options.
func StartWith(tb testing.TB, opts Options) *Server {
	tb.Helper()
	bin, err := binary()
	if err != nil {
		tb.Fatalf("influxtest: %v", err)
	}
	s := &Server{
		opts: opts,
		bin:  bin,
		dir:  tb.TempDir(),
		// No keep-alive: no idle connection goroutines for goleak to
		// find, and no stale connection after a restart.
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	for attempt := 1; ; attempt++ {
		if s.httpAddr, s.rpcAddr, err = freeAddrs(); err != nil {
			tb.Fatalf("influxtest: %v", err)
		}
		err = s.start()
		if err == nil {
			break
		}
		if !errors.Is(err, errAddrInUse) || attempt == startAttempts {
			tb.Fatalf("influxtest: %v\n%s", err, s.LogTail())
		}
	}
	tb.Cleanup(func() {
		if err := s.stop(); err != nil {
			tb.Errorf("influxtest: %v", err)
		}
		if tb.Failed() {
			tb.Logf("influxtest: influxd log:\n%s", s.LogTail())
		}
	})
	if opts.Auth {
		// With no user yet, InfluxDB lets anyone create the first admin.
		if _, err := s.doQuery("", "", "CREATE USER "+AdminUser+" WITH PASSWORD "+QuoteString(AdminPassword)+" WITH ALL PRIVILEGES"); err != nil {
			tb.Fatalf("influxtest: %v", err)
		}
	}
	s.Exec(tb, "CREATE DATABASE "+Database)
	return s
}

// Token is what a v2 write API client sends to this server: "user:password"
// with Options.Auth, empty without.
func (s *Server) Token() string {
	if !s.opts.Auth {
		return ""
	}
	return AdminUser + ":" + AdminPassword
}

// credentials are the harness's user and password ("" without auth).
func (s *Server) credentials() (user, password string) {
	if !s.opts.Auth {
		return "", ""
	}
	return AdminUser, AdminPassword
}

// URL is the server's base URL, e.g. http://127.0.0.1:40123.
func (s *Server) URL() string { return "http://" + s.httpAddr }

// DB is the database Start created.
func (s *Server) DB() string { return Database }

// Bucket is DB()'s default retention policy as a v2 write API bucket.
func (s *Server) Bucket() string { return Database + "/autogen" }

// Dir is the server's state directory (config, data, log).
func (s *Server) Dir() string { return s.dir }

// Stop shuts the server down (SIGTERM, then SIGKILL after 10 s); its port
// then refuses connections. Stopping a stopped server does nothing.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	if err := s.stop(); err != nil {
		tb.Fatalf("influxtest: %v", err)
	}
}

// Restart stops the server if it runs and starts it again on the same port
// with the same data.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop(tb)
	if err := s.start(); err != nil {
		tb.Fatalf("influxtest: restart on %s: %v\n%s", s.httpAddr, err, s.LogTail())
	}
}

// LogTail is the end of influxd's log, for failure messages.
func (s *Server) LogTail() string {
	b, err := os.ReadFile(s.logPath())
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

func (s *Server) logPath() string { return filepath.Join(s.dir, "influxd.log") }

func (s *Server) start() error {
	conf := strings.NewReplacer(
		"@DIR@", s.dir,
		"@HTTP_ADDR@", s.httpAddr,
		"@RPC_ADDR@", s.rpcAddr,
		"@FLUX@", "false",
		// Options change the template's own defaults, so that its other
		// users (scripts) need not know them.
		"auth-enabled = false", "auth-enabled = "+strconv.FormatBool(s.opts.Auth),
		"max-body-size = 25000000", "max-body-size = "+strconv.Itoa(cmp.Or(s.opts.MaxBodyBytes, 25_000_000)),
	).Replace(configTemplate)
	confPath := filepath.Join(s.dir, "influxd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return err
	}
	logf, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child holds its own descriptor
	logStart, err := logf.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.bin, "run", "-config", confPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.proc = p

	const listening = `msg="Listening on HTTP"`
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-p.done:
			s.proc = nil
			if log := s.logSince(logStart); strings.Contains(log, errAddrInUse.Error()) {
				return fmt.Errorf("influxd on %s, %s: %w", s.httpAddr, s.rpcAddr, errAddrInUse)
			}
			return fmt.Errorf("influxd exited during start-up: %v", p.err)
		default:
		}
		// Our process must say it listens on our port: a stranger who
		// took the port could answer /ping too.
		log := s.logSince(logStart)
		if strings.Contains(log, listening) && strings.Contains(log, "addr="+s.httpAddr+" ") && s.ping() == nil {
			return nil
		}
		if time.Now().After(deadline) {
			err := fmt.Errorf("influxd did not answer /ping on %s within %v", s.httpAddr, startTimeout)
			return errors.Join(err, s.stop())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) logSince(offset int64) string {
	b, _ := os.ReadFile(s.logPath())
	if int64(len(b)) < offset {
		return ""
	}
	return string(b[offset:])
}

func (s *Server) stop() error {
	p := s.proc
	if p == nil {
		return nil
	}
	s.proc = nil
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop influxd: %w", err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill influxd: %w", err)
	}
	<-p.done
	return fmt.Errorf("influxd ignored SIGTERM for %v and was killed", stopTimeout)
}

func (s *Server) ping() error {
	resp, err := s.client.Get(s.URL() + "/ping")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("/ping: %s", resp.Status)
	}
	return nil
}

// freeAddrs picks two loopback addresses nobody listens on. influxd binds
// them a moment later; Start retries if someone was faster.
func freeAddrs() (httpAddr, rpcAddr string, err error) {
	var addrs [2]string
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", "", fmt.Errorf("pick a free port: %w", err)
		}
		defer l.Close()
		addrs[i] = l.Addr().String()
	}
	return addrs[0], addrs[1], nil
}

// binary finds influxd: $DEADLABOUR_INFLUXD, else the cached build under the
// module root, building it first if it is missing.
func binary() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvBinary, p, err)
		}
		return p, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, cachedBinary)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	cmd := exec.Command("bash", filepath.Join(root, installer), "install")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s install (run `make influxdb` to see it build): %w\n%s", installer, err, out)
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s install left no binary: %w", installer, err)
	}
	return bin, nil
}

// moduleRoot is the nearest directory above the working directory (a test's
// package directory) that holds go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory; set " + EnvBinary)
		}
		dir = parent
	}
}

package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/collector/host"
	"github.com/deadlabour/deadlabour/collector/requests"
	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/redact"
	"github.com/deadlabour/deadlabour/sink"
)

func nowFunc() time.Time { return time.Now() }

// Shutdown deadlines. The systemd unit's TimeoutStopSec must exceed their sum.
const (
	drainTimeout = 10 * time.Second // requests in flight finish
	flushTimeout = 10 * time.Second // the sink delivers what is queued
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", stderr)
	cfgPath := fs.String("config", "/etc/deadlabour/config.yaml", "configuration file")
	simulate := fs.String("simulate", "", "simulate GPUs with go-nvml's mock servers, e.g. h100:8 (a100, h200, b200; 1-16)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	format := fs.String("log-format", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	log, err := newLogger(stderr, *level, *format)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	cfg, err := config.Load(*cfgPath, -1)
	if err != nil {
		return err
	}
	d, err := newDaemon(ctx, cfg, *simulate, log)
	if err != nil {
		return err
	}
	tuneGC(os.Getenv)
	return d.run(ctx)
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// daemon is everything `run` starts, wired together.
type daemon struct {
	cfg       *config.Config
	log       *slog.Logger
	gpu       *gpu.Collector  // nil without GPUs
	sim       *gpu.Simulation // non-nil with --simulate
	resolver  *gpuResolver    // nil unless an upstream names its processes
	queue     *spanQueue
	engine    *engine
	writer    *sink.Writer
	obs       *observer
	proxies   []*proxyServer
	admin     *http.Server
	adminLn   net.Listener
	audit     *auditStore      // nil when attribution.audit_records is 0
	events    *requests.Events // the event API; nil without an admin listener
	eventGate eventGate        // closed at shutdown, with the proxies
	simulated bool
	ready     atomic.Bool
	notify    *notifier // systemd
}

type proxyServer struct {
	name  string
	ln    net.Listener
	srv   *http.Server
	proxy *requests.Proxy
	wg    sync.WaitGroup // handlers in flight
}

func newDaemon(ctx context.Context, cfg *config.Config, simulate string, log *slog.Logger) (_ *daemon, err error) {
	d := &daemon{cfg: cfg, log: log, queue: newSpanQueue(16), simulated: simulate != "", notify: newNotifier(log)}
	defer func() {
		if err != nil {
			d.closeListeners()
			if d.gpu != nil {
				d.gpu.Close()
			}
		}
	}()

	// GPUs: the real NVML, the simulator, or none.
	gpuCount := -1
	if cfg.GPU.Enabled || simulate != "" {
		lib, err := nvmlLibrary(simulate, cfg.GPU.LibraryPath, *cfg, d.queue.Load)
		if err != nil {
			return nil, err
		}
		d.sim, _ = lib.(*gpu.Simulation)
		d.gpu, err = gpu.Open(lib, log, nowFunc())
		switch {
		case errors.Is(err, gpu.ErrNoDriver):
			log.Warn("no NVIDIA driver: running without GPUs (host energy only)", "reason", err)
		case err != nil:
			return nil, err
		default:
			gpuCount = len(d.gpu.Devices())
			log.Info("GPUs found", "count", gpuCount, "driver", d.gpu.Driver(), "simulated", d.simulated)
		}
	} else {
		log.Info("GPUs disabled in the config (gpu.enabled: false): host energy only")
	}
	if gpuCount >= 0 {
		if problems := cfg.Validate(gpuCount); len(problems) > 0 {
			return nil, &config.Error{Problems: problems}
		}
	}

	params, sources, err := d.params()
	if err != nil {
		return nil, err
	}
	hostc := host.Open(ctx, hostOptions(ctx, cfg, log), log)
	ledger, err := estimator.New(params)
	if err != nil {
		return nil, err
	}
	telemetry, err := sink.NewGPUAggregator(cfg.GPU.ReportInterval.D())
	if err != nil {
		return nil, err
	}

	token, err := cfg.InfluxToken(os.Getenv)
	if err != nil {
		return nil, err
	}
	if d.writer, err = newWriter(cfg, token, log); err != nil {
		return nil, err
	}

	schema := requestSchema(cfg, log)
	d.engine = &engine{
		log: log.With("component", "engine"), interval: cfg.GPU.Interval.D(), now: nowFunc,
		host: hostc, queue: d.queue, ledger: ledger, telemetry: telemetry,
		idle: newIdleAggregator(cfg.GPU.ReportInterval.D()), out: d.writer, schema: schema,
		node: cfg.Node, simulated: d.simulated, warned: map[string]bool{}, alive: d.notify.alive,
		carbon: newCarbonWatch(ledger.Params().Carbon.Steps),
	}
	if d.gpu != nil {
		d.engine.gpu = d.gpu
	}
	if cfg.Attribution.AuditRecords > 0 {
		d.audit = newAuditStore(ledger.Params(), sources, cfg.Attribution.AuditRecords, cfg.Attribution.AuditWindow.D())
		d.audit.schema = schema
		d.engine.onRecord, d.engine.onSettled = d.audit.addRecord, d.audit.addSettled
	}
	d.obs = newObserver(d, string(hostc.Method()))
	d.engine.obs = d.obs

	d.newResolver()
	if err := d.listen(); err != nil {
		return nil, err
	}
	return d, nil
}

// listen opens every listener before anything runs, so that a port in use
// is an error at start, not a log line later.
func (d *daemon) listen() error {
	secret, err := d.tenantSecret()
	if err != nil {
		return err
	}
	budget := requests.NewBodyBudget(int64(d.cfg.Proxy.MaxBufferedBytes), d.cfg.Proxy.BudgetWait.D())
	d.obs.bodyBudget(budget)
	for _, u := range d.cfg.Upstreams {
		p, err := requests.New(requests.Options{
			BodyBudget: budget,
			Name:       u.Name, Target: u.Target, Devices: d.upstreamDevices(u), DevicesFunc: d.devicesFunc(u.Name), TenantHeader: u.TenantHeader,
			TenantHeaderRaw: u.TenantHeaderRaw, TenantSecret: secret, MaxRequestBytes: int64(u.MaxBodyBytes), Now: nowFunc,
			NoIncludeUsage: u.IncludeUsage != nil && !*u.IncludeUsage, HeaderTimeout: u.ResponseHeaderTimeout.D(),
			BodyReadTimeout: d.cfg.Proxy.BodyReadTimeout.D(), PreserveHost: u.PreserveHost,
			Logger: d.log.With("upstream", u.Name),
		}, d.queue)
		if err != nil {
			return fmt.Errorf("upstream %s: %w", u.Name, err)
		}
		ln, err := net.Listen("tcp", u.Listen)
		if err != nil {
			return fmt.Errorf("upstream %s: %w", u.Name, err)
		}
		ps := &proxyServer{name: u.Name, ln: ln, proxy: p}
		ps.srv = &http.Server{
			Handler:           ps.track(p),
			ReadHeaderTimeout: 30 * time.Second,
			ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelDebug),
		}
		d.proxies = append(d.proxies, ps)
	}
	if d.cfg.Admin.Listen != "" {
		ln, err := net.Listen("tcp", d.cfg.Admin.Listen)
		if err != nil {
			return fmt.Errorf("admin: %w", err)
		}
		d.adminLn = ln
		if err := d.newEvents(secret); err != nil {
			return err
		}
		h, err := d.adminHandler()
		if err != nil {
			return err
		}
		d.admin = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	}
	return nil
}

// tenantSecret reads the HMAC key of tenants, creating a random one in the
// spool directory on first start.
func (d *daemon) tenantSecret() ([]byte, error) {
	path := d.cfg.Attribution.TenantSecretFile
	if path == "" {
		path = filepath.Join(d.cfg.Spool.Dir, "tenant.key")
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			key := make([]byte, 32)
			rand.Read(key)
			if err := os.MkdirAll(d.cfg.Spool.Dir, 0o700); err != nil {
				return nil, fmt.Errorf("tenant secret: %w", err)
			}
			if err := os.WriteFile(path, key, 0o600); err != nil {
				return nil, fmt.Errorf("tenant secret: %w", err)
			}
			d.log.Info("created a tenant secret", "path", path)
		}
	}
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tenant secret: %w", err)
	}
	if len(key) < 16 {
		return nil, fmt.Errorf("tenant secret %s: %d bytes, want at least 16", path, len(key))
	}
	return key, nil
}

func (ps *proxyServer) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ps.wg.Add(1)
		defer ps.wg.Done()
		h.ServeHTTP(w, r)
	})
}

func (d *daemon) closeListeners() {
	for _, p := range d.proxies {
		p.ln.Close()
	}
	if d.adminLn != nil {
		d.adminLn.Close()
	}
}

// run serves until ctx is done or a listener fails, then shuts down in
// order: stop taking requests (proxies and the event API) and let those in
// flight finish, settle and flush the ledger, deliver what is queued, close
// the admin listener and NVML.
func (d *daemon) run(ctx context.Context) error {
	var wg sync.WaitGroup
	serveErr := make(chan error, len(d.proxies)+1)
	for _, p := range d.proxies {
		wg.Go(func() {
			if err := p.srv.Serve(p.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("upstream %s: %w", p.name, err)
			}
		})
	}
	if d.admin != nil {
		wg.Go(func() {
			if err := d.admin.Serve(d.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("admin: %w", err)
			}
		})
	}
	stopEvents := d.startEvents(ctx)
	stopEngine := startOwned(ctx, d.engine.Run)
	stopResolver := d.startResolver(ctx)
	stopWriter := startOwned(ctx, func(ctx context.Context) { d.writer.Run(ctx) })
	d.ready.Store(true)
	names := make([]string, len(d.proxies))
	for i, p := range d.proxies {
		names[i] = p.name + "@" + p.ln.Addr().String()
	}
	admin := ""
	if d.adminLn != nil {
		admin = d.adminLn.Addr().String()
	}
	d.log.Info("deadlabourd running", "node", d.cfg.Node, "upstreams", strings.Join(names, ","), "admin", admin, "gpus", d.gpuCount(),
		"simulated", d.simulated, "influx", redact.URL(d.cfg.Influx.URL))
	d.notify.ready(fmt.Sprintf("metering %d upstream(s) on %d GPU(s)", len(d.proxies), d.gpuCount()))

	var runErr error
	select {
	case <-ctx.Done():
		d.log.Info("shutting down", "cause", context.Cause(ctx))
	case runErr = <-serveErr:
		d.log.Error("listener failed; shutting down", "err", runErr)
	}
	d.ready.Store(false)
	d.notify.stopping("draining requests and flushing records")

	// 1. Stop taking requests; those in flight finish (or are cut at the
	// deadline, and recorded as client_closed). The event API refuses
	// posts from now on (the admin listener keeps answering /healthz,
	// /readyz and /metrics until the end).
	drainCtx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	for _, p := range d.proxies {
		if err := p.srv.Shutdown(drainCtx); err != nil {
			d.log.Warn("requests still in flight at the deadline are cut", "upstream", p.name)
			p.srv.Close()
		}
	}
	cancel()
	for _, p := range d.proxies {
		p.wg.Wait()
		p.proxy.CloseIdleConnections()
	}
	stopEvents()
	stopResolver()
	// 2. Settle and flush the ledger.
	stopEngine()
	// 3. Deliver what is queued, under a deadline.
	stopWriter()
	flushCtx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	undelivered, err := d.writer.Close(flushCtx)
	cancel()
	if err != nil {
		d.log.Warn("points left in the spool at shutdown; the next start sends them", "points", undelivered, "err", err)
	}
	if d.admin != nil {
		d.admin.Close()
	}
	wg.Wait()
	if d.gpu != nil {
		if err := d.gpu.Close(); err != nil {
			d.log.Warn("NVML shutdown", "err", err)
		}
	}
	d.log.Info("stopped", "points_sent", d.writer.Stats().Sent)
	return runErr
}

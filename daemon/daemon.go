package daemon

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deadlabour/deadlabour/admin"
	"github.com/deadlabour/deadlabour/audit"
	"github.com/deadlabour/deadlabour/collector/forward"
	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/collector/host"
	"github.com/deadlabour/deadlabour/collector/k8s"
	"github.com/deadlabour/deadlabour/collector/requests"
	"github.com/deadlabour/deadlabour/config"
	"github.com/deadlabour/deadlabour/engine"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/internal/redact"
	"github.com/deadlabour/deadlabour/observe"
	"github.com/deadlabour/deadlabour/params"
	"github.com/deadlabour/deadlabour/sink"
)

func nowFunc() time.Time { return time.Now() }

// Shutdown deadlines. The systemd unit's TimeoutStopSec must exceed their sum.
const (
	DrainTimeout = 10 * time.Second // requests in flight finish
	FlushTimeout = 10 * time.Second // the sink delivers what is queued
)

// Daemon is everything `deadlabourd run` starts, wired together.
type Daemon struct {
	cfg       *config.Config
	log       *slog.Logger
	gpu       *gpu.Collector  // nil without GPUs
	sim       *gpu.Simulation // non-nil with --simulate
	resolver  *gpuResolver    // nil unless an upstream names its processes
	discovery *modelDiscovery // nil unless an upstream has discover_models
	queue     *engine.SpanQueue
	engine    *engine.Engine
	writer    *sink.Writer
	obs       *observe.Observer
	proxies   []*proxyServer
	admin     *admin.Server     // nil without an admin listener
	metrics   *admin.Server     // nil without admin.metrics_listen
	pods      *k8s.PodResources // nil unless kubernetes.pod_resources_socket
	audit     *audit.Store      // nil when attribution.audit_records is 0
	events    *requests.Events  // the event API; nil without an admin listener
	eventGate eventGate         // closed at shutdown, with the proxies
	otlp      *otlpServer       // the trace receiver; nil without otlp.sources
	simulated bool
	ready     atomic.Bool
	notify    *notifier // systemd

	fwd *forward.Forwarder // forwarding mode (forward.url, daemon/forward.go); nil otherwise
}

type proxyServer struct {
	name  string
	ln    net.Listener
	srv   *http.Server
	proxy *requests.Proxy
	wg    sync.WaitGroup // handlers in flight
}

// New builds the daemon from cfg: the GPUs (real, simulated with simulate,
// e.g. "h100:8", or none), the meters, the ledger, the sink, the proxies
// and the admin listener, every listener open. Run runs it.
func New(ctx context.Context, cfg *config.Config, simulate string, log *slog.Logger) (_ *Daemon, err error) {
	// What check-config checks beyond the file, before anything opens.
	if problems := cfg.Preflight(ctx, nil); len(problems) > 0 {
		return nil, &config.Error{Problems: problems}
	}
	d := &Daemon{cfg: cfg, log: log, queue: engine.NewSpanQueue(16), simulated: simulate != "", notify: newNotifier(log)}
	defer func() {
		if err != nil {
			d.closeListeners()
			if d.gpu != nil {
				d.gpu.Close()
			}
		}
	}()

	if err := d.newForward(); err != nil {
		return nil, err
	}
	// GPUs: the real NVML, the simulator, or none.
	gpuCount := -1
	if cfg.GPU.Enabled || simulate != "" {
		lib, err := NVMLLibrary(simulate, cfg.GPU.LibraryPath, *cfg, d.queue.Load)
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

	var gpus []gpu.DeviceInfo
	if d.gpu != nil {
		gpus = d.gpu.Devices()
	}
	p, sources, err := params.Build(cfg, gpus, d.simulated, log)
	if err != nil {
		return nil, err
	}
	// No factor passes silently: a built-in world average standing in for
	// a missing configuration is a warning, and the records say so too.
	for _, w := range cfg.DefaultFactorWarnings() {
		log.Warn(w)
	}
	for _, w := range cfg.DeprecationWarnings(cfg.Path()) {
		log.Warn(w)
	}
	for _, w := range cfg.PermissionWarnings() {
		log.Warn(w)
	}
	hostc := host.Open(ctx, hostOptions(ctx, cfg, log), log)
	ledger, err := estimator.New(p)
	if err != nil {
		return nil, err
	}
	telemetry, err := engine.NewGPUAggregator(cfg.GPU.ReportInterval.D())
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

	tags := newModelTags(cfg, log.With("component", "models"))
	d.discovery = newModelDiscovery(cfg, tags, log.With("component", "models"))
	schema := requestSchema(cfg, tags, log)
	gpuIDs := make([]string, 0, len(gpus))
	for _, g := range gpus {
		gpuIDs = append(gpuIDs, g.ID)
	}
	models := make([]string, len(cfg.Models))
	for i, m := range cfg.Models {
		models[i] = m.Name
	}
	upstreams := make([]string, len(cfg.Upstreams))
	for i, u := range cfg.Upstreams {
		upstreams[i] = u.Name
	}
	d.obs = observe.New(observe.Options{
		Node: cfg.Node, Simulated: d.simulated, Interval: cfg.GPU.Interval.D(), ReportInterval: cfg.GPU.ReportInterval.D(),
		Now: nowFunc, GPUs: gpuIDs, GPUHealth: d.gpuHealth, HostMeter: string(hostc.Method()),
		Sink: d.writer, SinkMetrics: d.writer.Collector(), Ready: d.ready.Load, SpoolLimit: int64(cfg.Spool.MaxBytes),
		Schema: schema, Models: models, Upstreams: upstreams, Meters: meters(gpus, hostc.Method()),
	})
	opts := engine.Options{
		Log: log.With("component", "engine"), Interval: cfg.GPU.Interval.D(), ReportInterval: cfg.GPU.ReportInterval.D(),
		Now: nowFunc, Host: hostc, Queue: d.queue, Ledger: ledger, Telemetry: telemetry, Out: d.writer, Schema: schema,
		Node: cfg.Node, Simulated: d.simulated, Observer: d.obs, Alive: d.notify.alive,
		WearMarks: d.loadWearMarks(), SaveWearMarks: d.saveWearMarks, Journal: d.writer,
	}
	if d.gpu != nil {
		opts.GPU = d.gpu
	}
	if cfg.Attribution.AuditRecords > 0 {
		d.audit = audit.New(ledger.Params(), sources, cfg.Attribution.AuditRecords, cfg.Attribution.AuditWindow.D(), schema)
		opts.OnRecord, opts.OnSettled = d.audit.AddRecord, d.audit.AddSettled
	}
	opts.Traces = d.otlpTraces()
	d.engine = engine.New(opts)

	d.newResolver()
	if err := d.newPods(); err != nil {
		return nil, err
	}
	if err := d.listen(); err != nil {
		return nil, err
	}
	if err := d.listenOTLP(opts.Traces); err != nil {
		return nil, err
	}
	return d, nil
}

// listen opens every listener before anything runs, so that a port in use
// is an error at start, not a log line later.
func (d *Daemon) listen() error {
	secret, err := d.tenantSecret()
	if err != nil {
		return err
	}
	budget := requests.NewBodyBudget(int64(d.cfg.Proxy.MaxBufferedBytes), d.cfg.Proxy.BudgetWait.D())
	d.obs.BodyBudget(budget)
	for _, u := range d.cfg.Upstreams {
		p, err := requests.New(requests.Options{
			BodyBudget: budget,
			Name:       u.Name, Target: u.Target, Devices: d.upstreamDevices(u), DevicesFunc: d.devicesFunc(u.Name), TenantHeader: u.TenantHeader,
			TenantHeaderRaw: u.TenantHeaderRaw, TenantSecret: secret, MaxRequestBytes: int64(u.MaxBodyBytes), Now: nowFunc,
			NoIncludeUsage: u.IncludeUsage != nil && !*u.IncludeUsage, HeaderTimeout: u.ResponseHeaderTimeout.D(),
			BodyReadTimeout: d.cfg.Proxy.BodyReadTimeout.D(), PreserveHost: u.PreserveHost,
			Logger: d.log, // the proxy adds upstream=<name> itself
		}, d.spans())
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
		d.limitServer(ps.srv, "upstream "+u.Name, false)
		d.proxies = append(d.proxies, ps)
	}
	if d.cfg.Admin.Listen != "" {
		srv, err := admin.Listen(d.cfg.Admin.Listen)
		if err != nil {
			return fmt.Errorf("admin: %w", err)
		}
		d.admin = srv
		if err := d.newEvents(secret); err != nil {
			return err
		}
		// Each feature registers its routes. A nil audit store registers
		// its route too: it answers that the store is off.
		h, err := admin.Handler(d.cfg.Admin.Listen, d.cfg.Admin.TokenFile, d.log,
			d.audit, d.obs, admin.RegistrarFunc(d.registerEvents), admin.Pprof{})
		if err != nil {
			return err
		}
		srv.Handle(h)
		srv.Configure(func(s *http.Server) { d.limitServer(s, "admin", true) })
	}
	if d.cfg.Admin.MetricsListen != "" {
		// Only what Prometheus and the kubelet ask, never behind the
		// token: safe beyond loopback.
		srv, err := admin.Listen(d.cfg.Admin.MetricsListen)
		if err != nil {
			return fmt.Errorf("admin.metrics_listen: %w", err)
		}
		d.metrics = srv
		mux := http.NewServeMux()
		d.obs.RegisterProbes(mux)
		srv.Handle(mux)
		srv.Configure(func(s *http.Server) { d.limitServer(s, "admin.metrics_listen", true) })
	}
	return nil
}

// tenantSecret reads the HMAC key of tenants, creating a random one in the
// spool directory on first start.
func (d *Daemon) tenantSecret() ([]byte, error) {
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
	return config.ReadTenantSecret(path)
}

func (ps *proxyServer) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ps.wg.Add(1)
		defer ps.wg.Done()
		h.ServeHTTP(w, r)
	})
}

func (d *Daemon) closeListeners() {
	for _, p := range d.proxies {
		p.ln.Close()
	}
	if d.admin != nil {
		d.admin.Close()
	}
	if d.metrics != nil {
		d.metrics.Close()
	}
	if d.pods != nil {
		d.pods.Close()
	}
	d.closeOTLP()
}

// Run serves until ctx is done or a listener fails, then shuts down in
// order: stop taking requests (proxies and the event API) and let those in
// flight finish, settle and flush the ledger, deliver what is queued, close
// the admin listener and NVML.
func (d *Daemon) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	serveErr := make(chan error, len(d.proxies)+4) // + admin, metrics, otlp http, otlp grpc
	for _, p := range d.proxies {
		wg.Go(func() {
			if err := p.srv.Serve(p.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("upstream %s: %w", p.name, err)
			}
		})
	}
	for name, srv := range map[string]*admin.Server{"admin": d.admin, "admin.metrics_listen": d.metrics} {
		if srv != nil {
			wg.Go(func() {
				if err := srv.Serve(); err != nil {
					serveErr <- fmt.Errorf("%s: %w", name, err)
				}
			})
		}
	}
	d.serveOTLP(&wg, serveErr)
	stopEvents := d.startEvents(ctx)
	stopEngine := startOwned(ctx, d.runLedger)
	stopResolver := d.startResolver(ctx)
	stopPods := d.startPods(ctx)
	stopDiscovery := func() {}
	if d.discovery != nil {
		stopDiscovery = startOwned(ctx, d.discovery.Run)
	}
	stopWriter := startOwned(ctx, func(ctx context.Context) { d.writer.Run(ctx) })
	d.ready.Store(true)
	names := make([]string, len(d.proxies))
	for i, p := range d.proxies {
		names[i] = p.name + "@" + p.ln.Addr().String()
	}
	adminAddr := ""
	if d.admin != nil {
		adminAddr = d.admin.Addr().String()
	}
	metricsAddr := ""
	if d.metrics != nil {
		metricsAddr = d.metrics.Addr().String()
	}
	d.log.Info("deadlabourd running", "node", d.cfg.Node, "upstreams", strings.Join(names, ","), "admin", adminAddr, "metrics", metricsAddr, "gpus", d.gpuCount(),
		"simulated", d.simulated, "influx", redact.URL(d.cfg.Influx.URL))
	if addrs := d.otlpAddrs(); addrs != nil {
		d.log.Info("receiving OTLP traces", addrs...)
	}
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
	drainCtx, cancel := context.WithTimeout(context.Background(), DrainTimeout)
	eventsDrained := d.drainEvents(drainCtx)
	for _, p := range d.proxies {
		if err := p.srv.Shutdown(drainCtx); err != nil {
			d.log.Warn("requests still in flight at the deadline are cut", "upstream", p.name)
			p.srv.Close()
		}
	}
	d.stopOTLP(drainCtx)
	<-eventsDrained
	cancel()
	for _, p := range d.proxies {
		p.wg.Wait()
		p.proxy.CloseIdleConnections()
	}
	stopEvents()
	stopResolver()
	stopPods()
	stopDiscovery()
	// 2. Settle and flush the ledger.
	stopEngine()
	// 3. Deliver what is queued, under a deadline.
	stopWriter()
	flushCtx, cancel := context.WithTimeout(context.Background(), FlushTimeout)
	undelivered, err := d.writer.Close(flushCtx)
	cancel()
	if err != nil {
		d.log.Warn("points left in the spool at shutdown; the next start sends them", "points", undelivered, "err", err)
	}
	if d.admin != nil {
		d.admin.Close()
	}
	if d.metrics != nil {
		d.metrics.Close()
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

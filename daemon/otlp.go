package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/deadlabour/deadlabour/admin"
	"github.com/deadlabour/deadlabour/collector/otlp"
	"github.com/deadlabour/deadlabour/engine"
	"github.com/deadlabour/deadlabour/estimator"
)

// otlpServer is the OTLP trace receiver and its listeners (either may be
// off). It runs only when otlp.sources is not empty.
type otlpServer struct {
	recv    *otlp.Receiver
	traces  *engine.TraceQueue
	httpLn  net.Listener // nil: off
	httpSrv *http.Server
	grpcLn  net.Listener // nil: off
	grpcSrv *grpc.Server
}

// otlpTraces makes the queue the receiver hands spans to, for the engine;
// nil without trace sources.
func (d *Daemon) otlpTraces() *engine.TraceQueue {
	o := d.cfg.OTLP
	if !o.Enabled() {
		return nil
	}
	ups := map[string]bool{}
	for _, s := range o.Sources {
		ups[s.Upstream] = true
	}
	return &engine.TraceQueue{Upstreams: ups, MaxDelay: o.MaxDelay.D()}
}

// listenOTLP makes the receiver and opens its listeners.
func (d *Daemon) listenOTLP(traces *engine.TraceQueue) error {
	o := d.cfg.OTLP
	if traces == nil {
		return nil
	}
	var token string
	if o.TokenFile != "" {
		b, err := admin.ReadToken(o.TokenFile)
		if err != nil {
			return fmt.Errorf("otlp.token_file: %w", err)
		}
		token = string(b)
	}
	sources := make([]otlp.Source, 0, len(o.Sources))
	for _, s := range o.Sources {
		src := otlp.Source{ServiceName: s.ServiceName, ServiceInstanceID: s.ServiceInstanceID, HostName: s.HostName,
			Upstream: s.Upstream, Model: s.Model}
		for _, u := range d.cfg.Upstreams {
			if u.Name == s.Upstream {
				src.Devices = d.upstreamDevices(u)
			}
		}
		sources = append(sources, src)
	}
	log := d.log.With("component", "otlp")
	recv, err := otlp.New(otlp.Options{Sources: sources, Token: token, MaxBodyBytes: int64(o.MaxBodyBytes),
		LateAfter: o.MaxDelay.D(), Now: nowFunc, Logger: log}, traceRecorder{traces})
	if err != nil {
		return err
	}
	s := &otlpServer{recv: recv, traces: traces}
	d.otlp = s
	if o.HTTPListen != "" {
		if s.httpLn, err = net.Listen("tcp", o.HTTPListen); err != nil {
			return fmt.Errorf("otlp.http_listen: %w", err)
		}
		s.httpSrv = &http.Server{Handler: recv.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
			WriteTimeout: time.Minute, IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	}
	if o.GRPCListen != "" {
		if s.grpcLn, err = net.Listen("tcp", o.GRPCListen); err != nil {
			return fmt.Errorf("otlp.grpc_listen: %w", err)
		}
		s.grpcSrv = grpc.NewServer(recv.GRPCServerOptions()...)
		recv.RegisterGRPC(s.grpcSrv)
	}
	return d.obs.AddCollector(&otlpMetrics{recv: recv, engine: func() *engine.Engine { return d.engine }})
}

// traceRecorder hands the receiver's spans to the engine, never blocking.
type traceRecorder struct{ q *engine.TraceQueue }

func (r traceRecorder) Record(batch []otlp.Request) error {
	spans := make([]estimator.Span, len(batch))
	for i, req := range batch {
		spans[i] = req.Span
		spans[i].TraceID = req.TraceID
	}
	if !r.q.Add(spans) {
		return &otlp.FullError{Reason: fmt.Sprintf("%d spans wait for the engine", r.q.Len())}
	}
	return nil
}

// closeOTLP closes the listeners (New failed).
func (d *Daemon) closeOTLP() {
	if s := d.otlp; s != nil {
		for _, ln := range []net.Listener{s.httpLn, s.grpcLn} {
			if ln != nil {
				ln.Close()
			}
		}
	}
}

// serveOTLP serves the listeners until stopOTLP.
func (d *Daemon) serveOTLP(wg *sync.WaitGroup, serveErr chan<- error) {
	s := d.otlp
	if s == nil {
		return
	}
	if s.httpSrv != nil {
		wg.Go(func() {
			if err := s.httpSrv.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("otlp http: %w", err)
			}
		})
	}
	if s.grpcSrv != nil {
		wg.Go(func() {
			if err := s.grpcSrv.Serve(s.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				serveErr <- fmt.Errorf("otlp grpc: %w", err)
			}
		})
	}
}

// stopOTLP stops taking spans: exports in flight finish by ctx's deadline,
// then are cut (the exporter retries them). After it, nothing reaches the
// trace queue.
func (d *Daemon) stopOTLP(ctx context.Context) {
	s := d.otlp
	if s == nil {
		return
	}
	if s.httpSrv != nil {
		if err := s.httpSrv.Shutdown(ctx); err != nil {
			s.httpSrv.Close()
		}
	}
	if s.grpcSrv != nil {
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.grpcSrv.GracefulStop()
		}()
		select {
		case <-done:
		case <-ctx.Done():
			s.grpcSrv.Stop()
			<-done
		}
	}
}

// otlpAddrs names the listeners, for the start log line.
func (d *Daemon) otlpAddrs() []any {
	s := d.otlp
	if s == nil {
		return nil
	}
	var out []any
	if s.httpLn != nil {
		out = append(out, "otlp_http", s.httpLn.Addr().String())
	}
	if s.grpcLn != nil {
		out = append(out, "otlp_grpc", s.grpcLn.Addr().String())
	}
	return out
}

// otlpMetrics are the receiver's and the merger's counters on /metrics.
type otlpMetrics struct {
	recv   *otlp.Receiver
	engine func() *engine.Engine
}

var (
	otlpSpansDesc = prometheus.NewDesc("deadlabour_otlp_spans_total",
		"OTLP spans received, and of those: used (handed to the engine), ignored (not inference requests), rejected (inference spans that could not be used), late (used, ended more than otlp.max_delay before they arrived), dropped (in a batch refused as full; the exporter retries).",
		[]string{"outcome"}, nil)
	otlpExportsDesc = prometheus.NewDesc("deadlabour_otlp_exports_total",
		"OTLP export requests answered: ok (success, full or partial) or refused (4xx, 5xx, gRPC errors).",
		[]string{"result"}, nil)
	otlpMergeDesc = prometheus.NewDesc("deadlabour_otlp_requests_total",
		"Proxied requests of traced upstreams: merged (one record from the proxy and the trace), alone (no trace within otlp.max_delay), duplicate (a trace of a request already recorded, dropped).",
		[]string{"result"}, nil)
)

func (m *otlpMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- otlpSpansDesc
	ch <- otlpExportsDesc
	ch <- otlpMergeDesc
}

func (m *otlpMetrics) Collect(ch chan<- prometheus.Metric) {
	st := m.recv.Stats()
	for _, c := range []struct {
		v uint64
		l string
	}{{st.Received, "received"}, {st.Used, "used"}, {st.Ignored, "ignored"}, {st.Rejected, "rejected"}, {st.Late, "late"}, {st.Dropped, "dropped"}} {
		ch <- prometheus.MustNewConstMetric(otlpSpansDesc, prometheus.CounterValue, float64(c.v), c.l)
	}
	ch <- prometheus.MustNewConstMetric(otlpExportsDesc, prometheus.CounterValue, float64(st.Exports), "ok")
	ch <- prometheus.MustNewConstMetric(otlpExportsDesc, prometheus.CounterValue, float64(st.Refused), "refused")
	if e := m.engine(); e != nil {
		merged, dropped, alone := e.MergeStats()
		ch <- prometheus.MustNewConstMetric(otlpMergeDesc, prometheus.CounterValue, float64(merged), "merged")
		ch <- prometheus.MustNewConstMetric(otlpMergeDesc, prometheus.CounterValue, float64(alone), "alone")
		ch <- prometheus.MustNewConstMetric(otlpMergeDesc, prometheus.CounterValue, float64(dropped), "duplicate")
	}
}

// OTLPAddrs are the OTLP listeners' addresses ("" when off), for tests.
func (d *Daemon) OTLPAddrs() (httpAddr, grpcAddr string) {
	if s := d.otlp; s != nil {
		if s.httpLn != nil {
			httpAddr = s.httpLn.Addr().String()
		}
		if s.grpcLn != nil {
			grpcAddr = s.grpcLn.Addr().String()
		}
	}
	return httpAddr, grpcAddr
}

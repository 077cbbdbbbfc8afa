package observe

import (
	"bufio"
	"fmt"
	"math"
	"net/http"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/deadlabour/deadlabour/admin"
	"github.com/deadlabour/deadlabour/collector/gpu"
	"github.com/deadlabour/deadlabour/collector/requests"
	"github.com/deadlabour/deadlabour/estimator"
	"github.com/deadlabour/deadlabour/schema"
	"github.com/deadlabour/deadlabour/sink"
)

// Sink is what the observer needs of the sink.
type Sink interface {
	Stats() sink.Stats
	ScanSpool(yield func(line string) bool) error
}

// Observer keeps the daemon's metrics and answers /healthz and /readyz.
// The engine's goroutine calls Polled and Recorded; HTTP handlers read.
type Observer struct {
	reg        *prometheus.Registry
	node       string
	simulated  bool
	started    time.Time
	interval   time.Duration // engine poll
	report     time.Duration // deadlabour_health period
	now        func() time.Time
	gpus       []string                  // device ids found at start
	gpuHealth  func() []gpu.DeviceHealth // the collector's, one per GPU
	hostMeter  string                    // counter, modelled, or "" without a host meter
	sink       Sink
	ready      func() bool
	spoolLimit int64

	gpuPower, gpuUtil, gpuMemUtil *prometheus.GaugeVec
	energy                        *prometheus.CounterVec
	requests                      *prometheus.CounterVec
	schema                        schema.RequestSchema
	// Sustainability counters: records by model and upstream (cost also
	// by currency), idle shares by device.
	reqEnergy, reqCO2e, reqWater, reqCost      *prometheus.CounterVec
	idleEnergy, idleEmbodied, idleDepreciation *prometheus.CounterVec
	idleCO2e, idleWater                        *prometheus.CounterVec
	poll                                       prometheus.Histogram
	upDesc                                     *prometheus.Desc // deadlabour_collector_up

	mu         sync.Mutex
	lastPoll   time.Time
	hostErr    string
	hostErrAt  time.Time
	nextHealth time.Time
}

// Options are what an Observer reports on.
type Options struct {
	Node           string
	Simulated      bool
	Interval       time.Duration             // the engine's poll
	ReportInterval time.Duration             // the deadlabour_health period
	Now            func() time.Time          // the clock
	GPUs           []string                  // device ids found at start
	GPUHealth      func() []gpu.DeviceHealth // the collector's, one per GPU
	HostMeter      string                    // counter, modelled, or "" without a host meter
	Sink           Sink
	SinkMetrics    prometheus.Collector // the sink's own metrics
	Ready          func() bool          // the daemon is up and not stopping
	SpoolLimit     int64                // spool.max_bytes
	// Schema tags records' models (configured, or other) and names the
	// currency; Models and Upstreams are the configured ones, whose
	// sustainability counters are exported at 0 from the start.
	Schema    schema.RequestSchema
	Models    []string
	Upstreams []string
	// Meters maps each meter's device id (a GPU's, or host) to its method
	// (counter, power_integral, modelled), exported at 0 from the start.
	Meters map[string]estimator.Method
}

// add adds what a record or idle share used; values a counter cannot
// take (negative, NaN, +Inf) are left out.
func add(c *prometheus.CounterVec, v float64, labels ...string) {
	if v >= 0 && !math.IsInf(v, 1) { // NaN fails >= 0
		c.WithLabelValues(labels...).Add(v)
	}
}

// buildInfo is the module's version, its VCS revision and Go's version.
func buildInfo() (version, revision string) {
	version, revision = "unknown", "unknown"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return version, revision
	}
	version = bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			revision = s.Value
		}
	}
	return version, revision
}

// New makes an observer and registers the daemon's metrics.
func New(opt Options) *Observer {
	o := &Observer{
		reg: prometheus.NewRegistry(), node: opt.Node, simulated: opt.Simulated, started: opt.Now(),
		interval: opt.Interval, report: opt.ReportInterval, now: opt.Now, gpus: opt.GPUs,
		hostMeter: opt.HostMeter, sink: opt.Sink, ready: opt.Ready, spoolLimit: opt.SpoolLimit,
		gpuHealth: opt.GPUHealth,
		upDesc: prometheus.NewDesc("deadlabour_collector_up",
			"1 if the collector reads as it should: gpu (no GPU unhealthy), host (its last poll succeeded).", []string{"collector"}, nil),
		gpuPower: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "deadlabour_gpu_power_watts",
			Help: "GPU power at the last poll."}, []string{"gpu"}),
		gpuUtil: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "deadlabour_gpu_utilization_ratio",
			Help: "GPU (SM) utilisation at the last poll, 0 to 1."}, []string{"gpu"}),
		gpuMemUtil: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "deadlabour_gpu_memory_utilization_ratio",
			Help: "GPU memory-controller utilisation at the last poll, 0 to 1."}, []string{"gpu"}),
		energy: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deadlabour_energy_joules_total",
			Help: "Energy measured by each meter (GPU id, or host for CPU and DRAM), by method (counter, power_integral, modelled)."},
			[]string{"device", "method"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deadlabour_requests_total",
			Help: "Requests metered (a record written), by upstream and status."}, []string{"upstream", "status"}),
		poll: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "deadlabour_engine_poll_duration_seconds",
			Help:    "Duration of one poll of the engine: meters, ledger, points handed to the sink.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 3, 10)}),
		schema: opt.Schema,
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	o.reqEnergy = counter("deadlabour_request_energy_joules_total",
		"IT energy (GPU, host, static; before PUE) of the requests metered, by model (configured, or other) and upstream.", "model", "upstream")
	o.reqCO2e = counter("deadlabour_request_co2e_grams_total",
		"Operational CO2e (facility energy x grid intensity) of the requests metered, by model and upstream.", "model", "upstream")
	o.reqWater = counter("deadlabour_request_water_litres_total",
		"Water (on-site and off-site) of the requests metered, by model and upstream.", "model", "upstream")
	o.reqCost = counter("deadlabour_request_cost_total",
		"Dead-labour cost (energy, depreciation, training) of the requests metered, by model, upstream and currency.", "model", "upstream", "currency")
	o.idleEnergy = counter("deadlabour_idle_energy_joules_total",
		"IT energy no request used (measured, and the host's static power), by device (GPU id, or host).", "device")
	o.idleEmbodied = counter("deadlabour_idle_embodied_co2e_grams_total",
		"Embodied CO2e of the hardware worn while no request used it, by device.", "device")
	o.idleDepreciation = counter("deadlabour_idle_depreciation_cost_total",
		"Depreciation of the hardware worn while no request used it, by device and currency.", "device", "currency")
	o.idleCO2e = counter("deadlabour_idle_co2e_grams_total",
		"Operational CO2e (facility energy x grid intensity at the time) of the energy no request used, by device.", "device")
	o.idleWater = counter("deadlabour_idle_water_litres_total",
		"Water (on-site and off-site) of the energy no request used, by device.", "device")
	o.initCounters(opt)
	version, revision := buildInfo()
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "deadlabour_build_info",
		Help: "1, labelled with the daemon's module version, VCS revision and Go version."}, []string{"version", "revision", "goversion"})
	buildInfo.WithLabelValues(version, revision, runtime.Version()).Set(1)
	o.reg.MustRegister(o.reqEnergy, o.reqCO2e, o.reqWater, o.reqCost, o.idleEnergy, o.idleEmbodied, o.idleDepreciation,
		o.idleCO2e, o.idleWater, buildInfo)
	o.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		opt.SinkMetrics,
		o.gpuPower, o.gpuUtil, o.gpuMemUtil, o.energy, o.requests, o.poll,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "deadlabour_gpus",
			Help: "GPUs found at start."}, func() float64 { return float64(len(o.gpus)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "deadlabour_gpus_unhealthy",
			Help: "GPUs the collector marked unhealthy."}, func() float64 { return float64(len(unhealthy(o.gpuHealth()))) }),
		collectorUp{o},
	)
	return o
}

// initCounters exports every counter whose labels are known at start at
// 0, so that rate() and increase() see their first increment.
func (o *Observer) initCounters(opt Options) {
	cur := o.schema.Currency()
	for _, up := range opt.Upstreams {
		o.requests.WithLabelValues(up, "200")
		for _, m := range opt.Models {
			model := o.schema.ModelTag(m)
			for _, c := range []*prometheus.CounterVec{o.reqEnergy, o.reqCO2e, o.reqWater} {
				c.WithLabelValues(model, up)
			}
			o.reqCost.WithLabelValues(model, up, cur)
		}
	}
	for dev, method := range opt.Meters {
		o.energy.WithLabelValues(dev, string(method))
		o.idleEnergy.WithLabelValues(dev)
		o.idleEmbodied.WithLabelValues(dev)
		o.idleDepreciation.WithLabelValues(dev, cur)
		o.idleCO2e.WithLabelValues(dev)
		o.idleWater.WithLabelValues(dev)
	}
}

// BodyBudget exports the proxies' body budget (proxy.max_buffered_bytes).
func (o *Observer) BodyBudget(b *requests.BodyBudget) {
	o.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "deadlabour_proxy_body_budget_refused_total",
			Help: "Metered requests answered 503 because their body found no room in proxy.max_buffered_bytes within the wait."},
			func() float64 { return float64(b.Refused()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "deadlabour_proxy_body_budget_bytes",
			Help: "Bytes of metered request bodies held in memory now, of proxy.max_buffered_bytes."},
			func() float64 { return float64(b.InUse()) }),
	)
}

// collectorUp exports the collectors' health.
type collectorUp struct{ o *Observer }

func (c collectorUp) Describe(ch chan<- *prometheus.Desc) { ch <- c.o.upDesc }
func (c collectorUp) Collect(ch chan<- prometheus.Metric) {
	h := c.o.health()
	if len(c.o.gpus) > 0 {
		ch <- prometheus.MustNewConstMetric(c.o.upDesc, prometheus.GaugeValue, b2f(len(h.unhealthy) == 0), "gpu")
	}
	if c.o.hostMeter != "" {
		ch <- prometheus.MustNewConstMetric(c.o.upDesc, prometheus.GaugeValue, b2f(h.hostErr == ""), "host")
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Polled takes one poll's readings; the engine calls it every interval.
func (o *Observer) Polled(now time.Time, took time.Duration, ivs []estimator.Interval, samples []estimator.DeviceSample, hostErr error) {
	for _, iv := range ivs {
		// What the ledger refuses (a negative trapezoid of instant power
		// samples, NaN) is no energy: a counter panics on a negative Add,
		// and NaN or +Inf would stay in it for good.
		if iv.Joules >= 0 && !math.IsInf(iv.Joules, 1) { // NaN fails >= 0
			o.energy.WithLabelValues(iv.Device, string(iv.Method)).Add(iv.Joules)
		}
	}
	for _, s := range samples {
		if !math.IsNaN(s.PowerW) {
			o.gpuPower.WithLabelValues(s.Device).Set(s.PowerW)
		}
		o.gpuUtil.WithLabelValues(s.Device).Set(s.UtilGPU / 100)
		o.gpuMemUtil.WithLabelValues(s.Device).Set(s.UtilMem / 100)
	}
	o.poll.Observe(took.Seconds())
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lastPoll = now
	if hostErr != nil {
		o.hostErr, o.hostErrAt = hostErr.Error(), now
	} else {
		o.hostErr = ""
	}
}

// Recorded counts a request's record and what it used.
func (o *Observer) Recorded(r estimator.Record) {
	o.requests.WithLabelValues(r.Upstream, r.Status).Inc()
	model := o.schema.ModelTag(r.Model)
	add(o.reqEnergy, r.ITEnergyJ, model, r.Upstream)
	add(o.reqCO2e, r.CO2eG, model, r.Upstream)
	add(o.reqWater, r.WaterL, model, r.Upstream)
	add(o.reqCost, r.DeadLabourCost, model, r.Upstream, o.schema.Currency())
}

// Idled counts energy and wear no request used.
func (o *Observer) Idled(s estimator.IdleShare) {
	add(o.idleEnergy, s.Joules+s.StaticJoules, s.Device)
	add(o.idleEmbodied, s.EmbodiedCO2eG, s.Device)
	add(o.idleDepreciation, s.DepreciationCost, s.Device, o.schema.Currency())
	add(o.idleCO2e, s.CO2eG, s.Device)
	add(o.idleWater, s.WaterOnsiteL+s.WaterOffsiteL, s.Device)
}

// HealthPoints returns the deadlabour_health point once every report
// interval, aligned to it.
func (o *Observer) HealthPoints(now time.Time) []schema.Point {
	o.mu.Lock()
	due := !now.Before(o.nextHealth)
	if due {
		o.nextHealth = estimator.WindowStart(now, o.report).Add(o.report)
	}
	o.mu.Unlock()
	if !due {
		return nil
	}
	h := o.health()
	return []schema.Point{schema.HealthPoint(o.node, schema.Health{
		Time: now, GPUsTotal: len(o.gpus), GPUsUnhealthy: len(h.unhealthy), HostMeter: o.hostMeter,
		Simulated: o.simulated, Sink: h.sink.Health(),
	})}
}

// nodeHealth is a snapshot of everything /healthz and /readyz report.
type nodeHealth struct {
	lastPoll  time.Time
	hostErr   string
	gpus      []gpu.DeviceHealth
	unhealthy map[string]string // GPU id -> reason
	sink      sink.Stats
}

func (o *Observer) health() nodeHealth {
	o.mu.Lock()
	h := nodeHealth{lastPoll: o.lastPoll, hostErr: o.hostErr}
	o.mu.Unlock()
	h.gpus = o.gpuHealth()
	h.unhealthy = unhealthy(h.gpus)
	h.sink = o.sink.Stats()
	return h
}

// unhealthy maps the unhealthy GPUs' ids to why.
func unhealthy(gpus []gpu.DeviceHealth) map[string]string {
	out := map[string]string{}
	for _, g := range gpus {
		if !g.Healthy {
			out[g.ID] = g.Reason
		}
	}
	return out
}

// stalled says why the poll loop looks stuck, or "".
func (o *Observer) stalled(h nodeHealth) string {
	limit := max(10*o.interval, 5*time.Second)
	since := h.lastPoll
	if since.IsZero() {
		since = o.started
	}
	if age := o.now().Sub(since); age > limit {
		return fmt.Sprintf("engine: no poll for %v (interval %v)", age.Round(time.Millisecond), o.interval)
	}
	return ""
}

// Register serves the observability routes on the admin listener:
// /metrics, /healthz, /readyz and /v1/spool.
func (o *Observer) Register(mux *http.ServeMux) {
	o.RegisterProbes(mux)
	mux.HandleFunc(admin.PatternSpool, o.serveSpool)
}

// RegisterProbes serves /metrics, /healthz and /readyz only: what
// Prometheus and the kubelet ask, nothing that reads records (the metrics
// listener, admin.metrics_listen).
func (o *Observer) RegisterProbes(mux *http.ServeMux) {
	mux.Handle(admin.PatternMetrics, promhttp.HandlerFor(o.reg, promhttp.HandlerOpts{Registry: o.reg, EnableOpenMetrics: true}))
	mux.HandleFunc(admin.PatternHealthz, o.serveHealthz)
	mux.HandleFunc(admin.PatternReadyz, o.serveReadyz)
}

// serveHealthz: the process is alive and its poll loop turns (200), or
// the loop is stuck (503). It is what a liveness probe or watchdog asks.
func (o *Observer) serveHealthz(w http.ResponseWriter, r *http.Request) {
	h := o.health()
	body := map[string]any{"status": "alive", "uptime_s": o.now().Sub(o.started).Seconds(), "gpus": h.gpus}
	if why := o.stalled(h); why != "" {
		body["status"], body["reasons"] = "stalled", []string{why}
		admin.WriteJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	admin.WriteJSON(w, http.StatusOK, body)
}

// serveReadyz reports the collectors and the sink with reasons: 200
// "ready", 200 "degraded" (metering works, something needs a look), or 503
// "not_ready" (starting or stopping, the poll loop stuck, every GPU
// unhealthy, or InfluxDB refusing the token or missing the bucket: records
// pile up in the spool until a person acts).
func (o *Observer) serveReadyz(w http.ResponseWriter, r *http.Request) {
	h := o.health()
	var blocking, degraded []string
	if !o.ready() {
		blocking = append(blocking, "daemon: starting or stopping")
	}
	if why := o.stalled(h); why != "" {
		blocking = append(blocking, why)
	}
	if n := len(h.unhealthy); n > 0 {
		ids := make([]string, 0, n)
		for id, why := range h.unhealthy {
			ids = append(ids, fmt.Sprintf("GPU %s: %s", id, why))
		}
		sort.Strings(ids)
		msg := fmt.Sprintf("gpu: %d of %d unhealthy (%s)", n, len(o.gpus), strings.Join(ids, "; "))
		if n == len(o.gpus) {
			blocking = append(blocking, msg)
		} else {
			degraded = append(degraded, msg)
		}
	}
	if h.hostErr != "" {
		degraded = append(degraded, "host: meter failing: "+h.hostErr)
	}
	st := h.sink
	switch st.State {
	case sink.StateUnauthorized, sink.StateNoBucket, sink.StateRefused:
		blocking = append(blocking, fmt.Sprintf("sink: %s: %s (records are kept in the spool)", st.State, st.Reason))
	case sink.StateRetrying:
		degraded = append(degraded, fmt.Sprintf("sink: retrying: %s (oldest undelivered %v)", st.Reason, st.OldestUndelivered.Round(time.Second)))
	}
	switch st.Spool {
	case sink.SpoolDiskFull, sink.SpoolDiskError:
		// Metering and proxying go on, but what is measured is not kept
		// past a bound in memory: the daemon is not doing its job.
		blocking = append(blocking, fmt.Sprintf("sink: spool %s: %s (records beyond a bound in memory are dropped and counted)", st.Spool, st.SpoolError))
	case sink.SpoolAtMax:
		degraded = append(degraded, fmt.Sprintf("sink: spool at spool.max_bytes (%d): points are being dropped, telemetry first", o.spoolLimit))
	}
	if o.spoolLimit > 0 && st.SpoolBytes > o.spoolLimit*9/10 && st.Spool != sink.SpoolAtMax {
		degraded = append(degraded, fmt.Sprintf("sink: spool %d%% full (spool.max_bytes %d): telemetry is being dropped", st.SpoolBytes*100/o.spoolLimit, o.spoolLimit))
	}
	status, code := "ready", http.StatusOK
	switch {
	case len(blocking) > 0:
		status, code = "not_ready", http.StatusServiceUnavailable
	case len(degraded) > 0:
		status = "degraded"
	}
	gpus := map[string]any{"gpus": len(o.gpus), "unhealthy": h.unhealthy}
	host := map[string]any{"meter": o.hostMeter, "error": h.hostErr}
	admin.WriteJSON(w, code, map[string]any{
		"status":     status,
		"reasons":    append(append([]string{}, blocking...), degraded...),
		"node":       o.node,
		"simulated":  o.simulated,
		"collectors": map[string]any{"gpu": gpus, "host": host},
		"sink": map[string]any{
			"state": st.State.String(), "reason": st.Reason,
			"spool_points": st.SpoolPoints, "spool_records": st.SpoolRecords, "spool_bytes": st.SpoolBytes,
			"spool_max_bytes": o.spoolLimit, "oldest_undelivered_s": st.OldestUndelivered.Seconds(),
			"sent": st.Sent, "retries": st.Retries, "dead_lettered": st.DeadLettered,
			"dropped": st.Dropped, "dropped_by": st.DroppedBy,
		},
	})
}

// serveSpool streams the lines waiting in the spool as line protocol, one
// per line, oldest first; ?measurement=NAME keeps one of the daemon's
// measurements (another name is a 400). It is
// how `report` reads the spool of a running daemon (sink.ReadSpool reads a
// stopped one's).
func (o *Observer) serveSpool(w http.ResponseWriter, r *http.Request) {
	m := r.URL.Query().Get("measurement")
	switch m {
	case "", schema.MeasurementRequest, schema.MeasurementIdle, schema.MeasurementGPU, schema.MeasurementHealth:
	default:
		http.Error(w, fmt.Sprintf("measurement %q: the spool holds %s, %s, %s and %s", m,
			schema.MeasurementRequest, schema.MeasurementIdle, schema.MeasurementGPU, schema.MeasurementHealth), http.StatusBadRequest)
		return
	}
	// Our measurement names have nothing line protocol escapes: a line of
	// one starts with the name and a comma (tags) or a space (fields).
	tagged, bare := m+",", m+" "
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	bw := bufio.NewWriterSize(w, 64<<10)
	err := o.sink.ScanSpool(func(line string) bool {
		if m != "" && !strings.HasPrefix(line, tagged) && !strings.HasPrefix(line, bare) {
			return true
		}
		bw.WriteString(line)
		bw.WriteByte('\n')
		return r.Context().Err() == nil
	})
	if err != nil {
		bw.WriteString("# error reading the spool: " + strings.ReplaceAll(err.Error(), "\n", " ") + "\n")
	}
	bw.Flush()
}

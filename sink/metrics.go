package sink

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// dropReason says why a point was dropped.
type dropReason int

const (
	dropSpoolFull      dropReason = iota // spool.max_bytes reached
	dropBacklog                          // more than maxBacklog waiting for a commit (disk failing)
	dropInvalid                          // the encoder refused it (non-finite float, ...)
	dropClosed                           // enqueued after Close
	dropCorrupt                          // its spool entry failed the checksum
	dropDeadLetterFull                   // refused by InfluxDB, and the dead-letter file was full
	dropDiskFull                         // the spool's disk full: beyond the memory bound, or still in memory at Close
	dropDiskError                        // the same, the commits failing for another reason
	numDropReasons
)

func (r dropReason) String() string {
	return [...]string{"spool_full", "backlog", "invalid", "closed", "corrupt", "dead_letter_full", "disk_full", "disk_error"}[r]
}

// metrics are the Writer's counters; Stats and the Prometheus collector
// read them.
type metrics struct {
	state        atomic.Int32
	reason       atomic.Pointer[string]
	failingSince atomic.Int64           // Unix ns of the first failure of a streak; 0 when ok
	spoolState   atomic.Int32           // a SpoolState
	spoolErr     atomic.Pointer[string] // the last failed commit's error

	enqueued     [numKinds]atomic.Uint64
	sent         atomic.Uint64
	deadLettered [numKinds]atomic.Uint64
	dropped      [numKinds][numDropReasons]atomic.Uint64
	moved        atomic.Uint64
	commitErrors atomic.Uint64
	quarantined  atomic.Int32

	retryMu     sync.Mutex
	retryCounts map[string]uint64 // by status or "network"

	write   *prometheus.HistogramVec // write request duration by outcome
	latency prometheus.Histogram     // enqueue to acknowledged
	commit  prometheus.Histogram     // a group commit, fsync included
}

func newMetrics() metrics {
	return metrics{
		// The reasons known beforehand are exported at 0 from the start.
		retryCounts: map[string]uint64{"network": 0, "refused": 0, "429": 0, "500": 0, "502": 0, "503": 0, "504": 0},
		write: withOutcomes(prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "deadlabour_sink_write_duration_seconds",
			Help:    "Duration of write requests to InfluxDB, by outcome (delivered, refused, retry, hold).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"outcome"})),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "deadlabour_sink_delivery_latency_seconds",
			Help:    "Time from Enqueue to InfluxDB's acknowledgement, per point.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 300, 3600},
		}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "deadlabour_sink_commit_duration_seconds",
			Help:    "Duration of a spool group commit, fsync included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 12),
		}),
	}
}

// withOutcomes exports every outcome of h from the start.
func withOutcomes(h *prometheus.HistogramVec) *prometheus.HistogramVec {
	for _, o := range []string{"delivered", "refused", "retry", "hold"} {
		h.WithLabelValues(o)
	}
	return h
}

func (m *metrics) retry(reason string) {
	m.retryMu.Lock()
	m.retryCounts[reason]++
	m.retryMu.Unlock()
}

func (m *metrics) retries() map[string]uint64 {
	m.retryMu.Lock()
	defer m.retryMu.Unlock()
	out := make(map[string]uint64, len(m.retryCounts))
	for k, v := range m.retryCounts {
		out[k] = v
	}
	return out
}

func (m *metrics) observeWrite(d time.Duration, o outcome) {
	label := [...]string{actDelivered: "delivered", actSplit: "refused", actBisect: "refused", actRetry: "retry", actHold: "hold"}[o.act]
	m.write.WithLabelValues(label).Observe(d.Seconds())
}

func (m *metrics) droppedTotals() (out [numKinds]uint64) {
	for k := range numKinds {
		for r := range numDropReasons {
			out[k] += m.dropped[k][r].Load()
		}
	}
	return out
}

var (
	descSpoolPoints = prometheus.NewDesc("deadlabour_sink_spool_points",
		"Points waiting to be delivered (spooled or about to be), by kind: cost (records, idle shares) or telemetry.", []string{"kind"}, nil)
	descSpoolBytes = prometheus.NewDesc("deadlabour_sink_spool_bytes",
		"Bytes of the points waiting to be delivered (the measure of spool.max_bytes).", nil, nil)
	descSpoolMax = prometheus.NewDesc("deadlabour_sink_spool_max_bytes",
		"spool.max_bytes: the bound of deadlabour_sink_spool_bytes.", nil, nil)
	descOldest = prometheus.NewDesc("deadlabour_sink_oldest_undelivered_seconds",
		"How long the oldest undelivered point has waited; 0 when none waits.", nil, nil)
	descEnqueued = prometheus.NewDesc("deadlabour_sink_points_enqueued_total",
		"Points handed to the sink, by kind. Each ends sent, dead-lettered, dropped, or waiting in the spool.", []string{"kind"}, nil)
	descSent = prometheus.NewDesc("deadlabour_sink_points_sent_total",
		"Points InfluxDB acknowledged.", nil, nil)
	descRetries = prometheus.NewDesc("deadlabour_sink_write_retries_total",
		"Failed write requests that will be retried, by reason: the HTTP status, network, or refused (a held batch every line of which was refused alike).", []string{"reason"}, nil)
	descDeadLettered = prometheus.NewDesc("deadlabour_sink_points_dead_lettered_total",
		"Points InfluxDB refused for good, kept in the dead-letter file, by kind.", []string{"kind"}, nil)
	descDropped = prometheus.NewDesc("deadlabour_sink_points_dropped_total",
		"Points dropped, by kind and reason (spool_full, backlog, invalid, closed, corrupt, dead_letter_full, disk_full, disk_error).", []string{"kind", "reason"}, nil)
	descSpoolState = prometheus.NewDesc("deadlabour_sink_spool_state",
		"1 for the spool's current state (ok; max_bytes: points dropped to make room; disk_full, disk_error: commits fail, new points are held in memory up to a bound, then dropped), 0 for the others.", []string{"state"}, nil)
	descState = prometheus.NewDesc("deadlabour_sink_state",
		"1 for the sink's current state (ok, retrying, unauthorized, no_bucket, disabled, refused), 0 for the others.", []string{"state"}, nil)
	descMoved = prometheus.NewDesc("deadlabour_sink_timestamps_moved_total",
		"Points whose timestamp was moved past an earlier run's point of the same series.", nil, nil)
	descCommitErrors = prometheus.NewDesc("deadlabour_sink_commit_errors_total",
		"Spool commits that failed (disk errors); their points wait in memory.", nil, nil)
	descQuarantined = prometheus.NewDesc("deadlabour_sink_spool_quarantined",
		"1 if the spool file was unreadable at start and moved aside.", nil, nil)
)

// writerCollector exports a Writer's metrics.
type writerCollector struct{ w *Writer }

func (c writerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSpoolPoints, descSpoolBytes, descSpoolMax, descOldest, descEnqueued, descSent, descRetries,
		descDeadLettered, descDropped, descState, descSpoolState, descMoved, descCommitErrors, descQuarantined} {
		ch <- d
	}
	c.w.m.write.Describe(ch)
	c.w.m.latency.Describe(ch)
	c.w.m.commit.Describe(ch)
}

func (c writerCollector) Collect(ch chan<- prometheus.Metric) {
	w, m := c.w, &c.w.m
	st := w.Stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descSpoolPoints, float64(st.SpoolRecords), kindCost.String())
	gauge(descSpoolPoints, float64(st.SpoolPoints-st.SpoolRecords), kindTelemetry.String())
	gauge(descSpoolBytes, float64(st.SpoolBytes))
	gauge(descSpoolMax, float64(w.opts.MaxBytes))
	gauge(descOldest, st.OldestUndelivered.Seconds())
	counter(descSent, st.Sent)
	for reason, n := range m.retries() {
		counter(descRetries, n, reason)
	}
	for k := range numKinds {
		counter(descEnqueued, m.enqueued[k].Load(), kind(k).String())
		counter(descDeadLettered, m.deadLettered[k].Load(), kind(k).String())
		for r := range numDropReasons {
			counter(descDropped, m.dropped[k][r].Load(), kind(k).String(), dropReason(r).String())
		}
	}
	for s := range numStates {
		v := 0.0
		if s == st.State {
			v = 1
		}
		gauge(descState, v, s.String())
	}
	for s := range numSpoolStates {
		v := 0.0
		if s == st.Spool {
			v = 1
		}
		gauge(descSpoolState, v, s.String())
	}
	counter(descMoved, st.Moved)
	counter(descCommitErrors, m.commitErrors.Load())
	gauge(descQuarantined, float64(m.quarantined.Load()))
	m.write.Collect(ch)
	m.latency.Collect(ch)
	m.commit.Collect(ch)
}

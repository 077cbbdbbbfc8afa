package schema

import "time"

// Health is what a deadlabour_health point reports.
type Health struct {
	Time          time.Time
	GPUsTotal     int
	GPUsUnhealthy int
	HostMeter     string // counter or modelled
	Simulated     bool
	Sink          SinkHealth
}

// SinkHealth is the sink's part of a deadlabour_health point (sink.Stats'
// Health): its state and its counters since the daemon started.
type SinkHealth struct {
	State                       string // sink_state: ok, retrying, unauthorized, ...
	SpoolPoints                 int
	SpoolBytes                  int64
	OldestUndelivered           time.Duration
	Sent, Dropped, DeadLettered uint64
}

// HealthPoint is the deadlabour_health point of node. The sink counters are
// cumulative since the daemon started.
func HealthPoint(node string, h Health) Point {
	return Point{
		Measurement: MeasurementHealth,
		Tags:        []Tag{{"host", node}},
		Fields: []Field{
			{"gpus_total", int64(h.GPUsTotal)},
			{"gpus_unhealthy", int64(h.GPUsUnhealthy)},
			{"host_meter", h.HostMeter},
			{"spool_points", int64(h.Sink.SpoolPoints)},
			{"spool_bytes", h.Sink.SpoolBytes},
			{"oldest_undelivered_s", h.Sink.OldestUndelivered.Seconds()},
			{"points_sent", int64(h.Sink.Sent)},
			{"points_dropped", int64(h.Sink.Dropped)},
			{"points_dead_lettered", int64(h.Sink.DeadLettered)},
			{"sink_state", h.Sink.State},
			{"simulated", h.Simulated},
		},
		Time: h.Time,
	}
}

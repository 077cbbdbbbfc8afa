package observe

import "github.com/prometheus/client_golang/prometheus"

// AddCollector registers a collector of another part of the daemon (the
// OTLP receiver's counters) on the registry /metrics serves.
func (o *Observer) AddCollector(c prometheus.Collector) error { return o.reg.Register(c) }

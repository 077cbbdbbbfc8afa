// Package observe is the daemon's own observability: the Prometheus
// metrics of GET /metrics, the liveness and readiness answers of /healthz
// and /readyz, GET /v1/spool, and the deadlabour_health point. The engine
// sees every interval, sample and record, so it feeds the metrics
// (Observer), and the proxy is untouched.
package observe

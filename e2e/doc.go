// Package e2e holds the end-to-end tests: the daemon run in process
// (package daemon) or built and started as a process, the command line
// (cmd/deadlabourd/cli), fake upstreams and a real InfluxDB; fleets,
// chaos (InfluxDB outages, a full spool, SIGKILL), the dashboards'
// queries, systemd's notify protocol and unit. It has no code of its own.
package e2e

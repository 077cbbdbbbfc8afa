// Package deploy holds deadlabour's deployment files: Grafana provisioning
// and dashboards (grafana/), the Kubernetes manifests (kubernetes/); the
// systemd unit is in ../systemd. It has no code: its tests lint the
// manifests and check `make install`. The dashboards' queries are tested
// against a real InfluxDB in e2e, which can run the daemon.
package deploy

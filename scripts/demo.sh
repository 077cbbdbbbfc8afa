#!/usr/bin/env bash
# make demo: a local InfluxDB, deadlabourd on 8 simulated H100s in front of
# OpenAI-compatible fake upstreams, a few hundred prompts, and the cost of
# each model read back from InfluxDB. Everything is stopped afterwards,
# unless KEEP=1: then InfluxDB and the daemon stay up, and the demo prints
# how to point Grafana at them and how to stop them.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

dir=$(mktemp -d "${TMPDIR:-/tmp}/deadlabour-demo-influx.XXXXXX")
keep=${KEEP:-}
cleanup() {
	if [[ -n $keep ]]; then
		return
	fi
	scripts/influxdb.sh stop "$dir" >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT

scripts/influxdb.sh install
url=$(scripts/influxdb.sh start "$dir" | sed -n 's/^INFLUX_URL=//p')
[[ -n $url ]] || { echo "demo: InfluxDB did not start" >&2; exit 1; }
if [[ -n $keep ]]; then
	bin/deadlabour-demo --daemon bin/deadlabourd --influx "$url" --keep "$dir" "$@"
	echo "InfluxDB keeps running at $url (data in $dir): stop it with"
	echo "  scripts/influxdb.sh stop $dir && rm -rf $dir"
else
	bin/deadlabour-demo --daemon bin/deadlabourd --influx "$url" "$@"
fi

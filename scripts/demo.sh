#!/usr/bin/env bash
# make demo: a local InfluxDB, deadlabourd on 8 simulated H100s in front of
# OpenAI-compatible fake upstreams, a few hundred prompts, and the cost of
# each model read back from InfluxDB. Everything is stopped afterwards.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

dir=$(mktemp -d "${TMPDIR:-/tmp}/deadlabour-demo-influx.XXXXXX")
cleanup() {
	scripts/influxdb.sh stop "$dir" >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT

scripts/influxdb.sh install
url=$(scripts/influxdb.sh start "$dir" | sed -n 's/^INFLUX_URL=//p')
[[ -n $url ]] || { echo "demo: InfluxDB did not start" >&2; exit 1; }
bin/deadlabour-demo --daemon bin/deadlabourd --influx "$url" "$@"

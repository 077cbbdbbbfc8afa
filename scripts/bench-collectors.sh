#!/usr/bin/env bash
# make bench-collectors: the daemon's own footprint with 8 simulated H100s
# polled every 100 ms (--simulate h100:8), against a baseline measured in the
# same run: the same binary and config with gpu.enabled: false (host meter,
# engine, sink, no GPUs). Both run side by side for BENCH_SECONDS (default
# 60) against one local InfluxDB; CPU is utime+stime from /proc/PID/stat over
# that window, as % of one core; RSS is VmRSS at the end and VmHWM (peak).
# Results go to docs/benchmarks.md by hand, with the machine and the date.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECONDS_RUN=${BENCH_SECONDS:-60}
WARMUP=${BENCH_WARMUP:-5}

go build -o bin/deadlabourd ./cmd/deadlabourd
dir=$(mktemp -d "${TMPDIR:-/tmp}/deadlabour-bench.XXXXXX")
# shellcheck source=scripts/background.sh
. scripts/background.sh
cleanup() {
	bg_stop
	scripts/influxdb.sh stop "$dir/influx" >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT

scripts/influxdb.sh install
url=$(scripts/influxdb.sh start "$dir/influx" 2>"$dir/influx-start.log" | sed -n 's/^INFLUX_URL=//p') || true
[[ -n $url ]] || { echo "bench-collectors: InfluxDB did not start:" >&2; cat "$dir/influx-start.log" >&2; exit 1; }

config() { # NAME GPU_ENABLED
	mkdir -p "$dir/$1"
	cat >"$dir/$1/config.yaml" <<YAML
node: bench-$1
gpu:
  enabled: $2
  interval: 100ms
  report_interval: 10s
admin:
  listen: ""
influx:
  url: $url
  bucket: deadlabour/autogen
spool:
  dir: $dir/$1/spool
YAML
}
config gpus true
config base false

bin/deadlabourd run --config "$dir/gpus/config.yaml" --simulate h100:8 --log-level warn 2>"$dir/gpus/log" &
bg_track $!
gpus_pid=$!
bin/deadlabourd run --config "$dir/base/config.yaml" --log-level warn 2>"$dir/base/log" &
bg_track $!
base_pid=$!
sleep "$WARMUP"
for p in "$gpus_pid" "$base_pid"; do
	kill -0 "$p" 2>/dev/null || { echo "bench-collectors: a daemon exited:" >&2; cat "$dir"/*/log >&2; exit 1; }
done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)
g0=$(ticks "$gpus_pid") b0=$(ticks "$base_pid") t0=$(date +%s.%N)
sleep "$SECONDS_RUN"
g1=$(ticks "$gpus_pid") b1=$(ticks "$base_pid") t1=$(date +%s.%N)

cpu() { awk -v a="$1" -v b="$2" -v hz="$hz" -v t0="$t0" -v t1="$t1" 'BEGIN {printf "%.3f", (b - a) / hz / (t1 - t0) * 100}'; }
gcpu=$(cpu "$g0" "$g1") bcpu=$(cpu "$b0" "$b1")
grss=$(kib "$gpus_pid" VmRSS) brss=$(kib "$base_pid" VmRSS)
ghwm=$(kib "$gpus_pid" VmHWM) bhwm=$(kib "$base_pid" VmHWM)
written=$(curl -s "$url/query" --data-urlencode "db=deadlabour" --data-urlencode \
	"q=SELECT count(power_mean_w) FROM deadlabour_gpu WHERE host = 'bench-gpus'" | sed -n 's/.*"values":\[\["[^"]*",\([0-9]*\)\]\].*/\1/p' || true)

mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }
echo
echo "deadlabourd footprint over ${SECONDS_RUN} s (after ${WARMUP} s warm-up), $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ)"
printf '%-34s %12s %12s %8s\n' "" "h100:8 sim" "no GPUs" "ratio"
printf '%-34s %12s %12s %8s\n' "CPU, % of one core" "$gcpu" "$bcpu" "$(ratio "$gcpu" "$bcpu")"
printf '%-34s %12s %12s %8s\n' "RSS at the end, MB" "$(mb "$grss")" "$(mb "$brss")" "$(ratio "$grss" "$brss")"
printf '%-34s %12s %12s %8s\n' "peak RSS (VmHWM), MB" "$(mb "$ghwm")" "$(mb "$bhwm")" "$(ratio "$ghwm" "$bhwm")"
echo "deadlabour_gpu points written by the simulated daemon: ${written:-unknown}"
awk -v c="$gcpu" -v r="$grss" 'BEGIN {
	printf "targets: CPU <= 0.5 %% of a core: %s; RSS <= 30 MB: %s\n", (c <= 0.5 ? "met" : "MISSED"), (r / 1024 <= 30 ? "met" : "MISSED")
}'

#!/usr/bin/env bash
# Benchmark of the metering proxy (make bench-proxy): the fake upstream on
# loopback, called directly, through nginx (plain proxy_pass with upstream
# keep-alive) and through deadlabourd, in one run. Measures
#   - throughput: wrk, 2 threads, 64 connections, 3 turns of 4 s, non-streamed chat;
#   - latency at a fixed 500 req/s, open loop, 20 s per target in 2 s turns
#     (deadlabour-bench rate);
#   - per-event delay of streams: 20 streams x 3 turns x 64 tokens at 10 ms,
#     each event timed from the fake's flush to the client's read on one clock;
#   - memory per open stream: RSS growth of the proxy while 500 streams are held.
# Prints the table for docs/benchmarks.md; raw results in $BENCH_OUT
# (default bin/bench-proxy.jsonl). Needs root for apt-get if nginx or wrk is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g -Wno-deprecated-declarations}"

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
	apt-get install -y nginx wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y nginx wrk >/dev/null; }
fi
go build -o bin/deadlabourd ./cmd/deadlabourd
go build -o bin/deadlabour-bench ./cmd/deadlabour-bench

FAKE=18000 STREAMFAKE=18001 DL=18080 DLS=18081 NG=18090 NGS=18091 PLAIN=18070
out="${BENCH_OUT:-bin/bench-proxy.jsonl}"
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

wait_port() {
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "nothing listens on port $1" >&2
	return 1
}

# The fast fake (throughput and latency runs); the stream fake runs inside
# deadlabour-bench stream/hold on $STREAMFAKE.
bin/deadlabour-bench serve -listen 127.0.0.1:$FAKE &
pids+=($!)

# The floor of a Go proxy: httputil.ReverseProxy and nothing else.
bin/deadlabour-bench plain -listen 127.0.0.1:$PLAIN -target http://127.0.0.1:$FAKE &
plainpid=$!
pids+=($plainpid)

mkdir -p "$work/nginx/logs"
cat >"$work/nginx/nginx.conf" <<EOF
daemon off;
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 8192; }
http {
	access_log off;
	upstream fast { server 127.0.0.1:$FAKE; keepalive 128; }
	upstream slow { server 127.0.0.1:$STREAMFAKE; keepalive 128; }
	server {
		listen 127.0.0.1:$NG;
		location / { proxy_pass http://fast; proxy_http_version 1.1; proxy_set_header Connection ""; }
	}
	server {
		listen 127.0.0.1:$NGS;
		# Without this nginx holds back SSE events to fill its buffers.
		location / { proxy_pass http://slow; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
	}
}
EOF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=($!)

# deadlabourd: simulated H100s, the proxy of each fake, no InfluxDB (the
# sink retries in the background; the proxy does not wait for it).
cat >"$work/deadlabour.yaml" <<EOF
node: bench
gpu:
  interval: 100ms
admin:
  listen: ""
influx:
  url: http://127.0.0.1:9
spool:
  dir: $work/spool
upstreams:
  - name: fast
    listen: 127.0.0.1:$DL
    target: http://127.0.0.1:$FAKE
    gpus: [0]
  - name: stream
    listen: 127.0.0.1:$DLS
    target: http://127.0.0.1:$STREAMFAKE
    gpus: [0]
EOF
bin/deadlabourd run --config "$work/deadlabour.yaml" --simulate h100:1 --log-level error 2>"$work/deadlabourd.log" &
dlpid=$!
pids+=($dlpid)
wait_port $FAKE
wait_port $NG
wait_port $DL
wait_port $PLAIN

: >"$out"
tag() { sed "s/^{/{\"name\":\"$1\",/" >>"$out"; }

echo "throughput (wrk)..." >&2
cat >"$work/post.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"bench","max_tokens":16,"messages":[{"role":"user","content":"how much does this answer cost?"}]}'
EOF
cpu_ticks() { # user+system clock ticks of the processes given
	local sum=0
	for p in "$@"; do sum=$((sum + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
	echo $sum
}
ngpids=$(pgrep -f "nginx: (master|worker)" | tr '\n' ' ')
fakepid=${pids[0]}
declare -A sum=() ticks=() reqs=()
for round in 1 2 3; do # in turns, as the other measurements
	for t in direct:$FAKE nginx:$NG deadlabourd:$DL go-httputil:$PLAIN; do
		name=${t%%:*} port=${t##*:}
		# The CPU of the process in the middle: the fake itself when called
		# directly, else the proxy (its upstream's CPU is the same work).
		case $name in direct) procs=$fakepid ;; nginx) procs=$ngpids ;; go-httputil) procs=$plainpid ;; *) procs=$dlpid ;; esac
		t0=$(cpu_ticks $procs)
		res=$(wrk -t2 -c64 -d4s -s "$work/post.lua" "http://127.0.0.1:$port/v1/chat/completions")
		t1=$(cpu_ticks $procs)
		rps=$(awk '/Requests\/sec/ {print $2}' <<<"$res")
		n=$(awk '/requests in/ {print $1}' <<<"$res")
		sum[$name]=$(awk -v a="${sum[$name]:-0}" -v b="$rps" 'BEGIN {print a + b}')
		ticks[$name]=$((${ticks[$name]:-0} + t1 - t0))
		reqs[$name]=$((${reqs[$name]:-0} + n))
	done
done
hz=$(getconf CLK_TCK)
for name in direct nginx deadlabourd go-httputil; do
	echo "{\"kind\":\"throughput\",\"rps\":$(awk -v a="${sum[$name]}" 'BEGIN {print a / 3}'),\"cpu_us_per_request\":$(awk -v t="${ticks[$name]}" -v n="${reqs[$name]}" -v hz="$hz" 'BEGIN {print t / hz * 1e6 / n}')}" | tag "$name"
done

echo "latency at 500 req/s..." >&2
bin/deadlabour-bench rate -rps 500 -duration 20s -slice 2s \
	-targets "direct=http://127.0.0.1:$FAKE,nginx=http://127.0.0.1:$NG,deadlabourd=http://127.0.0.1:$DL" >>"$out"

echo "stream event delay..." >&2
bin/deadlabour-bench stream -listen 127.0.0.1:$STREAMFAKE -streams 20 -rounds 3 -tokens 64 -token-delay 10ms \
	-targets "direct=http://127.0.0.1:$STREAMFAKE,nginx=http://127.0.0.1:$NGS,deadlabourd=http://127.0.0.1:$DLS" >>"$out"

rss_kib() { # total RSS of the processes given
	local sum=0
	for p in "$@"; do sum=$((sum + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status"))); done
	echo $sum
}
echo "memory per open stream..." >&2
# A fresh deadlabourd, so that its heap has not already grown for the runs
# above (Go reuses freed memory, which would hide the streams' own).
kill $dlpid
wait $dlpid 2>/dev/null || true
bin/deadlabourd run --config "$work/deadlabour.yaml" --simulate h100:1 --log-level error 2>>"$work/deadlabourd.log" &
dlpid=$!
pids+=($dlpid)
wait_port $DLS
for t in nginx:$NGS deadlabourd:$DLS; do
	name=${t%%:*} port=${t##*:}
	procs=$dlpid
	[ "$name" = nginx ] && procs=$ngpids
	# One small hold first: connections, buffers and goroutines are warm.
	bin/deadlabour-bench hold -listen 127.0.0.1:$STREAMFAKE -target "http://127.0.0.1:$port" -streams 10 -hold 100ms >/dev/null
	before=$(rss_kib $procs)
	fifo="$work/hold.$name"
	mkfifo "$fifo"
	bin/deadlabour-bench hold -listen 127.0.0.1:$STREAMFAKE -target "http://127.0.0.1:$port" -streams 500 -hold 3s >"$fifo" &
	holdpid=$!
	exec 4<"$fifo"
	read -r _ <&4 # "holding": all 500 streams are open
	sleep 1
	during=$(rss_kib $procs)
	cat <&4 >/dev/null
	exec 4<&-
	wait $holdpid
	echo "{\"kind\":\"memory\",\"streams\":500,\"bytes_per_stream\":$(((during - before) * 1024 / 500))}" | tag "$name"
done

echo >&2
echo "$(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), $(go version | cut -d' ' -f3), nginx $(nginx -v 2>&1 | cut -d/ -f2)"
bin/deadlabour-bench report <"$out"

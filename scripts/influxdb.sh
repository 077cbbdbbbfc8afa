#!/usr/bin/env bash
# A local InfluxDB OSS 1.8.3 for tests and the demo.
#
#   scripts/influxdb.sh install     build influxd into .cache/influxdb/bin (once; cached)
#   scripts/influxdb.sh start DIR   run it with config, data, log and pid in DIR and
#                                   print INFLUX_URL=http://127.0.0.1:PORT
#   scripts/influxdb.sh stop DIR    stop it (SIGTERM, then SIGKILL after 10 s)
#
# Environment: DEADLABOUR_INFLUXD names another influxd binary; INFLUX_PORT fixes
# the HTTP port (default: a free one).
#
# Needs nothing but bash, coreutils and Go: free ports are found by probing and
# HTTP is spoken over bash's /dev/tcp, so a bare CI machine can run it. The config
# template is shared with the Go test helper (internal/influxtest).
set -euo pipefail

readonly VERSION=1.8.3
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
readonly BIN=${DEADLABOUR_INFLUXD:-$ROOT/.cache/influxdb/bin/influxd}
readonly TEMPLATE=$ROOT/internal/influxtest/influxd.conf
readonly DATABASE=deadlabour
readonly HOST=127.0.0.1
readonly START_TIMEOUT_S=30

die() {
	echo "influxdb.sh: $*" >&2
	exit 1
}

usage() {
	sed -n '2,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
	exit 2
}

cmd_install() {
	if [[ -x $BIN ]]; then
		return 0
	fi
	if [[ -n ${DEADLABOUR_INFLUXD:-} ]]; then
		die "DEADLABOUR_INFLUXD=$BIN is not an executable file"
	fi
	command -v go >/dev/null || die "go is not on PATH; it is needed to build influxd"
	local bindir tmp
	bindir=$(dirname "$BIN")
	mkdir -p "$bindir"
	# Build into a private directory and rename: two concurrent installs
	# (parallel test packages) then never see a half-written binary.
	tmp=$(mktemp -d "$bindir/.install.XXXXXX")
	echo "influxdb.sh: building influxd $VERSION into $bindir (about a minute the first time)" >&2
	if ! GOBIN=$tmp go install "github.com/influxdata/influxdb/cmd/influxd@v$VERSION" >&2; then
		rm -rf "$tmp"
		die "go install of influxd $VERSION failed"
	fi
	mv -f "$tmp/influxd" "$BIN"
	rm -rf "$tmp"
}

# port_in_use PORT: true when something accepts connections on HOST:PORT.
port_in_use() {
	(exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# free_port [TAKEN...]: a port nobody listens on, not among TAKEN. Chosen below
# Linux's ephemeral range (32768-60999) so outgoing connections cannot hold it.
free_port() {
	local p i
	for i in $(seq 1 200); do
		p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
		if [[ " $* " == *" $p "* ]] || port_in_use "$p"; then
			continue
		fi
		echo "$p"
		return 0
	done
	die "found no free port on $HOST after $i tries"
}

# http PORT METHOD PATH [FORM-BODY]: one HTTP/1.0 exchange; sets HTTP_STATUS
# and HTTP_BODY. Returns non-zero when nothing answers.
http() {
	local port=$1 method=$2 path=$3 body=${4:-} fd response
	# The group keeps 2>/dev/null from sticking to the shell itself.
	{ exec {fd}<>"/dev/tcp/$HOST/$port"; } 2>/dev/null || return 1
	printf '%s %s HTTP/1.0\r\nHost: %s:%s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s' \
		"$method" "$path" "$HOST" "$port" "${#body}" "$body" >&"$fd"
	response=$(cat <&"$fd") || true
	exec {fd}>&-
	HTTP_STATUS=$(head -n 1 <<<"$response" | cut -d ' ' -f 2)
	HTTP_BODY=${response#*$'\r\n\r\n'}
}

# running DIR: prints the pid of the influxd recorded in DIR if it is alive.
running() {
	local pidfile=$1/influxd.pid pid
	[[ -f $pidfile ]] || return 1
	pid=$(<"$pidfile")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	# A stale pid file may name a pid since reused by something else.
	grep -qa influxd "/proc/$pid/cmdline" 2>/dev/null || return 1
	echo "$pid"
}

log_tail() {
	echo "--- last lines of $1/influxd.log ---" >&2
	tail -n 20 "$1/influxd.log" >&2 || true
}

render_config() {
	local dir=$1 http_port=$2 rpc_port=$3 conf
	conf=$(<"$TEMPLATE")
	# Quoted replacements: bash 5.2 would otherwise expand & in them.
	conf=${conf//@DIR@/"$dir"}
	conf=${conf//@HTTP_ADDR@/"$HOST:$http_port"}
	conf=${conf//@RPC_ADDR@/"$HOST:$rpc_port"}
	conf=${conf//@FLUX@/true}
	printf '%s\n' "$conf" >"$dir/influxd.conf"
}

cmd_start() {
	local dir=$1 pid http_port rpc_port attempt
	[[ $dir != *[\"\\]* ]] || die "DIR must not contain quotes or backslashes: $dir"
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	if pid=$(running "$dir"); then
		die "influxd already runs from $dir (pid $pid); stop it first"
	fi
	cmd_install
	for attempt in 1 2 3; do
		http_port=${INFLUX_PORT:-$(free_port)}
		if port_in_use "$http_port"; then
			die "port $http_port on $HOST is in use (INFLUX_PORT?)"
		fi
		rpc_port=$(free_port "$http_port")
		render_config "$dir" "$http_port" "$rpc_port"
		local log_from deadline=$((SECONDS + START_TIMEOUT_S))
		log_from=$(($(stat -c %s "$dir/influxd.log" 2>/dev/null || echo 0) + 1))
		nohup "$BIN" run -config "$dir/influxd.conf" </dev/null >>"$dir/influxd.log" 2>&1 &
		pid=$!
		echo "$pid" >"$dir/influxd.pid"
		while true; do
			if ! kill -0 "$pid" 2>/dev/null; then
				rm -f "$dir/influxd.pid"
				# Someone took a probed port between probe and bind: try others.
				if [[ -z ${INFLUX_PORT:-} && $attempt -lt 3 ]] &&
					[[ $(tail -c "+$log_from" "$dir/influxd.log") == *"address already in use"* ]]; then
					continue 2
				fi
				log_tail "$dir"
				die "influxd exited during start-up"
			fi
			# Ours, not a stranger on the same port: our log must say it listens there.
			if [[ $(tail -c "+$log_from" "$dir/influxd.log") == *"Listening on HTTP"*"addr=$HOST:$http_port "* ]] &&
				http "$http_port" GET /ping && [[ $HTTP_STATUS == 204 ]]; then
				break
			fi
			if ((SECONDS >= deadline)); then
				log_tail "$dir"
				cmd_stop "$dir" >/dev/null
				die "influxd did not answer /ping on $HOST:$http_port within ${START_TIMEOUT_S}s"
			fi
			sleep 0.1
		done
		if ! http "$http_port" POST /query "q=CREATE+DATABASE+$DATABASE" || [[ $HTTP_STATUS != 200 || $HTTP_BODY == *'"error"'* ]]; then
			log_tail "$dir"
			die "CREATE DATABASE $DATABASE failed: HTTP ${HTTP_STATUS:-none} ${HTTP_BODY:-}"
		fi
		echo "INFLUX_URL=http://$HOST:$http_port"
		return 0
	done
	log_tail "$dir"
	die "influxd could not bind a free port in 3 attempts"
}

cmd_stop() {
	local dir=$1 pid i
	if ! pid=$(running "$dir"); then
		rm -f "$dir/influxd.pid"
		echo "influxdb.sh: no influxd running from $dir" >&2
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "influxdb.sh: influxd (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$dir/influxd.pid"
}

main() {
	[[ $# -ge 1 ]] || usage
	case $1 in
	install)
		[[ $# -eq 1 ]] || usage
		cmd_install
		;;
	start | stop)
		[[ $# -eq 2 ]] || usage
		"cmd_$1" "$2"
		;;
	*) usage ;;
	esac
}

main "$@"

#!/usr/bin/env bash
# scripts/gpu-check.sh [OUTDIR]: the real-GPU check of docs/real-gpu.md, on a
# machine with an NVIDIA GPU and driver.
#
#   1. deadlabourd probe: what each GPU supports (counter, power reading, MIG).
#   2. A GPU load for DURATION seconds (default 60): python3 with torch, matrix
#      products on every GPU, 4 s on and 2 s off so that power steps; without
#      torch the GPUs are measured idle (and the script says so).
#   3. Meanwhile, for the same DURATION:
#      - deadlabourd probe --measure: every GPU read every 100 ms; its energy
#        counter against the trapezoid of its power samples (the instant
#        field where the driver has it), agreement in %;
#      - the daemon itself (deadlabourd run) when an InfluxDB can be started
#        (scripts/influxdb.sh; DEADLABOUR_INFLUXD names a binary): its
#        deadlabour_gpu telemetry gives the same comparison, counter energy_j
#        against power_mean_w x window, over the whole windows of the run.
#   4. A summary, also in OUTDIR/summary.txt. The aim is agreement within 2 %.
#
# Environment: DURATION (seconds, default 60), INTERVAL (default 100ms),
# DEADLABOUR_BIN (a built deadlabourd; default: go build into OUTDIR),
# SIMULATE (e.g. h100:2: a dry run of this script on simulated GPUs, on a
# machine without one; it checks the script, not a GPU).
# Exit status: 0 when it ran (whatever the agreement), 1 when it could not.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${1:-${OUT:-$ROOT/gpu-check-out}}
DURATION=${DURATION:-60}
INTERVAL=${INTERVAL:-100ms}
SIM=()
[[ -n ${SIMULATE:-} ]] && SIM=(--simulate "$SIMULATE")
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { echo "gpu-check: $*" | tee -a "$OUT/summary.txt" >&2; }
: >"$OUT/summary.txt"

# shellcheck source=scripts/background.sh
. scripts/background.sh
cleanup() {
	bg_stop
	[[ -d $OUT/influx ]] && scripts/influxdb.sh stop "$OUT/influx" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# --- the binary ---------------------------------------------------------
BIN=${DEADLABOUR_BIN:-}
if [[ -z $BIN ]]; then
	command -v go >/dev/null || { log "no DEADLABOUR_BIN and no go to build one"; exit 1; }
	CGO_ENABLED=1 CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" go build -o "$OUT/deadlabourd" ./cmd/deadlabourd
	BIN=$OUT/deadlabourd
fi
log "$("$BIN" version)"
if command -v nvidia-smi >/dev/null; then
	nvidia-smi --query-gpu=index,name,driver_version,power.draw,power.limit --format=csv >"$OUT/nvidia-smi.csv" 2>&1 || true
	log "nvidia-smi: $(tr '\n' ';' <"$OUT/nvidia-smi.csv")"
fi

# --- 1. probe -----------------------------------------------------------
"$BIN" probe "${SIM[@]}" | tee "$OUT/probe.txt"
if grep -q '^GPUs: none' "$OUT/probe.txt"; then
	log "no GPU found by NVML: nothing to check"
	exit 1
fi

# --- 2. the load ----------------------------------------------------------
load=none
if command -v python3 >/dev/null && python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
	cat >"$OUT/load.py" <<'PY'
import sys, time, torch
dur = float(sys.argv[1])
devs = [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
mats = [(torch.randn(8192, 8192, device=d, dtype=torch.float16),
         torch.randn(8192, 8192, device=d, dtype=torch.float16)) for d in devs]
end, on = time.time() + dur, True
while time.time() < end:
    # 4 s of matrix products, 2 s of rest: power steps, and both the counter
    # and the power samples must follow them.
    phase_end = min(time.time() + (4 if on else 2), end)
    while time.time() < phase_end:
        if on:
            for a, b in mats:
                for _ in range(8):
                    a @ b
            for d in devs:
                torch.cuda.synchronize(d)
        else:
            time.sleep(0.05)
    on = not on
PY
	python3 "$OUT/load.py" "$((DURATION + 15))" >"$OUT/load.log" 2>&1 &
	bg_track $!
	load=torch
	sleep 5 # let the load start (CUDA context, allocation)
else
	log "python3 with torch and CUDA not found: the GPUs are measured idle"
fi

# --- 3. the daemon, when an InfluxDB can run --------------------------------
daemon=no
if url=$(scripts/influxdb.sh start "$OUT/influx" 2>"$OUT/influx-start.log" | sed -n 's/^INFLUX_URL=//p') && [[ -n $url ]]; then
	cat >"$OUT/config.yaml" <<YAML
node: gpu-check
gpu:
  interval: $INTERVAL
  report_interval: 1s
admin:
  listen: 127.0.0.1:0
influx:
  url: $url
  bucket: deadlabour/autogen
  flush_interval: 1s
spool:
  dir: $OUT/spool
YAML
	"$BIN" run --config "$OUT/config.yaml" "${SIM[@]}" --log-level info 2>"$OUT/daemon.log" &
	daemon_pid=$!
	bg_track "$daemon_pid"
	daemon=yes
else
	log "no InfluxDB could be started (scripts/influxdb.sh; see $OUT/influx-start.log): the daemon part is skipped"
fi

# --- 3. probe --measure -------------------------------------------------------
"$BIN" probe "${SIM[@]}" --measure "${DURATION}s" --interval "$INTERVAL" | tee "$OUT/measure.txt"

if [[ $daemon == yes ]]; then
	sleep 3 # the last report window and its flush
	kill -TERM "$daemon_pid"
	wait "$daemon_pid" || true
	curl -sG "$url/query" --data-urlencode "db=deadlabour" --data-urlencode \
		"q=SELECT energy_j, power_mean_w FROM deadlabour_gpu WHERE host = 'gpu-check' GROUP BY gpu" -o "$OUT/daemon-gpu.json"
	# Per GPU, over the whole 1 s windows but the first and the last (partial):
	# counter energy against the mean of the power samples x 1 s. In MIG mode
	# the board's energy is its own row plus its instances' (0/1, ...).
	python3 - "$OUT/daemon-gpu.json" >"$OUT/daemon.txt" <<'PY' || log "could not read the daemon's telemetry back"
import json, sys
from collections import defaultdict
series = json.load(open(sys.argv[1]))["results"][0].get("series", [])
energy = defaultdict(lambda: defaultdict(float))  # board -> window -> J
power = defaultdict(dict)                           # board -> window -> W
for s in series:
    dev = s["tags"]["gpu"]
    board = dev.split("/")[0]
    for t, e, p in s["values"]:
        if e is not None:
            energy[board][t] += e
        if p is not None and dev == board:
            power[board][t] = p
worst = None
for board in sorted(power, key=int):
    windows = sorted(t for t in power[board] if t in energy[board])[1:-1]
    if not windows:
        continue
    counter = sum(energy[board][t] for t in windows)
    integral = sum(power[board][t] * 1.0 for t in windows)
    diff = (integral - counter) / counter * 100
    agree = 100 - abs(diff)
    worst = agree if worst is None else min(worst, agree)
    print(f"daemon GPU {board}: {len(windows)} windows, counter {counter:.1f} J, power samples {integral:.1f} J, difference {diff:+.2f} %, agreement {agree:.2f} %")
print("daemon worst agreement: " + ("n/a" if worst is None else f"{worst:.2f} %"))
PY
	cat "$OUT/daemon.txt" 2>/dev/null || true
	if grep -q 'GPU unhealthy' "$OUT/daemon.log"; then
		log "the daemon marked a GPU unhealthy: see $OUT/daemon.log"
	fi
fi

# --- 4. summary ----------------------------------------------------------------
[[ -n ${SIMULATE:-} ]] && log "SIMULATED GPUs ($SIMULATE): a dry run of the script, not a GPU measurement"
log "load: $load; duration: ${DURATION}s; poll: $INTERVAL"
log "probe --measure: $(grep 'worst agreement' "$OUT/measure.txt" || echo 'no comparison')"
if [[ $daemon == yes ]]; then
	log "daemon: $(grep 'worst agreement' "$OUT/daemon.txt" 2>/dev/null || echo 'no comparison')"
fi
log "aim: agreement within 2 % (docs/real-gpu.md); every output is in $OUT"

# Sourced by the scripts that run processes in the background (bench,
# gpu-check): bg_track PID remembers one, bg_stop stops them all (SIGTERM,
# then waits for each), for an EXIT trap.
BG_PIDS=()
bg_track() { BG_PIDS+=("$@"); }
bg_stop() {
	local p
	for p in "${BG_PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${BG_PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
}

#!/usr/bin/env bash
# bench-house-cpu.sh: the benchmarks of bench-house.sh, timed by the CPU
# their process used rather than by the wall clock, for a machine so loaded
# that wall-clock ns/op swing by ±50 % (docs/benchmarks.md, "The house
# (refactor) — before and after").
#
#   git worktree add --detach /tmp/pre b2b7efa
#   scripts/bench-house-cpu.sh /tmp/pre     # ROUNDS=6 OUT=/tmp/bench-house-cpu
#
# Each benchmark runs alone in its own process, a fixed number of iterations
# (-test.benchtime Nx, N below: about 0.3 s of CPU), GOMAXPROCS 1; its cost
# is the process's user + system CPU time (bash's `times`, 1 ms) over N, the
# process's start and the benchmark's setup included (a few ms, the same in
# both trees). Rounds alternate which tree goes first. Output is in the
# benchmark format (unit cpu-ns/op), compared with benchstat.
set -euo pipefail

OLD=${1:?usage: bench-house-cpu.sh OLD_TREE (a checkout of b2b7efa)}
NEW=$(cd "$(dirname "$0")/.." && pwd)
OLD=$(cd "$OLD" && pwd)
ROUNDS=${ROUNDS:-6}
OUT=${OUT:-/tmp/bench-house-cpu}
ONLY=${ONLY:-} # run only the benchmarks whose name matches this regexp
export CGO_ENABLED=${CGO_ENABLED:-1}
export CGO_CFLAGS=${CGO_CFLAGS:-'-O2 -g -Wno-deprecated-declarations'}

# benchmark (-test.bench, one level per /); package before; package after; N
ROWS=(
	"EngineRecord;cmd/deadlabourd;daemon;10000"
	"Attribution/time/active=16;estimator;estimator;300000"
	"Attribution/time/active=256;estimator;estimator;50000"
	"Attribution/time/active=10000;estimator;estimator;400"
	"Attribution/tokens/active=16;estimator;estimator;240000"
	"Attribution/tokens/active=256;estimator;estimator;22000"
	"Attribution/tokens/active=10000;estimator;estimator;240"
	"Attribution/marginal/active=16;estimator;estimator;240000"
	"Attribution/marginal/active=256;estimator;estimator;20000"
	"Attribution/marginal/active=10000;estimator;estimator;360"
	"Attribution/tokens-fitted/active=16;estimator;estimator;220000"
	"Attribution/tokens-fitted/active=256;estimator;estimator;22000"
	"Attribution/tokens-fitted/active=10000;estimator;estimator;200"
	"BaselineFMA/active=16;estimator;estimator;5000000"
	"BaselineFMA/active=256;estimator;estimator;320000"
	"BaselineFMA/active=10000;estimator;estimator;7000"
	"AppendLine;sink;schema;60000"
	"LineprotocolEncoder;sink;schema;40000"
	"Enqueue;sink;sink;24000"
	"ReadRequest;collector/requests;collector/requests/dialect;1400000"
	"ReadAnswer;collector/requests;collector/requests/dialect;300000"
	"ReadChunk;collector/requests;collector/requests/dialect;840000"
	"AddIncludeUsage/jsonedit;collector/requests;collector/requests/dialect;280000"
	"AddIncludeUsage/sjson;collector/requests;collector/requests/dialect;140000"
	"RemoveNullUsage/jsonedit;collector/requests;collector/requests/dialect;180000"
	"RemoveNullUsage/sjson;collector/requests;collector/requests/dialect;300000"
	"DirectChat;collector/requests;collector/requests;5000"
	"ProxyChat;collector/requests;collector/requests;2200"
	"DirectStream;collector/requests;collector/requests;1200"
	"ProxyStream;collector/requests;collector/requests;660"
	"AuditAddRecord/distinct-ids;cmd/deadlabourd;audit;200000"
	"AuditAddRecord/one-id;cmd/deadlabourd;audit;2000000"
	"Poll;collector/gpu;collector/gpu;20000"
	"SimReads;collector/gpu;collector/gpu;160000"
)

mkdir -p "$OUT/bin"
: >"$OUT/old.txt"
: >"$OUT/new.txt"

bin() { echo "$OUT/bin/$1-$(echo "$2" | tr / _).test"; }

declare -A built
for row in "${ROWS[@]}"; do
	IFS=';' read -r name opkg npkg _ <<<"$row"
	[[ -n $ONLY && ! $name =~ $ONLY ]] && continue
	for side in old new; do
		if [[ $side == old ]]; then tree=$OLD pkg=$opkg; else tree=$NEW pkg=$npkg; fi
		b=$(bin $side "$pkg")
		[[ -n ${built[$b]:-} ]] && continue
		(cd "$tree" && go test -c -o "$b" "./$pkg")
		built[$b]=1
	done
done

ms() { # bash's `times` field (0m1.234s) -> milliseconds
	awk -v t="$1" 'BEGIN { split(t, a, "m"); sub("s", "", a[2]); printf "%d", (a[1] * 60 + a[2]) * 1000 + 0.5 }'
}

run() { # side tree pkg name n
	local side=$1 tree=$2 pkg=$3 name=$4 n=$5 re t
	re=$(echo "Benchmark$name" | awk -F/ '{ for (i = 1; i <= NF; i++) printf "%s^%s$", (i > 1 ? "/" : ""), $i }')
	t=$(cd "$tree/$pkg" && {
		GOMAXPROCS=1 "$(bin "$side" "$pkg")" -test.run '^$' -test.bench "$re" -test.cpu 1 \
			-test.benchtime "${n}x" -test.count 1 >/dev/null
		times # no pipe: a forked child's counters start at zero
	})
	t=${t##*$'\n'} # children's user and system time
	local u s
	read -r u s <<<"$t"
	awk -v name="$name" -v n="$n" -v ms=$(($(ms "$u") + $(ms "$s"))) \
		'BEGIN { printf "Benchmark%s\t%d\t%.1f cpu-ns/op\n", name, n, ms * 1e6 / n }' >>"$OUT/$side.txt"
}

for ((r = 1; r <= ROUNDS; r++)); do
	echo "round $r/$ROUNDS $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
	for row in "${ROWS[@]}"; do
		IFS=';' read -r name opkg npkg n <<<"$row"
		[[ -n $ONLY && ! $name =~ $ONLY ]] && continue
		if ((r % 2)); then
			run old "$OLD" "$opkg" "$name" "$n"
			run new "$NEW" "$npkg" "$name" "$n"
		else
			run new "$NEW" "$npkg" "$name" "$n"
			run old "$OLD" "$opkg" "$name" "$n"
		fi
	done
done

benchstat old="$OUT/old.txt" new="$OUT/new.txt" | tee "$OUT/benchstat.txt"

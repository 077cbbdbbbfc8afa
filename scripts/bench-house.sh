#!/usr/bin/env bash
# bench-house.sh: the Go benchmarks whose code "The house" moved, run on the
# code before the move (OLD, a checkout of b2b7efa) and on this tree, in one
# interleaved run, then compared with benchstat (docs/benchmarks.md, "The
# house (refactor) — before and after").
#
#   git worktree add --detach /tmp/pre b2b7efa
#   scripts/bench-house.sh /tmp/pre   # ROUNDS=8 CPU=1 BENCHTIME=0.5s OUT=/tmp/bench-house
#   git worktree remove /tmp/pre
#
# Each round runs every benchmark once (-count 1) in both trees, old first in
# odd rounds and new first in even ones, so that a change in the machine's
# load falls on both alike. Test binaries are built first, so no compiler
# runs between the measurements. Needs benchstat
# (go install golang.org/x/perf/cmd/benchstat@latest).
set -euo pipefail

OLD=${1:?usage: bench-house.sh OLD_TREE (a checkout of b2b7efa)}
NEW=$(cd "$(dirname "$0")/.." && pwd)
OLD=$(cd "$OLD" && pwd)
ROUNDS=${ROUNDS:-8}
CPU=${CPU:-1}
BENCHTIME=${BENCHTIME:-0.5s} # a row's own -test.benchtime overrides it
OUT=${OUT:-/tmp/bench-house}
ONLY=${ONLY:-} # run only the rows whose name matches this regexp
export CGO_ENABLED=${CGO_ENABLED:-1}
export CGO_CFLAGS=${CGO_CFLAGS:-'-O2 -g -Wno-deprecated-declarations'}

# name; package before the move; package after; -bench; extra flags
ROWS=(
	"engine;cmd/deadlabourd;daemon;^BenchmarkEngineRecord$;"
	"estimator;estimator;estimator;^Benchmark(Attribution|BaselineFMA|Memory)$;"
	"lineprotocol;sink;schema;^Benchmark(AppendLine|LineprotocolEncoder)$;"
	"enqueue;sink;sink;^BenchmarkEnqueue$;"
	"dialect;collector/requests;collector/requests/dialect;^Benchmark(ReadRequest|ReadAnswer|ReadChunk|AddIncludeUsage|RemoveNullUsage)$;"
	"proxy;collector/requests;collector/requests;^Benchmark(Proxy|Direct)(Chat|Stream)$;"
	"audit;cmd/deadlabourd;audit;^BenchmarkAuditAddRecord$;-test.benchtime=20000x"
	"gpu;collector/gpu;collector/gpu;^Benchmark(Poll|SimReads)$;"
)

mkdir -p "$OUT/bin"
: >"$OUT/old.txt"
: >"$OUT/new.txt"

bin() { echo "$OUT/bin/$1-$(echo "$2" | tr / _).test"; }

for row in "${ROWS[@]}"; do
	IFS=';' read -r name opkg npkg _ _ <<<"$row"
	[[ -n $ONLY && ! $name =~ $ONLY ]] && continue
	for side in old new; do
		if [[ $side == old ]]; then tree=$OLD pkg=$opkg; else tree=$NEW pkg=$npkg; fi
		b=$(bin $side "$pkg")
		(cd "$tree" && go test -c -o "$b" "./$pkg")
	done
done

run() { # side tree pkg regex extra
	local side=$1 tree=$2 pkg=$3 re=$4 extra=$5
	# Run in the package's directory, as go test does (testdata). The pkg
	# line is dropped: the same benchmark moved between packages.
	(cd "$tree/$pkg" && "$(bin "$side" "$pkg")" -test.run '^$' -test.bench "$re" \
		-test.count 1 -test.cpu "$CPU" -test.benchtime "$BENCHTIME" -test.benchmem $extra) |
		grep -v '^pkg:' | grep -E '^(Benchmark|goos|goarch|cpu)' >>"$OUT/$side.txt"
}

for ((r = 1; r <= ROUNDS; r++)); do
	echo "round $r/$ROUNDS $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
	for row in "${ROWS[@]}"; do
		IFS=';' read -r name opkg npkg re extra <<<"$row"
		[[ -n $ONLY && ! $name =~ $ONLY ]] && continue
		if ((r % 2)); then
			run old "$OLD" "$opkg" "$re" "$extra"
			run new "$NEW" "$npkg" "$re" "$extra"
		else
			run new "$NEW" "$npkg" "$re" "$extra"
			run old "$OLD" "$opkg" "$re" "$extra"
		fi
	done
done

benchstat old="$OUT/old.txt" new="$OUT/new.txt" | tee "$OUT/benchstat.txt"

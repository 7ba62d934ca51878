#!/usr/bin/env bash
# Counts what one iteration of a Go benchmark costs in instructions and in
# simulated cache misses, under valgrind's cachegrind: figures that do not
# move with the host's speed, which on the shared 2-core machines drifts by
# ±20% within minutes (docs/BENCHMARKS.md).
#
#   scripts/cachegrind-bench.sh ./segmenter/ 'BenchmarkApply$' [N]
#
# It builds the package's test binary and runs the benchmark twice, with N
# and 3N iterations (N = 50000 by default; -benchtime Nx), so that the
# difference leaves out the set-up, and prints per iteration:
#   - instructions, first-level (32 KiB) data read misses, last-level
#     (1 MiB, modelling a core's share of cache; CG_LL=33554432 models the
#     machine's whole 32 MiB L3, whose misses go to main memory) data
#     read misses and
#     first-level write misses, for the program ("mutator") and for the Go
#     runtime's garbage collector and scheduler apart: those move from run
#     to run with where the GC cycles fall, so compare mutator figures;
#   - the top functions by instructions;
#   - with CG_LINES=REGEX, the source lines of the functions whose names
#     match REGEX (say 'Profile\)\.apply$'), by last-level misses: where in
#     a function the misses are.
# GOMAXPROCS=1 (no idle spinning) and asynchronous preemption off (valgrind
# runs one thread at a time). Valgrind emulates an older CPU: no SHA-NI or
# AVX-512, so crypto/sha256 and the GC's scan count more than on the
# machine. Needs valgrind (apt-get install -y valgrind); about 1-2 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=${1:?usage: scripts/cachegrind-bench.sh PACKAGE BENCHREGEX [N]}
re=${2:?usage: scripts/cachegrind-bench.sh PACKAGE BENCHREGEX [N]}
n=${3:-50000}
command -v valgrind >/dev/null || { echo "cachegrind-bench: valgrind is not installed (apt-get install -y valgrind)" >&2; exit 1; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/herald-cg.XXXXXX")
trap 'rm -rf "$dir"' EXIT
${GO:-go} test -c -o "$dir/bench.test" "$pkg"
for k in 1 3; do
	GOMAXPROCS=1 GODEBUG=asyncpreemptoff=1 valgrind --tool=cachegrind --cache-sim=yes \
		--D1=32768,8,64 --LL="${CG_LL:-1048576}",16,64 --cachegrind-out-file="$dir/cg.$k" \
		"$dir/bench.test" -test.run '^$' -test.bench "$re" -test.benchtime "$((k * n))x" >"$dir/log.$k" 2>&1 ||
		{ cat "$dir/log.$k" >&2; exit 1; }
done
cg_diff "$dir/cg.1" "$dir/cg.3" >"$dir/diff"
cg_annotate --auto=no --threshold=0 "$dir/diff" >"$dir/annotated"
echo "per iteration (GC and scheduler apart: they move with where the GC cycles fall):"
awk -v n="$((2 * n))" '
	$NF ~ /:/ && $1 ~ /^-?[0-9,]+/ { gsub(/\([^)]*\)/, ""); gsub(",", ""); split($NF, a, ":")
		k = a[1] ~ /runtime\/(mgc|mbitmap|mheap|mspanset|gc\/|mwbbuf|mfinal|mcentral|mpagealloc|lock|proc|netpoll|sys_linux|stubs|os_linux|time\.go|sema|chan|mprof)/ ? "gc" : "mut"
		ir[k] += $1; d1[k] += $5; ll[k] += $6; w1[k] += $8 }
	END { for (k in ir) printf "  %-7s %8.0f instructions, %6.2f D1 read misses, %6.2f LL read misses, %6.2f D1 write misses\n",
		k == "gc" ? "GC" : "mutator", ir[k]/n, d1[k]/n, ll[k]/n, w1[k]/n }
' "$dir/annotated" | sort -r
echo "top functions (instructions per iteration):"
awk -v n="$((2 * n))" '$NF ~ /:/ && $1 ~ /^-?[0-9,]+$/ { v = $1; gsub(",", "", v); k = split($NF, a, "/"); printf "%8.0f  %s\n", v/n, a[k] }' "$dir/annotated" |
	sort -rn | sed -n 1,25p # reads all: no SIGPIPE under pipefail
if [ -n "${CG_LINES:-}" ]; then
	echo "source lines of functions matching $CG_LINES (LL read misses, D1 read misses, instructions per iteration):"
	# The raw outputs keep line numbers, which cg_diff's does not; fl= names
	# the function's file, fi=/fe= the file of inlined lines that follow.
	awk -v FN="$CG_LINES" -v n="$((2 * n))" '
		FNR == 1 { f++ }
		/^fl=/ { fl = substr($0, 4); cur = fl; next }
		/^f[ie]=/ { cur = substr($0, 4); next }
		/^fn=/ { fn = substr($0, 4); cur = fl; next }
		/^[0-9]/ && fn ~ FN { k = cur ":" $1; s = f == 1 ? -1 : 1; ir[k] += s * $2; d1[k] += s * $6; ll[k] += s * $7 }
		END { for (k in ir) if (ir[k] != 0 || ll[k] != 0) printf "%8.2f %8.2f %8.1f  %s\n", ll[k] / n, d1[k] / n, ir[k] / n, k }
	' "$dir/cg.1" "$dir/cg.3" | sort -rn | sed -n 1,30p
fi

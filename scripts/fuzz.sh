#!/usr/bin/env bash
# Runs every fuzz target of the module for a bounded time each (FUZZTIME,
# default 5s), one target at a time as `go test -fuzz` requires. A failing
# input is saved under the package's testdata/fuzz/ and replayed by every
# later `go test` run: commit it with the fix.
#
# The fuzzing engine itself sometimes ends a run with "context deadline
# exceeded" and no failing input (a worker busy with a slow input when the
# fuzz time runs out, on a loaded machine): such a run is tried once more,
# and fails the script only if it ends that way again.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-5s}
log=$(mktemp "${TMPDIR:-/tmp}/herald-fuzz.XXXXXX")
trap 'rm -f "$log"' EXIT
status=0
fuzz() { $GO test -run '^$' -fuzz "^${2}\$" -fuzztime "$FUZZTIME" "$1" >"$log" 2>&1; }
engineTimeout() { grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; }
for pkg in $($GO list ./...); do
	dir=$($GO list -f '{{.Dir}}' "$pkg")
	grep -lq '^func Fuzz' "$dir"/*_test.go 2>/dev/null || continue
	for target in $($GO test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "fuzz $pkg $target ($FUZZTIME)"
		if fuzz "$pkg" "$target"; then
			continue
		fi
		if engineTimeout; then
			echo "fuzz $pkg $target: the fuzzing engine timed out without a failing input; once more"
			if fuzz "$pkg" "$target"; then
				continue
			fi
		fi
		cat "$log"
		status=1
	done
done
exit $status

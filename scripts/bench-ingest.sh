#!/usr/bin/env bash
# Ingest over HTTP on loopback: the figures of docs/BENCHMARKS.md
# ("Ingest"). Each measurement gets a fresh in-process ingest and embedded
# broker (`herald loadgen -serve`), loaded from a separate process: wrk
# (apt-get install -y wrk) for throughput, `herald loadgen -rate` for
# latency at a fixed rate. RUNS (default 3) repeats each measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
HERALD=${HERALD:-bin/herald}
RUNS=${RUNS:-3}
ADDR=127.0.0.1:18080
TMP=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$TMP"' EXIT

serve() { # fresh ingest + broker, until killed
	"$HERALD" loadgen -serve -listen "$ADDR" -duration 10m >"$TMP/serve.out" 2>&1 &
	SERVE=$!
	for _ in $(seq 50); do curl -s -o /dev/null "http://$ADDR/" && return; sleep 0.1; done
	echo "ingest did not start" >&2; exit 1
}
stop() { kill "$SERVE"; wait "$SERVE" 2>/dev/null || true; }

"$HERALD" loadgen -kind webhook -dump "$TMP/wh-cold.txt" -dump-count 400000 -users 100000
"$HERALD" loadgen -kind webhook -dump "$TMP/wh-warm.txt" -dump-count 400000 -users 20000

for run in $(seq "$RUNS"); do
	echo "== run $run"
	serve
	echo "postEvent, 64 connections, 10s (wrk):"
	wrk -t1 -c64 -d10s -s scripts/wrk-post-event.lua "http://$ADDR" | tail -2
	echo "postEvent, 128 connections, 10s, numbers seen before (wrk):"
	wrk -t1 -c128 -d10s -s scripts/wrk-post-event.lua "http://$ADDR" | tail -2
	stop
	serve
	echo "postEvent at 5,000 requests/s, 10s (herald loadgen -rate):"
	"$HERALD" loadgen -target "http://$ADDR" -token loadgen-token-0123456789 -app demo -rate 5000 -duration 10s | tail -1
	stop
	for kind in cold warm; do
		serve
		echo "signed status webhooks, 128 connections, 10s, recipients $kind (wrk):"
		REQUESTS="$TMP/wh-$kind.txt" wrk -t1 -c128 -d10s -s scripts/wrk-webhook.lua "http://$ADDR" | tail -2
		stop
	done
	echo "Segment /v1/batch of 500, 8 connections, 10s (herald loadgen, in process):"
	"$HERALD" loadgen -kind segment-batch -connections 8 -duration 10s | tail -2
done

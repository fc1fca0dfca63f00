#!/usr/bin/env bash
# Latency under maintenance: a mixed load (wrk GETs and JSON PUTs on random
# keys, side by side) with and without a compaction running, on segments
# small enough that the PUTs rotate them every fraction of a second. Prints
# req/s, p99 and the worst latency of each half per round: what an event
# loop that waited on a disk (a rotation's fsync, compaction I/O) would show.
# Release build, fsync=interval, KeyDir cache 8 MiB.
#
# usage: scripts/bench-mixed.sh [KEYS] [SECONDS] [ROUNDS]   (default 1000000 10 2)
set -euo pipefail
cd "$(dirname "$0")/.."
keys="${1:-1000000}" seconds="${2:-10}" rounds="${3:-2}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
swift build -c release --product logkvd >/dev/null
source scripts/lib.sh
work="$(mktemp -d)"
chmod 755 "$work"
trap '[ -n "${LOGKVD_PID:-}" ] && kill "$LOGKVD_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port=$(free_port)
start_logkvd .build/release/logkvd "$work/data" "127.0.0.1:$port" --log-level error \
    --cache-bytes $((8 << 20)) --segment-size $((8 << 20))
# Loaded twice: half of every segment is garbage, so compaction has work.
python3 scripts/bench/httpload.py load logkv "$port" "$keys" >/dev/null
python3 scripts/bench/httpload.py load logkv "$port" "$keys" >/dev/null

load() {  # OP OUTPUT
    BENCH_SYSTEM=logkv BENCH_OP="$1" BENCH_KEYS="$keys" \
        wrk -t1 -c16 -d"${seconds}s" --latency -s scripts/bench/workload.lua "http://127.0.0.1:$port" > "$2"
}
summary() {  # OUTPUT
    printf '%s req/s, p99 %s, max %s' "$(awk '/Requests\/sec/ {print $2}' "$1")" \
        "$(awk '$1 == "99%" {print $2}' "$1")" "$(awk '$1 == "Latency" {print $4}' "$1")"
}
compactions() {
    curl -s "http://127.0.0.1:$port/metrics" | awk '$1 == "logkv_compaction_runs_total" {print $2 + 0; found = 1} END {if (!found) print 0}'
}
for round in $(seq "$rounds"); do
    for mode in quiet compacting; do
        before=$(compactions)
        load get "$work/get.txt" & get=$!
        load put "$work/put.txt" & put=$!
        if [ "$mode" = compacting ]; then
            sleep 2
            curl -s -X POST "http://127.0.0.1:$port/v1/admin/compact" >/dev/null
        fi
        wait "$get" "$put"
        echo "round $round, $mode: GET $(summary "$work/get.txt") | PUT $(summary "$work/put.txt")"
        if [ "$mode" = compacting ]; then
            # The next quiet run starts once this compaction is over.
            for _ in $(seq 600); do [ "$(compactions)" -gt "$before" ] && break; sleep 0.5; done
        fi
    done
done
curl -s "http://127.0.0.1:$port/metrics" | grep -E '^logkv_(compaction_runs_total|compaction_duration_seconds_sum|segments) ' || true

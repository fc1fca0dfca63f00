#!/usr/bin/env bash
# Write stalls under rotation and compaction, two builds side by side.
#
# logkvd runs with `--fsync interval` and 4 MiB segments (a rotation every
# second or so under this load) while a compaction is asked for every
# second. wrk drives PUTs of 256-byte values to random keys, and at the same
# time GET /health on 4 more connections: /health never touches the store,
# so its p99 shows how long event loops were kept from answering. Each round
# runs BEFORE then AFTER; the table shows every round and the medians.
#
# usage: scripts/bench-write-stalls.sh [BEFORE_REV] [DURATION_SECONDS] [CONNECTIONS] [ROUNDS]
#        (defaults f8f3ad5 20 32 3; BEFORE is built once into
#        .build/bench-before/REV/, or BENCH_BEFORE_BIN=path names a built logkvd)
set -euo pipefail
cd "$(dirname "$0")/.."
before_rev="${1:-f8f3ad5}"
duration="${2:-20}"
conns="${3:-32}"
rounds="${4:-3}"
keys=1000000
source scripts/lib.sh
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }

bench_workdir
dir="$DIR"
bench_builds "$before_rev"

value="$(head -c 256 /dev/zero | tr '\0' 'v')"
cat > "$dir/put.lua" <<LUA
math.randomseed(os.time())
request = function()
  return wrk.format("PUT", "/v1/kv/k" .. math.random(0, $keys - 1), nil, "$value")
end
LUA
cat > "$dir/report.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.0f %.3f %.3f %.3f %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA
cat "$dir/report.lua" >> "$dir/put.lua"

# run BUILD: one measurement; prints "put_rps put_p50 put_p99 put_max put_err health_p50 health_p99 health_max handed_off"
run() {
    local build="$1" port data
    port="$(free_port)"
    data="$dir/data-$build-$RANDOM"
    start_logkvd "$dir/logkvd-$build" "$data" "127.0.0.1:$port" --fsync interval --segment-size 4194304 --log-level error
    local pid=$LOGKVD_PID
    pids+=("$pid")
    # Something to compact: one pass over a slice of the keys.
    wrk -t2 -c"$conns" -d3s -s "$dir/put.lua" "http://127.0.0.1:$port" >/dev/null
    (
        end=$((SECONDS + duration))
        while [ $SECONDS -lt $end ]; do
            curl -s -o /dev/null -X POST "http://127.0.0.1:$port/v1/admin/compact"
            sleep 1
        done
    ) &
    local compactor=$!
    wrk -t1 -c4 -d"${duration}s" -s "$dir/report.lua" "http://127.0.0.1:$port/health" > "$dir/health.out" &
    local health=$!
    local put
    put=$(wrk -t2 -c"$conns" -d"${duration}s" -s "$dir/put.lua" "http://127.0.0.1:$port" | awk '/^RESULT/ {print $2, $3, $4, $5, $6}')
    wait "$health" "$compactor"
    local off
    off=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^logkv_writes_handed_off_total/ {s += $2} END {print s + 0}')
    local h
    h=$(awk '/^RESULT/ {print $3, $4, $5}' "$dir/health.out")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$data"
    echo "$put $h $off"
}

printf "| %-6s | %-5s | %9s | %8s | %8s | %8s | %6s | %10s | %10s | %10s | %10s |\n" \
    build round "PUT req/s" "p50 ms" "p99 ms" "max ms" errors "health p50" "health p99" "health max" "handed off"
printf "|%s|\n" "--------|-------|-----------|----------|----------|----------|--------|------------|------------|------------|------------"
: > "$dir/results"
for r in $(seq "$rounds"); do
    for build in before after; do
        read -r rps p50 p99 max err hp50 hp99 hmax off <<<"$(run "$build")"
        echo "$build $rps $p50 $p99 $max $err $hp50 $hp99 $hmax $off" >> "$dir/results"
        printf "| %-6s | %-5s | %9s | %8s | %8s | %8s | %6s | %10s | %10s | %10s | %10s |\n" \
            "$build" "$r" "$rps" "$p50" "$p99" "$max" "$err" "$hp50" "$hp99" "$hmax" "$off"
    done
done
for build in before after; do
    python3 - "$build" "$dir/results" <<'PY'
import statistics, sys
build, path = sys.argv[1], sys.argv[2]
rows = [l.split()[1:] for l in open(path) if l.split()[0] == build]
med = [statistics.median(float(r[i]) for r in rows) for i in range(9)]
print("| %-6s | %-5s | %9.0f | %8.2f | %8.2f | %8.2f | %6.0f | %10.2f | %10.2f | %10.2f | %10.0f |" % (build, "med", *med))
PY
done
echo
echo "logkvd --fsync interval --segment-size 4194304, compaction asked every second;"
echo "wrk -t2 -c$conns PUT 256 B to random keys of $keys, ${duration}s; wrk -t1 -c4 GET /health alongside"

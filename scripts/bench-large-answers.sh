#!/usr/bin/env bash
# Large answers, two builds side by side: what clients fetching big values
# cost the event loops and the server's memory.
#
# 1. /health latency (wrk, 2 connections) while 3 clients fetch a 64 MiB
#    value with ?raw in a loop.
# 2. /health latency while 4 clients fetch ~0.9 MB key listings gzip-compressed.
# 3. logkvd's RSS growth with N clients that each ask for the 64 MiB value
#    (raw) and read nothing: 12 for both builds, then 4,096 for AFTER only
#    (BEFORE would need 256 GiB), and 4 JSON GETs of 60 MiB of control bytes
#    (escaped to 6x) for both.
#
# usage: scripts/bench-large-answers.sh [BEFORE_REV] [DURATION_SECONDS]
#        (defaults 0aad1ba 15; BEFORE is built once into .build/bench-before/REV/)
set -euo pipefail
cd "$(dirname "$0")/.."
before_rev="${1:-0aad1ba}"
duration="${2:-15}"
source scripts/lib.sh
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"  # 4,096 clients and as many server sockets

bench_workdir
dir="$DIR"
bench_builds "$before_rev"

head -c $((64 << 20)) /dev/urandom > "$dir/big"
head -c $((60 << 20)) /dev/zero | tr '\0' '\001' > "$dir/controls"
cat > "$dir/report.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.3f %.3f %.3f\n", latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
LUA
cat > "$dir/idle.py" <<'PY'
# Opens N connections, sends one GET on each, reads nothing; prints
# logkvd's RSS growth once the server has done what it will.
import socket, sys, time
port, n, path, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
before = rss()
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    socks.append(s)
peak = 0
for _ in range(10):
    time.sleep(1)
    peak = max(peak, rss() - before)
print(f"{peak / 2**20:.0f}")
PY

# latency BUILD KIND: "/health p50 p99 max" while the load of KIND runs
latency() {
    local build="$1" kind="$2" port data
    port="$(free_port)"
    data="$dir/data-$build-$RANDOM"
    start_logkvd "$dir/logkvd-$build" "$data" "127.0.0.1:$port" --fsync interval --log-level error
    local pid=$LOGKVD_PID
    pids+=("$pid")
    local load=()
    if [ "$kind" = raw ]; then
        curl -s -o /dev/null -X PUT --data-binary @"$dir/big" "http://127.0.0.1:$port/v1/kv/big"
        for _ in 1 2 3; do
            ( end=$((SECONDS + duration)); while [ $SECONDS -lt $end ]; do
                curl -s -o /dev/null "http://127.0.0.1:$port/v1/kv/big?raw"; done ) &
            load+=($!)
        done
    else
        # ~0.9 MB listings: 10,000 keys of ~80 bytes.
        python3 - "$port" <<'PY'
import json, sys, urllib.request
port = sys.argv[1]
for start in range(0, 10000, 1000):
    ops = [{"op": "put", "key": "listing/" + "k" * 64 + f"/{i:06d}", "value": "v"} for i in range(start, start + 1000)]
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v1/batch", data=json.dumps({"ops": ops}).encode(),
                                                  headers={"Content-Type": "application/json"}, method="POST")).read()
PY
        for _ in 1 2 3 4; do
            ( end=$((SECONDS + duration)); while [ $SECONDS -lt $end ]; do
                curl -s -o /dev/null -H 'Accept-Encoding: gzip' "http://127.0.0.1:$port/v1/keys?prefix=listing/&limit=10000"; done ) &
            load+=($!)
        done
    fi
    sleep 1
    local h
    h=$(wrk -t1 -c2 -d"$((duration - 2))s" -s "$dir/report.lua" "http://127.0.0.1:$port/health" | awk '/^RESULT/ {print $2, $3, $4}')
    wait "${load[@]}" 2>/dev/null || true
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$data"
    echo "$h"
}

# memory BUILD N PATH FILE: RSS growth in MiB
memory() {
    local build="$1" n="$2" path="$3" file="$4" port data
    port="$(free_port)"
    data="$dir/data-$build-$RANDOM"
    start_logkvd "$dir/logkvd-$build" "$data" "127.0.0.1:$port" --fsync interval --log-level error
    local pid=$LOGKVD_PID
    pids+=("$pid")
    curl -s -o /dev/null -X PUT --data-binary @"$file" "http://127.0.0.1:$port/v1/kv/${path%%\?*}"
    local grown
    grown=$(python3 "$dir/idle.py" "$port" "$n" "/v1/kv/$path" "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$data"
    echo "$grown"
}

echo "| measurement | before | after |"
echo "|---|---|---|"
for kind in raw gzip; do
    b=$(latency before "$kind"); a=$(latency after "$kind")
    label="/health p50 / p99 / max ms while 3 clients fetch a 64 MiB value ?raw"
    [ "$kind" = gzip ] && label="/health p50 / p99 / max ms while 4 clients fetch gzip 0.9 MB listings"
    echo "| $label | ${b// / \/ } | ${a// / \/ } |"
done
echo "| RSS growth, 12 clients ask for a 64 MiB value ?raw and read nothing | $(memory before 12 'big?raw' "$dir/big") MiB | $(memory after 12 'big?raw' "$dir/big") MiB |"
echo "| RSS growth, 4 JSON GETs of 60 MiB of control bytes, unread | $(memory before 4 controls "$dir/controls") MiB | $(memory after 4 controls "$dir/controls") MiB |"
echo "| RSS growth, 4,096 clients ask for a 64 MiB value ?raw and read nothing | (not run: 256 GiB) | $(memory after 4096 'big?raw' "$dir/big") MiB |"
echo
echo "release builds; logkvd --fsync interval, defaults otherwise (--max-answer-bytes-in-flight 64 MiB); ${duration}s per latency run"

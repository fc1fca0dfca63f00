#!/usr/bin/env bash
# Blocking queries under load: WATCHERS idle watchers on distinct keys (CPU
# they cost, memory), PUT throughput with them held against without (wrk,
# random keys, raw PUT), and wake-up latency from a PUT to its watcher's
# answer (p50/p99). Release build, fsync=interval, one logkvd.
#
# usage: scripts/bench-watch.sh [WATCHERS] [SECONDS] [SAMPLES]   (default 10000 8 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
watchers="${1:-10000}" seconds="${2:-8}" samples="${3:-1000}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
swift build -c release --product logkvd >/dev/null
source scripts/lib.sh
# Every watcher holds a connection, on both sides.
ulimit -n $((watchers * 2 + 4096))
work="$(mktemp -d)"
chmod 755 "$work"
trap '[ -n "${LOGKVD_PID:-}" ] && kill "$LOGKVD_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port=$(free_port)
start_logkvd .build/release/logkvd "$work/data" "127.0.0.1:$port" --log-level error \
    --max-connections $((watchers + 1024)) --max-watches $((watchers + 16))
pid=$(pgrep -P "$LOGKVD_PID" logkvd || echo "$LOGKVD_PID")
python3 scripts/bench/watchers.py "127.0.0.1:$port" "$pid" "$watchers" "$seconds" "$samples" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(f"{r[\"watchers\"]:,} watchers held on distinct keys (logkvd RSS {r[\"rss_mib_with_watchers\"]:.0f} MiB with them):")
print(f"  idle: {r[\"idle_cpu_seconds_per_10s\"]:.2f} CPU-seconds in 10 s; answered before any write: {r[\"answered_before_any_write\"]}")
print(f"  PUT (raw, random keys, wrk -t2 -c32): {r[\"put_rps_without\"]:,.0f} req/s (p99 {r[\"put_p99_without\"]}) without, "
      f"{r[\"put_rps_with\"]:,.0f} req/s (p99 {r[\"put_p99_with\"]}) with: {r[\"ratio\"]:.2f}x (target >= 0.9x); "
      f"watchers woken by those writes: {r[\"woken_by_writes_to_other_keys\"]}")
print(f"  wake-up from a PUT to its watcher answer: p50 {r[\"wake_p50_ms\"]:.2f} ms, p99 {r[\"wake_p99_ms\"]:.2f} ms ({r[\"wake_samples\"]} samples)")
'

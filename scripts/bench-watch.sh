#!/usr/bin/env bash
# Blocking queries under load: WATCHERS idle watchers on distinct keys (CPU
# they cost, memory), PUT throughput with them held against without (wrk,
# random keys, raw PUT), and wake-up latency from a PUT to its watcher's
# answer (p50/p99). Release build, fsync=interval, one logkvd.
#
# usage: scripts/bench-watch.sh [WATCHERS] [SECONDS] [SAMPLES] [ROUNDS]   (default 10000 8 1000 3)
set -euo pipefail
cd "$(dirname "$0")/.."
watchers="${1:-10000}" seconds="${2:-8}" samples="${3:-1000}" rounds="${4:-3}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
swift build -c release --product logkvd >/dev/null
source scripts/lib.sh
# Every watcher holds a connection: a descriptor in logkvd and one in the
# client (separate processes), within the hard limit.
want=$((watchers + 4096)) hard=$(ulimit -Hn)
[ "$hard" = unlimited ] || [ "$want" -le "$hard" ] || want=$hard
ulimit -n "$want"
work="$(mktemp -d)"
chmod 755 "$work"
trap '[ -n "${LOGKVD_PID:-}" ] && kill "$LOGKVD_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port=$(free_port)
start_logkvd .build/release/logkvd "$work/data" "127.0.0.1:$port" --log-level error \
    --max-connections $((watchers + 1024)) --max-watches $((watchers + 16))
pid=$(pgrep -P "$LOGKVD_PID" logkvd || echo "$LOGKVD_PID")
python3 scripts/bench/watchers.py "127.0.0.1:$port" "$pid" "$watchers" "$seconds" "$samples" "$rounds"

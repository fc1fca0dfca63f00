#!/usr/bin/env bash
# Where a GET's time goes: CPU per request of a running logkvd and of wrk,
# for /health, for `?raw` GETs of a few hot keys (answered from the KeyDir's
# memory) and of every key (each a SQLite lookup once the set outgrows the
# cache), and for the JSON route. On a 2-core box the two share the cores,
# so throughput follows the sum; the split says which side to look at.
#
# usage: scripts/bench-cpu.sh PID PORT KEYS [SECONDS] [ROUNDS]
#        (PID: the logkvd to measure, already loaded with KEYS keys by
#        `python3 scripts/bench/httpload.py load logkv PORT KEYS`)
set -euo pipefail
cd "$(dirname "$0")/.."
pid="$1"; port="$2"; keys="$3"; seconds="${4:-6}"; rounds="${5:-2}"
ticks=$(getconf CLK_TCK)
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }

measure() {  # LABEL SYSTEM OP KEYS
  local before after wrk_pid wrk_before wrk_after out requests
  before=$(cpu_of "$pid")
  BENCH_SYSTEM="$2" BENCH_OP="$3" BENCH_KEYS="$4" \
    wrk -t2 -c32 -d"${seconds}s" --latency -s scripts/bench/workload.lua "http://127.0.0.1:$port" > "$tmp" &
  wrk_pid=$!
  sleep 0.2
  wrk_before=$(cpu_of "$wrk_pid")
  sleep "$(echo "$seconds - 0.5" | bc)"
  wrk_after=$(cpu_of "$wrk_pid")
  wait "$wrk_pid"
  after=$(cpu_of "$pid")
  out=$(awk '/^RESULT/ {print $2, $4, $6}' "$tmp")
  requests=$(awk '/requests in/ {print $1}' "$tmp")
  # wrk's CPU is sampled over (seconds - 0.7) of its run: scale to the whole.
  awk -v label="$1" -v out="$out" -v req="$requests" -v s="$((after - before))" \
      -v w="$((wrk_after - wrk_before))" -v t="$ticks" -v secs="$seconds" 'BEGIN {
    split(out, o, " ")
    printf "%-28s %8.0f req/s  p99 %6.2f ms  wrong %d  logkvd %5.1f us/req  wrk %5.1f us/req\n",
      label, o[1], o[2], o[3], s / t * 1e6 / req, w / t * 1e6 / (req * (secs - 0.7) / secs)
  }'
}

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
for round in $(seq "$rounds"); do
  echo "round $round"
  measure "GET /health" plain health 100
  measure "GET ?raw, 100 hot keys" logkv-raw get 100
  measure "GET ?raw, all $keys keys" logkv-raw get "$keys"
  measure "GET JSON, all $keys keys" logkv get "$keys"
done

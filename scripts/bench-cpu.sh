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
usage="usage: scripts/bench-cpu.sh PID PORT KEYS [SECONDS] [ROUNDS]"
pid="${1:?$usage}"; port="${2:?$usage}"; keys="${3:?$usage}"
seconds="${4:-6}"; rounds="${5:-2}"
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
[ -r "/proc/$pid/stat" ] || { echo "no process $pid" >&2; exit 1; }
ticks=$(getconf CLK_TCK)
# utime + stime of a process (all its threads), in clock ticks.
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# cutime + cstime of this shell: the CPU of the children it has waited for.
children_cpu() { awk '{print $16 + $17}' "/proc/$$/stat"; }

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT

measure() {  # LABEL SYSTEM OP KEYS
  local server_before wrk_before server_after wrk_after
  server_before=$(cpu_of "$pid"); wrk_before=$(children_cpu)
  BENCH_SYSTEM="$2" BENCH_OP="$3" BENCH_KEYS="$4" \
    wrk -t2 -c32 -d"${seconds}s" --latency -s scripts/bench/workload.lua "http://127.0.0.1:$port" > "$tmp" \
    || { echo "wrk failed:" >&2; cat "$tmp" >&2; exit 1; }
  server_after=$(cpu_of "$pid"); wrk_after=$(children_cpu)
  awk -v label="$1" -v server="$((server_after - server_before))" -v client="$((wrk_after - wrk_before))" \
      -v ticks="$ticks" '
    /requests in/ { requests = $1 }
    /^RESULT/ { rate = $2; p99 = $4; errors = $5; wrong = $6 }
    END {
      if (requests == 0) { print label ": no requests" > "/dev/stderr"; exit 1 }
      printf "%-28s %8.0f req/s  p99 %6.2f ms  errors %d  wrong %d  logkvd %5.1f us/req  wrk %5.1f us/req\n",
        label, rate, p99, errors, wrong, server / ticks * 1e6 / requests, client / ticks * 1e6 / requests
    }' "$tmp"
}

for round in $(seq "$rounds"); do
  echo "round $round"
  measure "GET /health" plain health 100
  measure "GET ?raw, 100 hot keys" logkv-raw get 100
  measure "GET ?raw, all $keys keys" logkv-raw get "$keys"
  measure "GET JSON, all $keys keys" logkv get "$keys"
done

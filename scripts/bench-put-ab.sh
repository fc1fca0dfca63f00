#!/usr/bin/env bash
# PUT overwrites against logkvd builds side by side: each build is loaded
# with the same keys, then wrk runs PUT overwrites of random keys against
# each in turn, the order rotated every round. Prints req/s and p99 ms per
# run and the median per build.
#
# usage: scripts/bench-put-ab.sh [BUILD…]   (default: . db51cbb)
#   BUILD is `.` (this working tree, release), a git revision (built once
#   into .build/bench-before/REV/), or the path of a logkvd binary.
#   BENCH_KEYS (300000), BENCH_SECONDS (8), BENCH_ROUNDS (4).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
keys="${BENCH_KEYS:-300000}"; seconds="${BENCH_SECONDS:-8}"; rounds="${BENCH_ROUNDS:-4}"
[ "$#" -gt 0 ] || set -- . db51cbb
bench_workdir
dir="$DIR"
bins=()
for build in "$@"; do
  if [ "$build" = . ]; then
    swift build -c release --product logkvd >/dev/null
    bins+=(.build/release/logkvd)
  elif [ -x "$build" ]; then
    bins+=("$build")
  else
    bins+=("$(logkvd_at "$build")")
  fi
done
ports=()
for i in "${!bins[@]}"; do
  p=$(free_port); ports+=("$p")
  "${bins[$i]}" --addr "127.0.0.1:$p" --data-dir "$dir/d$i" --cache-bytes 8388608 --log-level warning >/dev/null &
  pids+=($!)
done
for p in "${ports[@]}"; do
  for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$p/health" && break; sleep 0.1; done
  python3 scripts/bench/httpload.py load logkv "$p" "$keys" >/dev/null
done
results="$dir/results"
n=${#bins[@]}
for round in $(seq "$rounds"); do
  for k in $(seq 0 $((n - 1))); do
    i=$(( (k + round) % n ))
    out=$(BENCH_SYSTEM=logkv BENCH_OP=put BENCH_KEYS="$keys" wrk -t2 -c32 -d"${seconds}s" --latency \
      -s scripts/bench/workload.lua "http://127.0.0.1:${ports[$i]}" | awk '/^RESULT/ {print $2, $4}')
    echo "$i $out" >> "$results"
    echo "round $round: ${bins[$i]}: $out (req/s, p99 ms)" >&2
  done
done
python3 - "$results" "${bins[@]}" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for i, name in enumerate(sys.argv[2:]):
    runs = [(float(r[1]), float(r[2])) for r in rows if int(r[0]) == i]
    print(f"{name}: median {statistics.median(x for x, _ in runs):,.0f} req/s, p99 {statistics.median(y for _, y in runs):.2f} ms "
          f"({', '.join(f'{x:,.0f}' for x, _ in runs)})")
PY

#!/usr/bin/env bash
# logkvd side by side with the tools its users would pick instead, in one run
# on this machine: nginx-light (a fixed 200, the HTTP/1.1 ceiling), Redis 7
# behind webdis (its HTTP/JSON front end), and etcd's JSON gateway. Each gets
# the same keys (k0000000 … , 100-byte values); logkvd runs with a KeyDir
# cache far smaller than the key set. The same wrk workloads (random keys)
# run interleaved, ROUNDS times; the table shows medians, p99 beside
# throughput, wrong answers, and each ratio against its peer. Every answer is
# checked by the wrk script, and a sample of keys is read back exactly from
# every system at the end.
#
# usage: scripts/bench-peers.sh [KEYS] [DURATION_SECONDS] [CONNECTIONS] [ROUNDS]
#        (defaults 1000000 8 32 2; BENCH_CACHE_BYTES sets logkvd's cache,
#        BENCH_SKIP_ETCD=1 leaves etcd out; it loads slowly;
#        BENCH_BEFORE=REV adds a logkvd built from REV, loaded with the same
#        keys, whose logkvd workloads run right after this code's in every
#        round, and a second table: this code against REV)
set -euo pipefail
cd "$(dirname "$0")/.."
keys="${1:-1000000}"
duration="${2:-8}"
conns="${3:-32}"
rounds="${4:-2}"
cache_bytes="${BENCH_CACHE_BYTES:-$((8 << 20))}"
source scripts/lib.sh

need=()
for tool in wrk:wrk nginx:nginx-light redis-server:redis-server redis-cli:redis-tools webdis:webdis curl:curl python3:python3; do
  command -v "${tool%%:*}" >/dev/null || [ -x "/usr/sbin/${tool%%:*}" ] || need+=("${tool#*:}")
done
[ "${BENCH_SKIP_ETCD:-0}" = 1 ] || command -v etcd >/dev/null || need+=(etcd-server)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

swift build -c release --product logkvd >/dev/null
dir="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
before_rev="${BENCH_BEFORE:-}"
before_bin=""
[ -z "$before_rev" ] || before_bin="$(logkvd_at "$before_rev")"
wait_http() { for _ in $(seq 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

p_nginx=$(free_port); p_redis=$(free_port); p_webdis=$(free_port); p_etcd=$(free_port)
p_logkv=$(free_port); p_always=$(free_port); p_before=$(free_port)

# nginx-light: a fixed "ok", no logging, a worker per core.
mkdir -p "$dir/nginx"
cat > "$dir/nginx/nginx.conf" <<CONF
worker_processes auto;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/nginx;
  server { listen 127.0.0.1:$p_nginx; keepalive_requests 1000000;
           location /health { default_type text/plain; return 200 "ok"; } }
}
CONF
"$nginx_bin" -c "$dir/nginx/nginx.conf" -g 'daemon off;' 2>/dev/null &
pids+=($!)

# Redis (no persistence while loading; AOF with everysec once loaded, like
# logkvd's default fsync=interval) and webdis in front of it.
mkdir -p "$dir/redis"
redis-server --port "$p_redis" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir/redis" \
  --logfile "$dir/redis/log" --daemonize no &
pids+=($!)
cat > "$dir/webdis.json" <<CONF
{ "redis_host": "127.0.0.1", "redis_port": $p_redis, "http_host": "127.0.0.1", "http_port": $p_webdis,
  "threads": 2, "pool_size": 32, "daemonize": false, "database": 0, "verbosity": 0,
  "logfile": "$dir/webdis.log" }
CONF
webdis "$dir/webdis.json" 2>/dev/null &
pids+=($!)

# logkvd: the store under test, and a second one with --fsync always.
./.build/release/logkvd --addr "127.0.0.1:$p_logkv" --data-dir "$dir/logkv" --cache-bytes "$cache_bytes" \
  --log-level warning &
pids+=($!)
./.build/release/logkvd --addr "127.0.0.1:$p_always" --data-dir "$dir/logkv-always" --fsync always \
  --cache-bytes "$cache_bytes" --log-level warning &
pids+=($!)

if [ -n "$before_bin" ]; then
  "$before_bin" --addr "127.0.0.1:$p_before" --data-dir "$dir/logkv-before" --cache-bytes "$cache_bytes" \
    --log-level warning &
  pids+=($!)
fi

if [ "${BENCH_SKIP_ETCD:-0}" != 1 ]; then
  etcd --name bench --data-dir "$dir/etcd" --listen-client-urls "http://127.0.0.1:$p_etcd" \
    --advertise-client-urls "http://127.0.0.1:$p_etcd" --listen-peer-urls "http://127.0.0.1:$(free_port)" \
    --quota-backend-bytes $((8 << 30)) --log-level error >"$dir/etcd.log" 2>&1 &
  pids+=($!)
fi

wait_http "http://127.0.0.1:$p_nginx/health"
wait_http "http://127.0.0.1:$p_logkv/health"
wait_http "http://127.0.0.1:$p_always/health"
wait_http "http://127.0.0.1:$p_webdis/PING"

echo "loading $keys keys into each system…" >&2
start=$(date +%s)
python3 - "$keys" "$dir/redis.resp" <<'PY'
import sys
keys, path = int(sys.argv[1]), sys.argv[2]
with open(path, "wb") as out:
    for n in range(keys):
        key = "k%07d" % n
        value = key + "-" + "v" * (100 - len(key) - 1)
        out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key.encode(), len(value), value.encode()))
PY
redis-cli -p "$p_redis" --pipe < "$dir/redis.resp" | tail -1 >&2
redis-cli -p "$p_redis" config set appendonly yes >/dev/null
redis-cli -p "$p_redis" config set appendfsync everysec >/dev/null
python3 scripts/bench/httpload.py load logkv "$p_logkv" "$keys"
if [ -n "$before_bin" ]; then
  wait_http "http://127.0.0.1:$p_before/health"
  python3 scripts/bench/httpload.py load logkv "$p_before" "$keys"
fi
# The fsync=always store holds a smaller set: it measures commit, not lookup.
python3 scripts/bench/httpload.py load logkv "$p_always" 100000
if [ "${BENCH_SKIP_ETCD:-0}" != 1 ]; then
  wait_http "http://127.0.0.1:$p_etcd/version"
  python3 scripts/bench/httpload.py load etcd "$p_etcd" "$keys"
fi
while redis-cli -p "$p_redis" info persistence | grep -q 'aof_rewrite_in_progress:1'; do sleep 0.5; done
echo "loaded in $(( $(date +%s) - start )) s" >&2

results="$dir/results"
: > "$results"
# run LABEL SYSTEM OP PORT [KEYS]
lookups() {
  curl -s "http://127.0.0.1:$1/metrics" | awk '/^logkv_keydir_lookups_total/ {gsub(/.*path="|"}/, "", $1); printf "%s=%d ", $1, $2}
    /^logkv_index_pending_entries/ {printf "pending=%d", $2}'
}
run() {
  local out before=""
  case "$2" in logkv*) before=$(lookups "$4") ;; esac
  out=$(BENCH_SYSTEM="$2" BENCH_OP="$3" BENCH_KEYS="${5:-$keys}" \
    wrk -t2 -c"$conns" -d"${duration}s" --latency -s scripts/bench/workload.lua "http://127.0.0.1:$4" \
    | awk '/^RESULT/ {print $2, $3, $4, $5, $6}')
  echo "$1 $out" >> "$results"
  echo "  $1: $out" >&2
  # Where logkvd's lookups went in this run (KeyDir memory or SQLite).
  [ -z "$before" ] || echo "    lookups before: $before; after: $(lookups "$4")" >&2
}
always() { redis-cli -p "$p_redis" config set appendfsync "$1" >/dev/null; }

for round in $(seq "$rounds"); do
  echo "round $round" >&2
  run nginx-health plain health "$p_nginx"
  run logkv-health plain health "$p_logkv"
  run webdis-get webdis get "$p_webdis"
  run logkv-get logkv get "$p_logkv"
  run logkv-raw-get logkv-raw get "$p_logkv"
  if [ -n "$before_bin" ]; then
    run before-get logkv get "$p_before"
    run before-raw-get logkv-raw get "$p_before"
  fi
  # Best case only: 10k hot keys, whose KeyDir entries all fit the cache.
  run webdis-get-hot webdis get "$p_webdis" 10000
  run logkv-get-hot logkv get "$p_logkv" 10000
  run logkv-raw-get-hot logkv-raw get "$p_logkv" 10000
  [ "${BENCH_SKIP_ETCD:-0}" = 1 ] || run etcd-get etcd get "$p_etcd"
  run webdis-put webdis put "$p_webdis"
  run logkv-put logkv put "$p_logkv"
  run logkv-raw-put logkv-raw put "$p_logkv"
  if [ -n "$before_bin" ]; then
    run before-put logkv put "$p_before"
    run before-raw-put logkv-raw put "$p_before"
  fi
  [ "${BENCH_SKIP_ETCD:-0}" = 1 ] || run etcd-put etcd put "$p_etcd"
  run webdis-put-new webdis put-new "$p_webdis"
  run logkv-put-new logkv put-new "$p_logkv"
  [ -z "$before_bin" ] || run before-put-new logkv put-new "$p_before"
  always always
  run webdis-put-always webdis put "$p_webdis" 100000
  always everysec
  run logkv-put-always logkv put "$p_always" 100000
done

echo "checking a sample of keys in every system…" >&2
python3 scripts/bench/httpload.py check logkv "$p_logkv" "$keys" >&2
[ -z "$before_bin" ] || python3 scripts/bench/httpload.py check logkv "$p_before" "$keys" >&2
python3 scripts/bench/httpload.py check webdis "$p_webdis" "$keys" >&2
[ "${BENCH_SKIP_ETCD:-0}" = 1 ] || python3 scripts/bench/httpload.py check etcd "$p_etcd" "$keys" >&2
hits=$(lookups "$p_logkv")

python3 - "$results" "$keys" "$duration" "$conns" "$rounds" "$cache_bytes" "$hits" "$before_rev" <<'PY'
import statistics, sys
path, keys, duration, conns, rounds, cache, hits, before_rev = sys.argv[1:9]
runs = {}
for line in open(path):
    parts = line.split()
    if len(parts) == 6:
        runs.setdefault(parts[0], []).append([float(x) for x in parts[1:]])
def med(label, i):
    rows = runs.get(label)
    return statistics.median(r[i] for r in rows) if rows else None
def errors(label):
    rows = runs.get(label) or []
    return int(sum(r[3] + r[4] for r in rows))
rows = [
    ("GET /health (fixed 200)", "logkv-health", "nginx-health", "nginx-light", 0.8),
    ("GET random key, JSON route", "logkv-get", "webdis-get", "Redis+webdis GET", 1.5),
    ("GET random key, `?raw`", "logkv-raw-get", "logkv-health", "logkvd /health", 0.9),
    ("GET random key, JSON (etcd gateway)", "logkv-get", "etcd-get", "etcd range", None),
    ("best case only: GET 10k hot keys, JSON route", "logkv-get-hot", "webdis-get-hot", "Redis+webdis GET, same keys", None),
    ("best case only: GET 10k hot keys, `?raw`", "logkv-raw-get-hot", "logkv-health", "logkvd /health", None),
    ("PUT overwrite, JSON route", "logkv-put", "webdis-put", "Redis+webdis SET", 1.5),
    ("PUT overwrite, raw body", "logkv-raw-put", "webdis-put", "Redis+webdis SET", None),
    ("PUT overwrite, JSON (etcd gateway)", "logkv-put", "etcd-put", "etcd put", None),
    ("PUT new keys, JSON route", "logkv-put-new", "webdis-put-new", "Redis+webdis SET", 1.5),
    ("PUT, fsync per write", "logkv-put-always", "webdis-put-always", "Redis appendfsync always", 1.2),
]
print(f"{int(keys):,} keys, 100-byte values, wrk -t2 -c{conns} -d{duration}s, medians of {rounds} interleaved rounds; "
      f"logkvd --cache-bytes {int(cache) >> 20} MiB; KeyDir lookups by path: {hits.strip()}")
print()
print("| workload | logkvd req/s | p99 ms | peer | peer req/s | p99 ms | ratio | target | wrong answers |")
print("|---|---|---|---|---|---|---|---|---|")
for title, ours, theirs, peer, target in rows:
    a, b = med(ours, 0), med(theirs, 0)
    if a is None or b is None:
        continue
    ratio = a / b
    verdict = "-" if target is None else f"≥ {target}x {'✓' if ratio >= target else '✗'}"
    print(f"| {title} | {a:,.0f} | {med(ours, 2):.2f} | {peer} | {b:,.0f} | {med(theirs, 2):.2f} | **{ratio:.2f}x** | {verdict} | {errors(ours)} / {errors(theirs)} |")
if before_rev:
    print()
    print(f"This code against `{before_rev}`, the same workloads right after each other in every round:")
    print()
    print(f"| workload | this code req/s | p99 ms | `{before_rev}` req/s | p99 ms | ratio | wrong answers |")
    print("|---|---|---|---|---|---|---|")
    for title, ours in [("GET random key, JSON route", "get"), ("GET random key, `?raw`", "raw-get"),
                        ("PUT overwrite, JSON route", "put"), ("PUT overwrite, raw body", "raw-put"),
                        ("PUT new keys, JSON route", "put-new")]:
        a, b = med("logkv-" + ours, 0), med("before-" + ours, 0)
        if a is None or b is None:
            continue
        per_round = ", ".join(f"{x[0] / y[0]:.2f}" for x, y in zip(runs["logkv-" + ours], runs["before-" + ours]))
        print(f"| {title} | {a:,.0f} | {med('logkv-' + ours, 2):.2f} | {b:,.0f} | {med('before-' + ours, 2):.2f} | "
              f"**{a / b:.2f}x** ({per_round}) | {errors('logkv-' + ours)} / {errors('before-' + ours)} |")
PY

#!/usr/bin/env bash
# What TLS costs: the same release logkvd served over plain HTTP and over
# HTTPS (swift-nio-ssl, an RSA-2048 certificate made here), side by side.
# wrk drives GETs and PUTs of random keys on keep-alive connections, then
# GETs with `Connection: close` so every request pays a full handshake.
#
# usage: scripts/bench-tls.sh [DURATION_SECONDS] [CONNECTIONS] [ROUNDS]   (defaults 15 32 3)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-15}"
conns="${2:-32}"
rounds="${3:-3}"
keys=100000
source scripts/lib.sh
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }

bench_workdir
dir="$DIR"

swift build -c release --product logkvd >/dev/null
cp .build/release/logkvd "$dir/logkvd"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=bench CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > "$dir/server.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 1 \
    -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
chmod 644 "$dir/server.key"

value="$(head -c 256 /dev/zero | tr '\0' 'v')"
cat > "$dir/report.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.0f %.3f %.3f %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA
{ echo 'math.randomseed(os.time())'
  echo "request = function() return wrk.format(\"GET\", \"/v1/kv/k\" .. math.random(0, $keys - 1) .. \"?raw\") end"
  cat "$dir/report.lua"; } > "$dir/get.lua"
{ echo 'math.randomseed(os.time())'
  echo "request = function() return wrk.format(\"GET\", \"/v1/kv/k\" .. math.random(0, $keys - 1) .. \"?raw\", {[\"Connection\"] = \"close\"}) end"
  cat "$dir/report.lua"; } > "$dir/get-close.lua"
{ echo 'math.randomseed(os.time())'
  echo "request = function() return wrk.format(\"PUT\", \"/v1/kv/k\" .. math.random(0, $keys - 1), nil, \"$value\") end"
  cat "$dir/report.lua"; } > "$dir/put.lua"

# Every key written once, over plain HTTP, into a data directory each run
# starts from a copy of (so both modes read the same store).
port="$(free_port)"
start_logkvd "$dir/logkvd" "$dir/seed" "127.0.0.1:$port" --fsync never --log-level error
python3 - "$port" "$keys" "$value" <<'PY'
import http.client, sys
port, keys, value = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port)
for i in range(keys):
    c.request("PUT", f"/v1/kv/k{i}", body=value)
    r = c.getresponse(); r.read()
    assert r.status == 204, r.status
PY
kill "$LOGKVD_PID"; wait "$LOGKVD_PID" 2>/dev/null || true

# start MODE: starts logkvd (plain or tls) on a copy of the seeded store; sets URL
start() {
    local mode="$1" port data
    port="$(free_port)"
    data="$dir/data-$mode-$RANDOM"
    cp -a "$dir/seed" "$data"
    local args=(--fsync interval --log-level error)
    URL="http://127.0.0.1:$port"
    if [ "$mode" = tls ]; then
        args+=(--tls-cert "$dir/server.pem" --tls-key "$dir/server.key")
        URL="https://127.0.0.1:$port"
    fi
    LOGKVD_SCHEME="${URL%%://*}" start_logkvd "$dir/logkvd" "$data" "127.0.0.1:$port" "${args[@]}"
    pids+=("$LOGKVD_PID")
}

: > "$dir/results"
for r in $(seq "$rounds"); do
    for mode in plain tls; do
        start "$mode"
        for load in get put get-close; do
            c="$conns"; [ "$load" = get-close ] && c=8
            res=$(wrk -t2 -c"$c" -d"${duration}s" -s "$dir/$load.lua" "$URL" | awk '/^RESULT/ {print $2, $3, $4, $5}')
            echo "$mode $load $res" >> "$dir/results"
        done
        kill "$LOGKVD_PID"; wait "$LOGKVD_PID" 2>/dev/null || true
    done
done
python3 - "$dir/results" "$rounds" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print("| load | plain req/s | plain p50 / p99 ms | TLS req/s | TLS p50 / p99 ms | TLS / plain |")
print("|---|---|---|---|---|---|")
names = {"get": "GET random key, keep-alive", "put": "PUT 256 B random key, keep-alive",
         "get-close": "GET, new connection per request (8 clients)"}
for load in ["get", "put", "get-close"]:
    med = {}
    for mode in ["plain", "tls"]:
        sel = [r for r in rows if r[0] == mode and r[1] == load]
        med[mode] = [statistics.median(float(r[i]) for r in sel) for i in (2, 3, 4, 5)]
    p, t = med["plain"], med["tls"]
    print(f"| {names[load]} | {p[0]:.0f} | {p[1]:.2f} / {p[2]:.2f} | {t[0]:.0f} | {t[1]:.2f} / {t[2]:.2f} | {t[0] / p[0]:.2f}x |")
errors = ", ".join(f"{r[0]} {r[1]} {r[5]}" for r in rows if r[5] != "0")
print(f"\nmedians of {sys.argv[2]} rounds; wrk errors (non-2xx or socket): {errors or 'none'}")
PY
echo "release logkvd --fsync interval, $keys keys, wrk -t2 -c$conns (8 for new connections), ${duration}s per load"

#!/usr/bin/env bash
# HTTP benchmark: starts logkvd (release) on loopback and drives it with wrk.
# Prints req/s and latency for GET /health (the HTTP stack's ceiling), GET and
# PUT of 100-byte values on the same server in the same run, and the ratios.
#
# usage: scripts/bench-http.sh [DURATION_SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10}"
conns="${2:-32}"
port="${BENCH_PORT:-18181}"
keys=10000

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
swift build -c release --product logkvd >/dev/null
swift build -c release --product logkv-bench >/dev/null
dir="$(mktemp -d)"
hello_port=$((port + 1))
trap 'kill "$pid" "$hello_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
.build/release/logkv-bench hello-server --port "$hello_port" &
hello_pid=$!
.build/release/logkvd --addr "127.0.0.1:$port" --data-dir "$dir/data" --log-level warning >/dev/null &
pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done

# Preload the keys GET will read.
value="$(head -c 100 /dev/zero | tr '\0' 'v')"
cat > "$dir/put.lua" <<LUA
local counter = 0
request = function()
  counter = counter + 1
  local key = "bench-" .. (counter % $keys)
  return wrk.format("PUT", "/v1/kv/" .. key, nil, "$value")
end
LUA
cat > "$dir/get.lua" <<LUA
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/v1/kv/bench-" .. math.random(0, $keys - 1) .. "?raw")
end
LUA
cat > "$dir/report.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.0f %.3f %.3f %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA
cat "$dir/report.lua" >> "$dir/put.lua"
cat "$dir/report.lua" >> "$dir/get.lua"
cp "$dir/report.lua" "$dir/health.lua"

wrk -t2 -c"$conns" -d3s -s "$dir/put.lua" "http://127.0.0.1:$port" >/dev/null   # preload + warm up
run() { wrk -t2 -c"$conns" -d"${duration}s" -s "$dir/$1.lua" "http://127.0.0.1:$port$2" | awk '/^RESULT/ {print $2, $3, $4, $5}'; }
hello=$(wrk -t2 -c"$conns" -d"${duration}s" -s "$dir/health.lua" "http://127.0.0.1:$hello_port/health" | awk '/^RESULT/ {print $2, $3, $4, $5}')
health=$(run health /health)
get=$(run get "")
put=$(run put "")
read -r o_rps o_p50 o_p99 o_err <<<"$hello"
read -r h_rps h_p50 h_p99 h_err <<<"$health"
read -r g_rps g_p50 g_p99 g_err <<<"$get"
read -r p_rps p_p50 p_p99 p_err <<<"$put"
printf "| %-28s | %9s | %8s | %8s | %6s | %-12s |\n" "endpoint (wrk -t2 -c$conns, ${duration}s)" "req/s" "p50 ms" "p99 ms" "errors" "vs /health"
printf "|%s|\n" "------------------------------|-----------|----------|----------|--------|--------------"
printf "| %-28s | %9s | %8s | %8s | %6s | %-12s |\n" "bare SwiftNIO hello-world" "$o_rps" "$o_p50" "$o_p99" "$o_err" "$(awk "BEGIN{printf \"%.2fx\", $o_rps/$h_rps}")"
printf "| %-28s | %9s | %8s | %8s | %6s | %-12s |\n" "GET /health (logkvd)" "$h_rps" "$h_p50" "$h_p99" "$h_err" "1.00x"
printf "| %-28s | %9s | %8s | %8s | %6s | %-12s |\n" "GET /v1/kv/{key}?raw (100 B)" "$g_rps" "$g_p50" "$g_p99" "$g_err" "$(awk "BEGIN{printf \"%.2fx (≥0.8)\", $g_rps/$h_rps}")"
printf "| %-28s | %9s | %8s | %8s | %6s | %-12s |\n" "PUT /v1/kv/{key} (100 B)" "$p_rps" "$p_p50" "$p_p99" "$p_err" "$(awk "BEGIN{printf \"%.2fx (≥0.6)\", $p_rps/$h_rps}")"
echo
echo "logkvd /health vs bare SwiftNIO: $(awk "BEGIN{printf \"%.2fx\", $h_rps/$o_rps}") (target ≥ 0.9x)"

#!/usr/bin/env bash
# End-to-end check of the metrics and the dashboard: starts logkvd and a real
# Prometheus (loopback, temporary config and data, 1 s scrapes), drives a mixed
# load, then evaluates every PromQL expression in dashboards/logkv.json through
# Prometheus's HTTP API. Each must parse and return data. Stops both at the end.
#
# usage: scripts/e2e-prometheus.sh [path/to/logkvd]
set -euo pipefail
cd "$(dirname "$0")/.."
logkvd="${1:-.build/debug/logkvd}"
[ -x "$logkvd" ] || swift build --product logkvd
command -v prometheus >/dev/null || { echo "prometheus is not installed (apt-get install prometheus)" >&2; exit 1; }

work="$(mktemp -d)"
source scripts/lib.sh
kv_port=$(free_port)
prom_port=$(free_port)
cleanup() {
    [ -n "${kv_pid:-}" ] && kill "$kv_pid" 2>/dev/null || true
    [ -n "${prom_pid:-}" ] && kill "$prom_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

chmod 755 "$work"
start_logkvd "$logkvd" "$work/data" "127.0.0.1:$kv_port" --log-level warning
kv_pid=$LOGKVD_PID
cat > "$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: logkv
    static_configs:
      - targets: ["127.0.0.1:$kv_port"]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prom" \
    --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$work/prometheus.log" 2>&1 &
prom_pid=$!

for _ in $(seq 100); do curl -sf "http://127.0.0.1:$kv_port/health" >/dev/null && break; sleep 0.1; done
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$prom_port/-/ready" >/dev/null && break; sleep 0.2; done

# A mixed load for ~12 s: writes, reads, misses (404), bad input (400),
# deletes, keys with a 1 s TTL read after they expire.
base="http://127.0.0.1:$kv_port"
end=$((SECONDS + 12))
i=0
while [ $SECONDS -lt $end ]; do
    i=$((i + 1))
    curl -s -o /dev/null -X PUT "$base/v1/kv/key$i" --data-binary "value $i"
    curl -s -o /dev/null -X PUT "$base/v1/kv/short$i?ttl=1" --data-binary "soon gone"
    curl -s -o /dev/null "$base/v1/kv/key$((i / 2))"
    curl -s -o /dev/null "$base/v1/kv/missing$i"
    curl -s -o /dev/null "$base/v1/kv/short$((i > 40 ? i - 40 : 0))"
    curl -s -o /dev/null -X PUT "$base/v1/kv" -d '{bad json'
    [ $((i % 5)) -eq 0 ] && curl -s -o /dev/null -X DELETE "$base/v1/kv/key$((i - 3))"
done
sleep 3  # two more scrapes after the load

python3 - "$prom_port" dashboards/logkv.json <<'PY'
import json, sys, urllib.parse, urllib.request
port, path = sys.argv[1], sys.argv[2]
dashboard = json.load(open(path))
substitutions = {"$__rate_interval": "1m", "$__interval": "15s", "$job": ".*", "$instance": ".*"}
failures, checked = [], 0
for panel in dashboard["panels"]:
    for target in panel.get("targets", []):
        expr = target["expr"]
        for name, value in substitutions.items():
            expr = expr.replace(name, value)
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            answer = json.load(urllib.request.urlopen(url, timeout=10))
        except Exception as error:  # HTTP 400 = the expression does not parse
            failures.append(f"{panel['title']}: {expr}: {error}")
            continue
        checked += 1
        result = answer.get("data", {}).get("result", [])
        if answer.get("status") != "success" or not result:
            failures.append(f"{panel['title']}: {expr}: no data")
        else:
            print(f"ok   {panel['title']} [{target['refId']}]: {len(result)} series")
print(f"{checked} expressions evaluated, {len(failures)} failed")
for failure in failures:
    print("FAIL", failure)
sys.exit(1 if failures else 0)
PY

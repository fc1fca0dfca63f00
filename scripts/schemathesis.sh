#!/usr/bin/env bash
# Schemathesis (PyPI) against a live logkvd: every check, every phase
# (examples, coverage, fuzzing, stateful), once with auth off and once with a
# token, so docs/openapi.json is held to what the server really does.
#
# usage: scripts/schemathesis.sh [path/to/logkvd]   (env ST_MAX_EXAMPLES, default 40)
set -euo pipefail
cd "$(dirname "$0")/.."
logkvd="${1:-.build/debug/logkvd}"
[ -x "$logkvd" ] || swift build --product logkvd
venv=.build/schemathesis-venv
if [ ! -x "$venv/bin/st" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis>=4.3,<5"
fi
source scripts/lib.sh

work="$(mktemp -d)"
chmod 755 "$work"
cleanup() {
    [ -n "${LOGKVD_PID:-}" ] && kill "$LOGKVD_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# One worker: hypothesis under several threads has tripped CPython 3.11's
# ast module ("AST constructor recursion depth mismatch"), a tool error
# that says nothing about the API.
run() {  # run NAME SPEC URL [st args...]
    local name="$1" spec="$2" url="$3"
    shift 3
    echo "== schemathesis: $name"
    (cd "$work" && "$OLDPWD/$venv/bin/st" --config-file "$OLDPWD/scripts/schemathesis.toml" run "$spec" \
        --url "$url" --checks all --phases examples,coverage,fuzzing,stateful \
        --max-examples "${ST_MAX_EXAMPLES:-40}" --workers 1 --no-color "$@")
}

# Blocking queries are held at most 200 ms here (--max-wait), so examples
# with a high `index` answer within schemathesis's request timeout.
port=$(free_port)
start_logkvd "$logkvd" "$work/open" "127.0.0.1:$port" --log-level error --max-wait 200ms
run "auth off" "$PWD/docs/openapi.json" "http://127.0.0.1:$port"
kill "$LOGKVD_PID"; wait "$LOGKVD_PID" || true

# With a token the bearer scheme is required: the same document, with the
# anonymous alternative taken out of every secured operation.
python3 - docs/openapi.json "$work/openapi-token.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
for item in doc["paths"].values():
    for op in item.values():
        if isinstance(op, dict) and "security" in op:
            op["security"] = [s for s in op["security"] if s]
json.dump(doc, open(sys.argv[2], "w"))
PY
port=$(free_port)
LOGKV_TOKEN=st-secret-token start_logkvd "$logkvd" "$work/token" "127.0.0.1:$port" --log-level error --max-wait 200ms
run "auth on" "$work/openapi-token.json" "http://127.0.0.1:$port" -H "Authorization: Bearer st-secret-token"
kill "$LOGKVD_PID"; wait "$LOGKVD_PID" || true

# With TLS on (a CA and a certificate for 127.0.0.1 made here), auth off.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=schemathesis CA" \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > "$work/server.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 1 \
    -extfile "$work/server.ext" -out "$work/server.pem" 2>/dev/null
chmod 644 "$work/server.key" "$work/server.pem"
port=$(free_port)
LOGKVD_SCHEME=https start_logkvd "$logkvd" "$work/tls" "127.0.0.1:$port" --log-level error --max-wait 200ms \
    --tls-cert "$work/server.pem" --tls-key "$work/server.key"
run "TLS" "$PWD/docs/openapi.json" "https://127.0.0.1:$port" --tls-verify "$work/ca.pem"

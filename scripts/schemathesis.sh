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
run() {  # run NAME SPEC ADDR [st args...]
    local name="$1" spec="$2" addr="$3"
    shift 3
    echo "== schemathesis: $name"
    (cd "$work" && "$OLDPWD/$venv/bin/st" --config-file "$OLDPWD/scripts/schemathesis.toml" run "$spec" \
        --url "http://$addr" --checks all --phases examples,coverage,fuzzing,stateful \
        --max-examples "${ST_MAX_EXAMPLES:-40}" --workers 1 --no-color "$@")
}

# Blocking queries are held at most 200 ms here (--max-wait), so examples
# with a high `index` answer within schemathesis's request timeout.
port=$(free_port)
start_logkvd "$logkvd" "$work/open" "127.0.0.1:$port" --log-level error --max-wait 200ms
run "auth off" "$PWD/docs/openapi.json" "127.0.0.1:$port"
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
run "auth on" "$work/openapi-token.json" "127.0.0.1:$port" -H "Authorization: Bearer st-secret-token"

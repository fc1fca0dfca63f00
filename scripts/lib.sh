# Shared by the end-to-end scripts: start logkvd the way operators run it.
#
# start_logkvd BINARY DATA_DIR ADDR [ARGS...]
#   Starts logkvd in the background and waits for /health; sets LOGKVD_PID.
#   Run as root (CI, a fresh VM), it runs as `nobody` through setpriv, from
#   a copy of the binary that user can execute, on a data directory it owns:
#   logkvd must serve as an unprivileged user.
start_logkvd() {
    local binary="$1" data="$2" addr="$3"
    shift 3
    local run=("$binary")
    if [ "$(id -u)" -eq 0 ]; then
        local bindir
        bindir="$(mktemp -d)"
        chmod 755 "$bindir"
        cp "$binary" "$bindir/logkvd"
        chmod 755 "$bindir/logkvd"
        mkdir -p -m 700 "$data"
        chown -R nobody: "$data"
        run=(setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$bindir/logkvd")
    fi
    # stdout carries only the "listening HOST:PORT" lines; callers know the address.
    "${run[@]}" --addr "$addr" --data-dir "$data" "$@" >/dev/null &
    LOGKVD_PID=$!
    for _ in $(seq 100); do
        curl -sfk "${LOGKVD_SCHEME:-http}://$addr/health" >/dev/null && return 0
        kill -0 "$LOGKVD_PID" 2>/dev/null || { echo "logkvd exited at start" >&2; return 1; }
        sleep 0.1
    done
    echo "logkvd did not answer /health" >&2
    return 1
}

# free_port: a loopback port the kernel just handed out (bind to 0), so a
# listener never collides with another service or a client's ephemeral port.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# bench_workdir: a temporary directory the service user can enter, removed
# on exit with every logkvd listed in `pids`; sets DIR.
bench_workdir() {
    DIR="$(mktemp -d)"
    chmod 755 "$DIR"
    pids=()
    trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT
}

# logkvd_at REV: prints the path of a release logkvd built from REV, built
# once (in a temporary worktree) into .build/bench-before/REV/.
logkvd_at() {
    local bin
    bin=".build/bench-before/$(git rev-parse --short "$1")/logkvd"
    if [ ! -x "$bin" ]; then
        local src
        src="$(mktemp -d)/src"
        git worktree add --detach "$src" "$1" >/dev/null 2>&1
        (cd "$src" && swift build -c release --product logkvd >/dev/null)
        mkdir -p "$(dirname "$bin")"
        cp "$src/.build/release/logkvd" "$bin"
        git worktree remove --force "$src"
    fi
    echo "$bin"
}

# bench_builds BEFORE_REV: release logkvd of the working tree as
# $DIR/logkvd-after and of BEFORE_REV as $DIR/logkvd-before (`logkvd_at`,
# or BENCH_BEFORE_BIN names a built one).
bench_builds() {
    swift build -c release --product logkvd >/dev/null
    cp .build/release/logkvd "$DIR/logkvd-after"
    cp "${BENCH_BEFORE_BIN:-$(logkvd_at "$1")}" "$DIR/logkvd-before"
}

#!/usr/bin/env python3
"""Blocking-query benchmark against a running logkvd (see scripts/bench-watch.sh).

1. PUT throughput with no watcher held (wrk, random keys, raw PUT).
2. WATCHERS connections each hold `GET /v1/kv/w<N>?index=I&wait=10m` on its
   own key; the server's CPU is sampled while they sit idle.
3. PUT throughput again with every watcher held (writes to other keys must
   wake none of them: checked).
4. Wake-up latency: PUT a watched key, time until its watcher's answer
   arrives; SAMPLES times, p50/p99.

Steps 1 and 3 alternate over ROUNDS rounds (medians reported).

usage: watchers.py HOST:PORT PID WATCHERS SECONDS SAMPLES ROUNDS
"""
import json, os, random, re, selectors, socket, subprocess, sys, time

addr, pid, watchers, seconds, samples, rounds = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                                 int(sys.argv[5]), int(sys.argv[6]))
host, port = addr.rsplit(":", 1)
port = int(port)
here = os.path.dirname(os.path.abspath(__file__))


def connect():
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_response(s, buf=b""):
    """One HTTP/1.1 response (Content-Length bodies): (status, headers, body, rest)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        rest += chunk
    return status, headers, rest[:length], rest[length:]


def request(s, method, path, body=b""):
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    status, headers, body, _ = read_response(s)
    return status, headers, body


def cpu_seconds():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk_put():
    env = dict(os.environ, BENCH_SYSTEM="logkv-raw", BENCH_OP="put", BENCH_KEYS="100000")
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", f"{here}/workload.lua",
                          f"http://{addr}"], env=env, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+\w+)", out).group(1)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        sys.exit(f"wrk saw {errors.group(1)} error answers")
    return rps, p99


control = connect()
for n in range(watchers):
    assert request(control, "PUT", f"/v1/kv/w{n}", b"0")[0] == 204


def hold_all():
    """Every watcher holds a read of its key from its current index."""
    held, index = {}, {}
    for n in range(watchers):
        status, headers, _ = request(control, "GET", f"/v1/kv/w{n}?raw")
        index[n] = int(headers["x-logkv-index"])
    for n in range(watchers):
        s = connect()
        s.sendall(f"GET /v1/kv/w{n}?raw&index={index[n]}&wait=10m HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        held[n] = s
    time.sleep(1)
    sel = selectors.DefaultSelector()
    for s in held.values():
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    return held, index, sel


# Rounds of [no watcher held, WATCHERS held], so drift in the machine or the
# store (segments, index backlog) falls on both alike.
without, with_held = [], []
answered_early = woken_by_others = 0
def rss_kib_now():
    return int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1))


for round in range(rounds):
    without.append(wrk_put())
    if round == 0:
        rss_without_kib = rss_kib_now()
    held, index, sel = hold_all()
    answered_early += len(sel.select(timeout=0.5))
    if round == 0:
        # A connection's first clock check comes a quarter of the request
        # timeout after it opened; after that an idle held read has no timer
        # but its `wait`.
        time.sleep(8)
        rss_kib = rss_kib_now()
        before = cpu_seconds()
        time.sleep(10)
        idle_cpu = cpu_seconds() - before
    with_held.append(wrk_put())
    woken_by_others += len(sel.select(timeout=0.5))
    if round < rounds - 1:
        for s in held.values():
            s.close()
        time.sleep(1)

# Wake-up latency, on the last round's watchers.
latencies = []
for n in random.sample(range(watchers), min(samples, watchers)):
    s = held[n]
    t0 = time.perf_counter()
    control.sendall(f"PUT /v1/kv/w{n} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n1".encode())
    s.setblocking(True)
    status, headers, body, _ = read_response(s)
    latencies.append(time.perf_counter() - t0)
    assert status == 200 and body == b"1", (status, body)
    assert int(headers["x-logkv-index"]) > index[n]
    read_response(control)
latencies.sort()


def pct(p):
    return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000


def median(runs):
    runs = sorted(runs)
    return runs[len(runs) // 2]


base_rps, base_p99 = median(without)
held_rps, held_p99 = median(with_held)
r = {
    "watchers": watchers,
    "put_rps_without": base_rps, "put_p99_without": base_p99,
    "put_rps_with": held_rps, "put_p99_with": held_p99,
    "ratio": held_rps / base_rps,
    "idle_cpu_seconds_per_10s": idle_cpu,
    "rss_mib_with_watchers": rss_kib / 1024,
    "rss_mib_before_watchers": rss_without_kib / 1024,
    "answered_before_any_write": answered_early,
    "woken_by_writes_to_other_keys": woken_by_others,
    "wake_p50_ms": pct(50), "wake_p99_ms": pct(99), "wake_samples": len(latencies),
}
print(f"{watchers:,} watchers held on distinct keys (logkvd RSS {r['rss_mib_before_watchers']:.0f} MiB before, "
      f"{r['rss_mib_with_watchers']:.0f} MiB with them):")
print(f"  idle: {idle_cpu:.2f} CPU-seconds in 10 s of logkvd with them held; answered before any write: {answered_early}")
print(f"  PUT (raw, random keys, wrk -t2 -c32 -d{seconds}s, medians of {rounds} rounds): {base_rps:,.0f} req/s (p99 {base_p99}) without, "
      f"{held_rps:,.0f} req/s (p99 {held_p99}) with: {r['ratio']:.2f}x (target >= 0.9x); "
      f"watchers woken by those writes: {woken_by_others}")
print(f"  wake-up from a PUT to its watcher's answer: p50 {r['wake_p50_ms']:.2f} ms, p99 {r['wake_p99_ms']:.2f} ms "
      f"({len(latencies)} samples)")
print(json.dumps(r))

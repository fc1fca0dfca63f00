#!/usr/bin/env python3
"""Loads keys k0000000 … k{N-1} (100-byte values derived from the key) into
logkvd or etcd over HTTP with pipelined requests on a few connections, or
checks a random sample of them.

usage: httpload.py load|check logkv|etcd|webdis PORT KEYS
"""
import base64
import json
import random
import re
import socket
import sys
import threading

STATUS = re.compile(rb"HTTP/1\.1 (\d\d\d)")


def key_name(n):
    return "k%07d" % n


def value_of(key):
    return key + "-" + "v" * (100 - len(key) - 1)


def put_request(system, key):
    value = value_of(key)
    if system == "logkv":
        return ("PUT /v1/kv/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s"
                % (key, len(value), value)).encode()
    body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                       "value": base64.b64encode(value.encode()).decode()})
    return ("POST /v3/kv/put HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n%s" % (len(body), body)).encode()


def load_range(system, port, start, end, failures):
    sock = socket.create_connection(("127.0.0.1", port))
    batch = 256
    pending = b""
    for first in range(start, end, batch):
        last = min(end, first + batch)
        sock.sendall(b"".join(put_request(system, key_name(n)) for n in range(first, last)))
        wanted = last - first
        seen = 0
        while seen < wanted:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise SystemExit("connection closed while loading")
            pending += chunk
            last = 0
            for match in STATUS.finditer(pending):
                seen += 1
                last = match.end()
                if not match.group(1).startswith(b"2"):
                    failures.append(match.group(1))
            # A status line cut in two stays for the next read.
            pending = pending[last:][-16:]
    sock.close()


def load(system, port, keys):
    failures = []
    connections = 8
    per = (keys + connections - 1) // connections
    threads = [threading.Thread(target=load_range, args=(system, port, i * per, min(keys, (i + 1) * per), failures))
               for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit("%d loads failed, e.g. status %s" % (len(failures), failures[0].decode()))


def fetch(system, port, key):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    if system == "logkv":
        conn.request("GET", "/v1/kv/" + key)
        answer = json.loads(conn.getresponse().read())
        return answer.get("value") if answer.get("key") == key else None
    if system == "webdis":
        conn.request("GET", "/GET/" + key)
        return json.loads(conn.getresponse().read()).get("GET")
    body = json.dumps({"key": base64.b64encode(key.encode()).decode()})
    conn.request("POST", "/v3/kv/range", body, {"Content-Type": "application/json"})
    kvs = json.loads(conn.getresponse().read()).get("kvs") or []
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


def check(system, port, keys, samples=500):
    wrong = [key_name(n) for n in random.sample(range(keys), min(keys, samples))
             if fetch(system, port, key_name(n)) != value_of(key_name(n))]
    if wrong:
        raise SystemExit("%s: %d of %d sampled keys answer a wrong value, e.g. %s" % (system, len(wrong), samples, wrong[0]))
    print("%s: %d sampled keys carry their exact values" % (system, min(keys, samples)))


if __name__ == "__main__":
    action, system, port, keys = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    (load if action == "load" else check)(system, port, keys)

#!/usr/bin/env python3
"""Client of the Maglev lab: real TCP connections and UDP datagrams to a VIP, one JSON result per line.

Modes:
  conns      COUNT new TCP connections (one HTTP request each, `Connection: close`), PARALLEL at a time;
             with --sport-base connection i binds source port BASE+i.
  keepalive  CONNS connections making REQUESTS requests each on the same TCP connection.
  hold       CONNS keep-alive connections held open across STEPS steps: step 0 runs at once, step k
             waits for the file STEP_DIR/step<k> to appear, then every still-open connection makes one
             request. Lets a caller change the load balancer between steps.
  rate       new TCP connections as in `conns`, started at RATE per second for DURATION seconds whatever
             the answers take (up to PARALLEL open at once); each result also has "t", the wall-clock
             time (Unix seconds) the connection started, so a caller can line results up with events.
  Results of `conns` and `rate` say how long the handshake took ("connect", seconds): about 1 s more
  per SYN that got no answer.
  udp        COUNT datagrams of SIZE bytes (larger than the MTU: the kernel fragments them), each from
             its own socket, answered with the receiving backend's name, length and SHA-256.

Every result names the source port and the backend that answered (`backend=NAME` in the HTTP body,
the "backend" field of the UDP answer), or the error. Every wait is bounded: socket timeouts, step
waits and an overall deadline after which remaining work is reported as failed.
"""
import argparse
import errno
import hashlib
import json
import os
import re
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

BACKEND_RE = re.compile(rb"backend=(\S+)")
REQ_RE = re.compile(rb"req=(\d+)")


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def tcp_connect(addr, port, sport, timeout):
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.settimeout(timeout)
    if sport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::" if ":" in addr else "0.0.0.0", sport))
    try:
        s.connect((addr, port))
    except OSError as e:
        # The kernel chose the source port before the SYN left: keep it for the result.
        e.sport = s.getsockname()[1]
        s.close()
        raise
    return s


def read_response(s, buf):
    """Reads one HTTP response from socket s (leftover bytes in buf); returns (body, rest)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response headers")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise ConnectionError("unexpected status " + status.decode(errors="replace"))
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    if not m:
        raise ConnectionError("response without Content-Length")
    n = int(m.group(1))
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside the response body")
        rest += chunk
    return rest[:n], rest[n:]


def parse_body(body):
    m = BACKEND_RE.search(body)
    if not m:
        raise ValueError("no backend name in " + body.decode(errors="replace"))
    r = REQ_RE.search(body)
    return m.group(1).decode(), int(r.group(1)) if r else 0


def err(e):
    return f"{type(e).__name__}: {e}"


def one_conn(a, i, deadline):
    sport = a.sport_base + i if a.sport_base else 0
    res = {"i": i, "sport": sport}
    if time.monotonic() > deadline:
        res["error"] = "deadline passed before the connection started"
        return res
    start = time.monotonic()
    try:
        s = tcp_connect(a.addr, a.port, sport, a.timeout)
        try:
            res["connect"] = round(time.monotonic() - start, 4)
            res["sport"] = s.getsockname()[1]
            s.sendall(b"GET / HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
            body, _ = read_response(s, b"")
            res["backend"], _ = parse_body(body)
            # The server closes first: wait for its FIN so no TIME_WAIT stays on this side.
            while s.recv(4096):
                pass
        finally:
            s.close()
    except Exception as e:  # noqa: BLE001 - every failure is a result
        res["sport"] = getattr(e, "sport", res["sport"])
        res["error"] = err(e)
        res.setdefault("connect", round(time.monotonic() - start, 4))
    return res


def keepalive_conn(a, i, deadline):
    res = {"i": i, "sport": 0, "backends": [], "requests_ok": 0}
    try:
        s = tcp_connect(a.addr, a.port, 0, a.timeout)
        try:
            res["sport"] = s.getsockname()[1]
            buf = b""
            for r in range(a.requests):
                if time.monotonic() > deadline:
                    raise TimeoutError("deadline passed")
                s.sendall(f"GET /{r} HTTP/1.1\r\nHost: lab\r\n\r\n".encode())
                body, buf = read_response(s, buf)
                backend, req = parse_body(body)
                if req != r + 1:
                    raise ValueError(f"request {r + 1} answered as request {req} of its connection")
                if backend not in res["backends"]:
                    res["backends"].append(backend)
                res["requests_ok"] += 1
        finally:
            s.close()
    except Exception as e:  # noqa: BLE001
        res["error"] = err(e)
    return res


def udp_one(a, i, deadline):
    sport = a.sport_base + i if a.sport_base else 0
    res = {"i": i, "sport": sport, "attempts": 0}
    payload = os.urandom(a.size)
    digest = hashlib.sha256(payload).hexdigest()
    try:
        s = socket.socket(family(a.addr), socket.SOCK_DGRAM)
        try:
            if sport:
                # Only for a chosen port: with SO_REUSEADDR, the kernel may hand an automatic port to
                # two sockets at once, and they then receive each other's answers.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("::" if ":" in a.addr else "0.0.0.0", sport))
            s.connect((a.addr, a.port))
            res["sport"] = s.getsockname()[1]
            s.settimeout(a.timeout)
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError("deadline passed")
                res["attempts"] += 1
                try:
                    s.send(payload)
                    reply = json.loads(s.recv(65535))
                    break
                except socket.timeout:
                    if res["attempts"] >= a.attempts:
                        raise
                except OSError as e:
                    # Path MTU discovery: an ICMP too-big for this socket's datagram is reported as
                    # EMSGSIZE; the kernel now knows the path MTU and fragments the next send to fit.
                    if e.errno != errno.EMSGSIZE or res["attempts"] >= a.attempts:
                        raise
            res["backend"] = reply["backend"]
            res["len"] = reply["len"]
            res["whole"] = reply["len"] == len(payload) and reply["sha256"] == digest
        finally:
            s.close()
    except Exception as e:  # noqa: BLE001
        res["error"] = err(e)
    return res


def rate(a):
    def timed(i):
        t = time.time()
        res = one_conn(a, i, float("inf"))
        res["t"] = t
        return res

    n = int(a.rate * a.duration)
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, a.parallel)) as pool:
        futures = []
        for i in range(n):
            delay = start + i / a.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(timed, i))
        emit([f.result() for f in futures])


def emit(results):
    for r in sorted(results, key=lambda r: r["i"]):
        sys.stdout.write(json.dumps(r, sort_keys=True) + "\n")
    sys.stdout.flush()


def run_pool(a, fn, n):
    deadline = time.monotonic() + a.deadline
    with ThreadPoolExecutor(max_workers=max(1, a.parallel)) as pool:
        emit(list(pool.map(lambda i: fn(a, i, deadline), range(n))))


class Held:
    def __init__(self, i):
        self.i, self.sock, self.buf, self.sport, self.error, self.n = i, None, b"", 0, None, 0


def hold_request(a, h):
    res = {"i": h.i, "sport": h.sport}
    if h.sock is None:
        res["error"] = h.error or "not connected"
        return res
    try:
        h.n += 1
        h.sock.sendall(f"GET /hold{h.n} HTTP/1.1\r\nHost: lab\r\n\r\n".encode())
        body, h.buf = read_response(h.sock, h.buf)
        res["backend"], req = parse_body(body)
        if req != h.n:
            raise ValueError(f"request {h.n} answered as request {req} of its connection")
    except Exception as e:  # noqa: BLE001
        h.error = err(e)
        h.sock.close()
        h.sock = None
        res["error"] = h.error
    return res


def hold(a):
    held = [Held(i) for i in range(a.conns)]
    for h in held:
        try:
            h.sock = tcp_connect(a.addr, a.port, 0, a.timeout)
            h.sport = h.sock.getsockname()[1]
        except Exception as e:  # noqa: BLE001
            h.error = err(e)
    with ThreadPoolExecutor(max_workers=max(1, a.parallel)) as pool:
        for step in range(a.steps):
            if step > 0:
                flag = os.path.join(a.step_dir, f"step{step}")
                end = time.monotonic() + a.step_wait
                while not os.path.exists(flag):
                    if time.monotonic() > end:
                        sys.stdout.write(json.dumps({"step": step, "error": "step file never appeared"}) + "\n")
                        sys.stdout.flush()
                        return
                    time.sleep(0.02)
            results = list(pool.map(lambda h: hold_request(a, h), held))
            sys.stdout.write(json.dumps({"step": step, "results": results}, sort_keys=True) + "\n")
            sys.stdout.flush()
    for h in held:
        if h.sock is not None:
            h.sock.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["conns", "keepalive", "hold", "udp", "rate"])
    p.add_argument("--addr", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--parallel", type=int, default=32)
    p.add_argument("--sport-base", type=int, default=0)
    p.add_argument("--timeout", type=float, default=3.0, help="per socket operation, seconds")
    p.add_argument("--deadline", type=float, default=120.0, help="for the whole run, seconds")
    p.add_argument("--conns", type=int, default=20)
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--step-dir", default=".")
    p.add_argument("--step-wait", type=float, default=120.0)
    p.add_argument("--size", type=int, default=4000)
    p.add_argument("--attempts", type=int, default=3)
    p.add_argument("--rate", type=float, default=200.0, help="new connections per second")
    p.add_argument("--duration", type=float, default=10.0, help="seconds")
    a = p.parse_args()
    if a.mode == "conns":
        run_pool(a, one_conn, a.count)
    elif a.mode == "keepalive":
        run_pool(a, keepalive_conn, a.conns)
    elif a.mode == "udp":
        run_pool(a, udp_one, a.count)
    elif a.mode == "rate":
        rate(a)
    else:
        hold(a)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Backend server of the Maglev lab: HTTP over TCP and a UDP responder, bound to the VIPs.

Every answer names the backend, so a client learns which backend a load balancer chose without any
access to the backend. Sockets are bound to the VIP addresses themselves (never the wildcard): a reply
then leaves with the VIP as its source address, which is what direct server return needs (for UDP the
kernel would otherwise pick the interface address, and the client would not recognise the reply).

HTTP (HTTP/1.1, keep-alive): GET on any path answers `backend=NAME peer=IP:PORT req=N` where N counts
the requests of this TCP connection. With `Connection: close` the server closes first, so the client
keeps no TIME_WAIT state and can reuse its source port at once.

With --fail-flag FILE, every HTTP request is answered 500 (body `backend=NAME failing`) while FILE
exists, as a backend whose application broke while its process, sockets and network stay up would.

UDP: each datagram is answered with JSON {"backend", "len", "sha256"} of what arrived (after the
kernel reassembled any fragments), so a client can check the datagram arrived whole at one backend.

Log (stdout, one JSON object per line): {"ev": "ready"} once every socket is bound; per TCP
connection {"ev": "close", "peer", "requests"} when it ends; per datagram {"ev": "udp", "peer", "len"}.
"""
import argparse
import hashlib
import json
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()


def log(**event):
    with LOCK:
        sys.stdout.write(json.dumps(event, sort_keys=True) + "\n")
        sys.stdout.flush()


def peer_str(addr):
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def make_handler(name, fail_flag):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "maglev-lab-backend"

        def setup(self):
            super().setup()
            self.requests = 0

        def do_GET(self):
            self.requests += 1
            status = 200
            body = f"backend={name} peer={peer_str(self.client_address)} req={self.requests}\n"
            if fail_flag and os.path.exists(fail_flag):
                status, body = 500, f"backend={name} failing\n"
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def finish(self):
            try:
                super().finish()
            finally:
                log(ev="close", peer=peer_str(self.client_address), requests=self.requests)

        def log_message(self, fmt, *args):
            pass

    return Handler


class Server4(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


class Server6(Server4):
    address_family = socket.AF_INET6


def udp_loop(sock, name):
    while True:
        data, addr = sock.recvfrom(65535)
        reply = {"backend": name, "len": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        sock.sendto(json.dumps(reply).encode(), addr)
        log(ev="udp", peer=peer_str(addr), len=len(data))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--vip", action="append", required=True, help="VIP to bind (repeat per family)")
    p.add_argument("--http-port", type=int, default=80)
    p.add_argument("--udp-port", type=int, default=9000)
    p.add_argument("--fail-flag", help="answer HTTP 500 while this file exists")
    a = p.parse_args()

    threads = []
    for vip in a.vip:
        v6 = ":" in vip
        srv = (Server6 if v6 else Server4)((vip, a.http_port), make_handler(a.name, a.fail_flag))
        threads.append(threading.Thread(target=srv.serve_forever, daemon=True))
        u = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
        u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        u.bind((vip, a.udp_port))
        threads.append(threading.Thread(target=udp_loop, args=(u, a.name), daemon=True))
    for t in threads:
        t.start()
    log(ev="ready", backend=a.name)
    threading.Event().wait()


if __name__ == "__main__":
    main()

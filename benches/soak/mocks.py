#!/usr/bin/env python3
"""Loopback mocks for the soak (F21): an Entra ID token endpoint and an Azure ML-like upstream.

Plain HTTP on 127.0.0.1 only (the proxy accepts http:// for loopback authority hosts and upstreams).

    mocks.py token PORT_FILE TTL       POST /{tenant}/oauth2/v2.0/token -> a fresh token valid TTL seconds
    mocks.py upstream PORT_FILE        the upstream (paths below)

Upstream paths:
    /ok                 small JSON (checks that a bearer token arrived; 401 without one)
    /bytes?n=N          N bytes, Content-Length
    /echo  (POST)       reads the body, answers its length
    /reset              announces 100000 bytes, sends 1000, then resets the connection (F9)
    /stream?n=N         N chunks of 64 KiB, 5 ms apart, chunked (clients abort it mid-way: F11)
    /slow?ms=M          answers after M ms

Each server writes the port it bound (127.0.0.1:0) to PORT_FILE, then serves until killed.
"""

import json
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        pass  # clients (the proxy cancelling an aborted request) hang up mid-answer on purpose


class Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # no per-request logging
        pass

    def send_body(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Token(Quiet):
    counter = 0
    lock = threading.Lock()
    ttl = 120

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        parts = self.path.strip("/").split("/")
        if len(parts) != 4 or parts[1:] != ["oauth2", "v2.0", "token"]:
            return self.send_body(404, b'{"error":"not_found"}')
        with Token.lock:
            Token.counter += 1
            n = Token.counter
        body = json.dumps(
            {"token_type": "Bearer", "expires_in": Token.ttl, "ext_expires_in": Token.ttl,
             "access_token": f"soak.{parts[0]}.{n}"}
        ).encode()
        self.send_body(200, body)


CHUNK = b"s" * 65536


class Upstream(Quiet):
    def do_GET(self):
        url = urlparse(self.path)
        q = parse_qs(url.query)
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer soak."):
            return self.send_body(401, b'{"error":"no token"}')
        if url.path == "/ok":
            return self.send_body(200, b'{"ok":true}')
        if url.path == "/bytes":
            return self.send_body(200, b"b" * int(q.get("n", ["0"])[0]), "application/octet-stream")
        if url.path == "/slow":
            time.sleep(int(q.get("ms", ["0"])[0]) / 1000)
            return self.send_body(200, b'{"slow":true}')
        if url.path == "/reset":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"r" * 1000)
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if url.path == "/stream":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for _ in range(int(q.get("n", ["200"])[0])):
                    self.wfile.write(b"10000\r\n" + CHUNK + b"\r\n")
                    time.sleep(0.005)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                self.close_connection = True
            return
        return self.send_body(404, b'{"error":"no such path"}')

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        got = 0
        while got < length:
            data = self.rfile.read(min(65536, length - got))
            if not data:
                break
            got += len(data)
        self.send_body(200, json.dumps({"received": got}).encode())


def main():
    kind, port_file = sys.argv[1], sys.argv[2]
    handler = Token if kind == "token" else Upstream
    if kind == "token" and len(sys.argv) > 3:
        Token.ttl = int(sys.argv[3])
    server = Server(("127.0.0.1", 0), handler)
    with open(port_file, "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()

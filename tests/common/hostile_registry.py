#!/usr/bin/env python3
"""Hostile registries for kiln's tests: each plays one attack, and prints every request it
gets as a line `METHOD PATH auth=<the Authorization header, or ->`, so a test can tell what
reached it.

usage: hostile_registry.py PORT MODE [ARG]

modes:
  listen              answers anything: POST 202 with a Location on itself, PUT 201, HEAD 404,
                      GET 200 `{}` (a host that should never see kiln's credentials)
  upload-to URL       a registry asking for Basic credentials (any are accepted) whose upload
                      sessions are at URL (another host), as a registry may name them
  realm URL           a registry whose Bearer challenge names the token server URL
  serve DIR           a read-only registry of DIR: `manifests/REF` and `blobs/DIGEST`, served
                      as they are (a lie in them is the test's)
  trickle DIR         `serve`, but blob bodies come one byte a second
  racing-link N       `listen`, but the first N manifest PUTs are refused as DIGEST_INVALID,
                      as distribution refuses one checked while another upload rewrites a
                      blob's link

With HOSTILE_TLS_CERT and HOSTILE_TLS_KEY set, it speaks TLS.
"""
import hashlib
import os
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, MODE = int(sys.argv[1]), sys.argv[2]
ARG = sys.argv[3] if len(sys.argv) > 3 else ""


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def note(self):
        print(
            f"{self.command} {self.path} auth={self.headers.get('Authorization', '-')}",
            flush=True,
        )
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)

    def answer(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        self.note()
        if MODE == "racing-link" and self.command == "PUT" and "/manifests/" in self.path:
            H.refused = getattr(H, "refused", 0) + 1
            if H.refused <= int(ARG):
                body = b'{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"}]}'
                return self.answer(400, body)
            return self.answer(201)
        if MODE in ("listen", "racing-link"):
            if self.command == "POST":
                return self.answer(202, headers=[("Location", "/upload/1")])
            if self.command == "PUT":
                return self.answer(201)
            if self.command == "HEAD":
                return self.answer(404)
            return self.answer(200, b"{}")
        if MODE == "upload-to":
            if "Authorization" not in self.headers:
                return self.answer(401, headers=[("WWW-Authenticate", 'Basic realm="hostile"')])
            if self.path == "/v2/":
                return self.answer(200, b"{}")
            if self.command == "HEAD":
                return self.answer(404)
            if self.command == "POST":
                return self.answer(202, headers=[("Location", ARG + "/upload/1")])
            return self.answer(201)
        if MODE == "realm":
            challenge = f'Bearer realm="{ARG}",service="hostile"'
            return self.answer(401, headers=[("WWW-Authenticate", challenge)])
        if MODE in ("serve", "trickle"):
            return self.serve()
        self.answer(500)

    def serve(self):
        if self.path == "/v2/":
            return self.answer(200, b"{}")
        parts = self.path.split("/")
        kind, ref = parts[-2], parts[-1]
        path = os.path.join(ARG, kind, ref.replace(":", "_"))
        if kind not in ("manifests", "blobs") or not os.path.isfile(path):
            return self.answer(404, b'{"errors":[{"code":"NOT_FOUND","message":"unknown"}]}')
        data = open(path, "rb").read()
        headers = [("Docker-Content-Digest", "sha256:" + hashlib.sha256(data).hexdigest())]
        if kind == "manifests":
            headers.append(("Content-Type", "application/vnd.oci.image.manifest.v1+json"))
        if MODE == "trickle" and kind == "blobs" and self.command == "GET":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                for b in data:
                    self.wfile.write(bytes([b]))
                    self.wfile.flush()
                    time.sleep(1)
            except OSError:
                pass
            return
        self.answer(200, data, headers)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any


server = ThreadingHTTPServer(("127.0.0.1", PORT), H)
server.daemon_threads = True
if os.environ.get("HOSTILE_TLS_CERT"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.environ["HOSTILE_TLS_CERT"], os.environ["HOSTILE_TLS_KEY"])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()

#!/usr/bin/env python3
"""A TCP proxy that breaks connections, for kiln's retry tests.

usage: flaky_proxy.py LISTEN_PORT UPSTREAM_PORT CUT_BYTES CUTS

A connection is closed once CUT_BYTES bytes have come back from upstream on it (a transfer
that breaks off mid-body), CUTS times; after that, connections are passed through whole. Each
cut is reported on stdout as a line `cut N`.
"""
import socket
import sys
import threading

LISTEN, UPSTREAM, CUT_BYTES, CUTS = (int(x) for x in sys.argv[1:5])
lock = threading.Lock()
state = {"cuts": 0}


def pump(src, dst, limit, on_cut):
    sent = 0
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if limit is not None and sent + len(data) >= limit and on_cut():
                dst.sendall(data[: max(0, limit - sent)])
                break
            dst.sendall(data)
            sent += len(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def cut():
    """Whether this connection is to be cut (while cuts remain)."""
    with lock:
        if state["cuts"] >= CUTS:
            return False
        state["cuts"] += 1
        print(f"cut {state['cuts']}", flush=True)
        return True


def handle(client):
    up = socket.create_connection(("127.0.0.1", UPSTREAM))
    threading.Thread(target=pump, args=(client, up, None, lambda: False), daemon=True).start()
    pump(up, client, CUT_BYTES, cut)


server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", LISTEN))
server.listen(64)
while True:
    c, _ = server.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()

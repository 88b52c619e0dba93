#!/usr/bin/env python3
"""A small artifact server for the model_store scenario (stdlib only).

Serves --root over HTTP on 127.0.0.1 with Range support. Faults are read from
--faults (JSON) on every request, so the scenario can script them:
  {"drop": {"/tiny/v2/weights/w1.bin": {"after": 1000000, "times": 1}},
   "corrupt": {"/tiny/v3/weights/w2.bin": 1}}
"drop" sends the headers of the whole body, then closes the connection after
"after" bytes; "corrupt" flips the first byte of the body. Counters decrease
per request and are written back. Every request is appended to --log as JSON.
"""

import argparse
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()


def take_fault(path, faults_file):
    """Return (drop_after, corrupt) for this request and consume the counters."""
    with LOCK:
        try:
            with open(faults_file) as f:
                faults = json.load(f)
        except (OSError, ValueError):
            return None, False
        drop = faults.get("drop", {}).get(path)
        corrupt = faults.get("corrupt", {}).get(path, 0)
        after = None
        if drop and drop.get("times", 0) > 0:
            drop["times"] -= 1
            after = drop["after"]
        if corrupt > 0:
            faults["corrupt"][path] = corrupt - 1
        with open(faults_file + ".tmp", "w") as f:
            json.dump(faults, f)
        os.replace(faults_file + ".tmp", faults_file)
        return after, corrupt > 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 - http.server API
        cfg = self.server.cfg
        rel = os.path.normpath(self.path.split("?", 1)[0]).lstrip("/")
        full = os.path.join(cfg.root, rel)
        rng = self.headers.get("Range")
        with LOCK, open(cfg.log, "a") as log:
            log.write(json.dumps({"path": self.path, "range": rng}) + "\n")
        if rel.startswith("..") or not os.path.isfile(full):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with open(full, "rb") as f:
            data = f.read()
        drop_after, corrupt = take_fault(self.path, cfg.faults)
        if corrupt and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-", 1)[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % len(data))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if drop_after is not None:
            self.wfile.write(body[:drop_after])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True)
    p.add_argument("--port", type=int, default=8088)
    p.add_argument("--faults", required=True)
    p.add_argument("--log", required=True)
    cfg = p.parse_args()
    httpd = ThreadingHTTPServer(("127.0.0.1", cfg.port), Handler)
    httpd.cfg = cfg
    httpd.serve_forever()


if __name__ == "__main__":
    main()

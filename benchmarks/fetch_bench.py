#!/usr/bin/env python3
"""model_fetch throughput against plain curl, and bytes re-sent after an interruption.

Builds a few hundred MB of random files with a manifest, serves them from a
local HTTP server (a separate process on 127.0.0.1 with Range support and
sendfile, so the server is not the bottleneck and does not share the fetcher's
interpreter), then measures:

1. throughput of model_fetch (download + sha256 of every byte + atomic publish)
   against `curl` fetching the same files from the same server in one process,
   and against `curl` followed by `sha256sum` (the nearest shell equivalent);
2. bytes sent again after an interrupted fetch: the server drops the connection
   part-way through the largest file, the fetch fails (retries 0), and a second
   fetch resumes. Counted by the server, so it is what crossed the wire. The
   same with a server that ignores Range, for contrast.

Usage: python3 benchmarks/fetch_bench.py [--size-mb 256] [--files 4] [--runs 5] [--workdir DIR]
Exit status 1 if a fetch fails or the published copy does not verify.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "module_utils"))

import model_fetch as mf

MIB = 1 << 20


# --------------------------------------------------------------------------
# Server (run as a child process: fetch_bench.py --serve ROOT PORTFILE)
# --------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _count(self, n):
        path = os.path.join(self.server.root, ".sent")
        with self.server.lock, open(path, "a") as f:
            f.write("%d\n" % n)

    def do_GET(self):  # noqa: N802 - http.server API
        root = self.server.root
        rel = os.path.normpath(self.path.split("?", 1)[0]).lstrip("/")
        full = os.path.join(root, rel)
        if rel.startswith(".") or not os.path.isfile(full):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = os.path.getsize(full)
        rng = self.headers.get("Range")
        ignore_range = os.path.exists(os.path.join(os.path.dirname(full), ".ignore-range"))
        start = 0
        if rng and rng.startswith("bytes=") and not ignore_range:
            start = int(rng[6:].split("-", 1)[0])
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % size)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, size - 1, size))
        else:
            self.send_response(200)
        count = size - start
        self.send_header("Content-Length", str(count))
        self.end_headers()
        self.wfile.flush()
        drop_flag = os.path.join(os.path.dirname(full), ".drop-" + os.path.basename(full))
        drop_after = None
        with self.server.lock:
            if os.path.exists(drop_flag):
                with open(drop_flag) as f:
                    drop_after = int(f.read())
                os.unlink(drop_flag)
        with open(full, "rb") as f:
            if drop_after is not None:
                sent = self.connection.sendfile(f, start, min(drop_after, count))
                self._count(sent)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            sent = self.connection.sendfile(f, start, count)
        self._count(sent)


def serve(root, portfile):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.root = root
    httpd.lock = __import__("threading").Lock()
    with open(portfile + ".tmp", "w") as f:
        f.write(str(httpd.server_address[1]))
    os.replace(portfile + ".tmp", portfile)
    httpd.serve_forever()


# --------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------


def build(root, size_mb, nfiles):
    """Random shards (equal share of size_mb) plus two small files, and manifest.json."""
    os.makedirs(os.path.join(root, "m"), exist_ok=True)
    files = {"config.json": b'{"model_type": "qwen2"}\n', "tokenizer.json": os.urandom(200_000)}
    entries = []
    for name, data in files.items():
        with open(os.path.join(root, "m", name), "wb") as f:
            f.write(data)
        entries.append({"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    per = size_mb * MIB // nfiles
    for i in range(nfiles):
        name = "model-%05d-of-%05d.safetensors" % (i + 1, nfiles)
        h = hashlib.sha256()
        with open(os.path.join(root, "m", name), "wb") as f:
            left = per
            while left:
                block = os.urandom(min(8 * MIB, left))
                f.write(block)
                h.update(block)
                left -= len(block)
        entries.append({"path": name, "size": per, "sha256": h.hexdigest()})
    manifest = {"manifest_version": 1, "revision": "bench", "files": entries}
    with open(os.path.join(root, "m", "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return manifest


def sent_bytes(root):
    try:
        with open(os.path.join(root, ".sent")) as f:
            return sum(int(x) for x in f.read().split())
    except FileNotFoundError:
        return 0


def cfg(url, store, retries=2):
    return {
        "name": "bench",
        "revision": "bench",
        "source": "http",
        "store": store,
        "manifest_url": url + "/m/manifest.json",
        "retries": retries,
        "retry_delay": 0,
        "free_space_margin": 0,
        "timeout": 30,
    }


def time_model_fetch(url, store):
    shutil.rmtree(store, ignore_errors=True)
    t = time.perf_counter()
    r = mf.fetch(cfg(url, store))
    took = time.perf_counter() - t
    wanted = mf.validate_manifest({k: v for k, v in r["manifest"].items() if k in ("manifest_version", "revision", "files")})
    if mf.check_published(r["published_path"], wanted, "full"):
        raise SystemExit("published copy does not verify")
    return took


def time_curl(curl, url, manifest, dest, with_sha=False):
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    argv = [curl, "-sS", "--fail"]
    for e in manifest["files"]:
        argv += [url + "/m/" + e["path"], "-o", os.path.join(dest, e["path"])]
    t = time.perf_counter()
    subprocess.run(argv, check=True)
    if with_sha:
        subprocess.run(["sha256sum"] + [os.path.join(dest, e["path"]) for e in manifest["files"]], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def interrupted(url, root, store, manifest, ignore_range):
    """Drop the largest file at 60 %, fail, resume; return bytes on the wire and re-sent."""
    shutil.rmtree(store, ignore_errors=True)
    big = max(manifest["files"], key=lambda e: e["size"])
    cut = big["size"] * 6 // 10
    with open(os.path.join(root, "m", ".drop-" + big["path"]), "w") as f:
        f.write(str(cut))
    flag = os.path.join(root, "m", ".ignore-range")
    if ignore_range:
        open(flag, "w").close()
    try:
        before = sent_bytes(root)
        try:
            mf.fetch(cfg(url, store, retries=0))
            raise SystemExit("the interrupted fetch should have failed")
        except mf.FetchError as exc:
            first_error = exc.message
        first = sent_bytes(root) - before
        status = mf.read_status(os.path.join(store, "bench", ".fetch-bench.status.json"))
        r = mf.fetch(cfg(url, store))
        second = sent_bytes(root) - before - first
    finally:
        if os.path.exists(flag):
            os.unlink(flag)
    total = mf.manifest_total(manifest)
    manifest_bytes = os.path.getsize(os.path.join(root, "m", "manifest.json"))
    return {
        "cut_at": cut,
        "first_error": first_error,
        "first_run_bytes": first - manifest_bytes,
        "first_run_status_bytes": status["bytes_transferred"],
        "resume_bytes": second - manifest_bytes,
        "module_resume_bytes": r["bytes_transferred"],
        "resent": first + second - 2 * manifest_bytes - total,
        "total": total,
        "resumed": r["files_resumed"],
        "range_ignored": r["files_range_ignored"],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mb", type=int, default=256, help="total size of the shards (default 256)")
    p.add_argument("--files", type=int, default=4, help="number of shards (default 4)")
    p.add_argument("--runs", type=int, default=5, help="timed runs of each fetcher, interleaved (default 5)")
    p.add_argument("--workdir", help="where to build, serve and fetch (default a temporary directory)")
    p.add_argument("--serve", nargs=2, metavar=("ROOT", "PORTFILE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.serve:
        serve(*a.serve)
        return 0
    curl = shutil.which("curl")
    if not curl:
        raise SystemExit("curl is needed for the comparison")
    work = a.workdir or tempfile.mkdtemp(prefix="fetch-bench-")
    root, store, dest = os.path.join(work, "srv"), os.path.join(work, "store"), os.path.join(work, "curl")
    t0 = time.perf_counter()
    manifest = build(root, a.size_mb, a.files)
    total = mf.manifest_total(manifest)
    print("built %d files, %.1f MiB in %.1f s under %s" % (len(manifest["files"]), total / MIB, time.perf_counter() - t0, work))
    portfile = os.path.join(work, "port")
    server = subprocess.Popen([sys.executable, os.path.realpath(__file__), "--serve", root, portfile])
    try:
        for _ in range(100):
            if os.path.exists(portfile):
                break
            time.sleep(0.05)
        with open(portfile) as f:
            url = "http://127.0.0.1:%s" % f.read().strip()
        time_curl(curl, url, manifest, dest)  # warm the page cache and the server
        # Interleaved so that load from other processes hits every fetcher alike.
        times = {"curl": [], "curl+sha": [], "model_fetch": []}
        for _ in range(a.runs):
            times["curl"].append(time_curl(curl, url, manifest, dest))
            times["curl+sha"].append(time_curl(curl, url, manifest, dest, with_sha=True))
            times["model_fetch"].append(time_model_fetch(url, store))

        def rate(t):
            return total / MIB / t

        med = {k: statistics.median(v) for k, v in times.items()}
        best = {k: min(v) for k, v in times.items()}
        print("\nthroughput, %d MiB from %s (%d interleaved runs; median and best)" % (total // MIB, url, a.runs))
        for key, label in (("curl", "curl (download only)"), ("curl+sha", "curl + sha256sum"), ("model_fetch", "model_fetch (verify+publish)")):
            print("  %-29s %7.3f s %8.1f MiB/s   best %8.1f MiB/s" % (label, med[key], rate(med[key]), rate(best[key])))
        print("  ratio model_fetch / curl            median %.2f   best %.2f" % (med["curl"] / med["model_fetch"], best["curl"] / best["model_fetch"]))
        print("  ratio model_fetch / curl+sha256sum  median %.2f   best %.2f" % (med["curl+sha"] / med["model_fetch"], best["curl+sha"] / best["model_fetch"]))

        for ignore in (False, True):
            r = interrupted(url, root, store, manifest, ignore)
            print("\ninterrupted fetch, server %s Range (connection dropped at %d of the largest file)" % ("IGNORING" if ignore else "honouring", r["cut_at"]))
            print("  first run: %d bytes on the wire, then: %s" % (r["first_run_bytes"], r["first_error"]))
            print("  resume run: %d bytes on the wire (model_fetch reports %d), of %d total" % (r["resume_bytes"], r["module_resume_bytes"], r["total"]))
            print("  bytes sent again because of the interruption: %d (%.1f %% of the model)" % (r["resent"], 100.0 * r["resent"] / r["total"]))
            print("  resumed files: %s; restarted because Range was ignored: %s" % (r["resumed"], r["range_ignored"]))
    finally:
        server.terminate()
        server.wait()
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print("\ntotal benchmark time %.1f s" % (time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())

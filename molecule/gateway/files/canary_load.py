#!/usr/bin/python3
"""Load and share checks for the gateway scenario's canary (side_effect.yml), run on the container.

Requests go to the gateway on 127.0.0.1:443 (TLS verified against the role's CA),
POST /v1/completions naming stub-model-a, one client key each (from --keys, one per
line); the stub's answer names the backend. A request fails on a connection error, a
timeout or any status but 200.

check --percent P: one request per key, over one keepalive connection (opened after
    the reload, so it is served by the new configuration); prints {"requests", "candidate", "failed",
    "mismatched"}: mismatched counts the keys that did not land where their bucket says
    (the router's hash: first 4 bytes of SHA-256(key), big-endian, mod 10000, candidate
    below P * 100; module_utils/gateway.py canary_bucket).
loop --stop FILE --out FILE: --threads loops of requests (the keys in turn, a new
    connection for each, --pause seconds apart) until FILE exists, then writes {"requests", "failed", "errors" (the first 20), "backends"} to --out.
"""

import argparse
import hashlib
import http.client
import json
import os
import ssl
import threading
import time

CA = "/etc/llm-onprem/gateway/tls/ca.crt"
CANDIDATE = "stub-a-next"


def bucket(key):
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % 10000


def connect(ctx):
    return http.client.HTTPSConnection("127.0.0.1", 443, context=ctx, timeout=10)


def ask(conn, key):
    """The backend that answered, or raise with what went wrong."""
    conn.request("POST", "/v1/completions", body=json.dumps({"model": "stub-model-a", "prompt": "hi"}),
                 headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"status {resp.status}")
    return json.loads(body)["backend"]


def check(ctx, keys, percent):
    result = {"requests": 0, "candidate": 0, "failed": 0, "mismatched": 0}
    conn = connect(ctx)
    for key in keys:
        result["requests"] += 1
        try:
            backend = ask(conn, key)
        except Exception:  # noqa: BLE001 - every failure counts
            result["failed"] += 1
            conn.close()
            conn = connect(ctx)
            continue
        result["candidate"] += backend == CANDIDATE
        result["mismatched"] += (backend == CANDIDATE) != (bucket(key) < round(percent * 100))
    conn.close()
    print(json.dumps(result))


def loop(ctx, keys, threads, pause, stop, out):
    lock = threading.Lock()
    result = {"requests": 0, "failed": 0, "errors": [], "backends": {}}

    def worker(offset):
        i = offset
        while not os.path.exists(stop):
            key = keys[i % len(keys)]
            i += threads
            conn = connect(ctx)
            try:
                backend, error = ask(conn, key), None
            except Exception as exc:  # noqa: BLE001 - every failure counts
                backend, error = None, f"{time.time():.3f} {type(exc).__name__}: {exc}"
            finally:
                conn.close()
            with lock:
                result["requests"] += 1
                if error:
                    result["failed"] += 1
                    if len(result["errors"]) < 20:
                        result["errors"].append(error)
                else:
                    result["backends"][backend] = result["backends"].get(backend, 0) + 1
            time.sleep(pause)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    with open(out + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    os.replace(out + ".tmp", out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["check", "loop"])
    parser.add_argument("--keys", required=True)
    parser.add_argument("--percent", type=float, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pause", type=float, default=0.02)
    parser.add_argument("--stop")
    parser.add_argument("--out")
    args = parser.parse_args()
    with open(args.keys, encoding="utf-8") as handle:
        keys = [line.strip() for line in handle if line.strip()]
    ctx = ssl.create_default_context(cafile=CA)
    if args.mode == "check":
        check(ctx, keys, args.percent)
    else:
        loop(ctx, keys, args.threads, args.pause, args.stop, args.out)


if __name__ == "__main__":
    main()

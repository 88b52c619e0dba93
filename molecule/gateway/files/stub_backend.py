#!/usr/bin/python3
"""A stand-in for a vLLM instance in the gateway scenario (127.0.0.1:8000).

/health answers 200 without a key (as vLLM does). Every other path answers 200
with JSON describing the request: path, method, body size, whether the
Authorization header is exactly "Bearer <the upstream key>" (read from
--key-file), whether any x-api-key header reached it, and the raw
Authorization header (test keys only) so the test can prove the client's key
never does.
"""

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--key-file", required=True)
    args = parser.parse_args()
    with open(args.key_file, encoding="utf-8") as f:
        expected = "Bearer " + f.read().strip()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path.split("?", 1)[0] == "/health":
                payload = b""
            else:
                auth = self.headers.get("Authorization")
                payload = json.dumps({
                    "path": self.path,
                    "method": self.command,
                    "body_bytes": len(body),
                    "upstream_key_ok": auth == expected,
                    "authorization": auth,
                    "x_api_key_present": self.headers.get("X-Api-Key") is not None,
                }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, *_):
            pass

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()

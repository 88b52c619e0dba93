"""roles/monitoring: the rendered alert rules, Prometheus, Alertmanager, blackbox
exporter and mtail configs checked and tested by the real promtool, amtool,
prometheus-blackbox-exporter and mtail (Debian's pinned packages, unpacked by
tests/harness/prom-tools.sh, never installed)."""

import json
import os
import re
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "monitoring"
RULES = "etc/prometheus/rules/llm-onprem.rules.yml.j2"
GPU_ALERTS = {"GPUMemoryHigh", "LLMQueuedWhileGPUIdle", "GPUXidError", "GPUTemperatureHigh", "GPUEccDoubleBitErrors"}
GATEWAY_ALERTS = {"GatewayDown", "GatewayErrorsHigh", "GatewayUnauthorizedHigh", "GatewayCertificateExpiring"}
# What the gateway role publishes on the host (ansible_local.llm_onprem_gateway).
GATEWAY_FACT = {"port": 443, "address": "127.0.0.1", "server_name": "gw.example.org",
                "cert_file": "/etc/llm-onprem/gateway/tls/server.crt", "health_path": "/healthz",
                "access_log": "/var/log/nginx/llm-onprem-gateway.access.log",
                "snippet_dir": "/etc/nginx/llm-onprem-gateway.d", "nginx_check": "/usr/local/sbin/llm-onprem-nginx-check"}


@pytest.fixture(scope="module")
def tools():
    proc = subprocess.run([str(ROOT / "tests/harness/prom-tools.sh")], capture_output=True, text=True, check=False)
    found = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    if proc.returncode != 0 or not {"promtool", "amtool", "blackbox", "mtail"} <= found.keys():
        reason = f"promtool/amtool not available (tests/harness/prom-tools.sh rc {proc.returncode}): {proc.stderr[-2000:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def _env():
    env = jinja2.Environment(  # noqa: S701 (renders YAML, not HTML)
        loader=jinja2.FileSystemLoader([ROLE / "templates", ROLE / "tests"]),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["comment"] = lambda text: "\n".join("# " + line for line in text.splitlines())
    env.filters["to_json"] = json.dumps
    env.filters["bool"] = lambda value: value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
    return env


def _vars(gpu, gateway=True, **extra):
    values = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    values.update(ansible_managed="Ansible managed (test render)", __monitoring_gpu=gpu,
                  __monitoring_gateway=GATEWAY_FACT if gateway else {}, __monitoring_address="127.0.0.1",
                  __monitoring_gateway_cert="/etc/prometheus/llm-onprem-gateway.crt",
                  __monitoring_gateway_url=f"{GATEWAY_FACT['address']}:{GATEWAY_FACT['port']}",
                  llm_service_instances=[{"name": "demo", "port": 8000}, {"name": "other", "port": 8001}])
    values.update(extra)
    return values


def _render(tmp_path, gpu, gateway=True, **extra):
    env, values = _env(), _vars(gpu, gateway, **extra)
    files = {
        "llm-onprem.rules.yml": RULES,
        "prometheus.yml": "etc/prometheus/prometheus.yml.j2",
        "alertmanager.yml": "etc/prometheus/alertmanager.yml.j2",
        "blackbox.yml": "etc/prometheus/blackbox.yml.j2",
        "llm-onprem.rules.test.yml": "llm-onprem.rules.test.yml.j2",
    }
    if gateway:
        files["llm-onprem-gateway.mtail"] = "etc/mtail/llm-onprem-gateway.mtail.j2"
    for name, template in files.items():
        (tmp_path / name).write_text(env.get_template(template).render(**values))
    # prometheus.yml names the rules by their installed path; check them beside it.
    prom = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    prom["rule_files"] = [str(tmp_path / "llm-onprem.rules.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom))
    return tmp_path


def _run(argv, cwd):
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)


def _alerts(path):
    return {rule["alert"] for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]}


def test_every_rule_fires_and_stays_silent_as_tested(tools, tmp_path):
    out = _render(tmp_path, gpu=True, gateway=True)
    proc = _run([tools["promtool"], "test", "rules", "llm-onprem.rules.test.yml"], out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tested = yaml.safe_load((out / "llm-onprem.rules.test.yml").read_text())["tests"]
    firing = {case["alertname"] for test in tested for case in test["alert_rule_test"] if case["exp_alerts"]}
    silent = {case["alertname"] for test in tested for case in test["alert_rule_test"] if not case["exp_alerts"]}
    assert firing == _alerts(out / "llm-onprem.rules.yml") == silent


@pytest.mark.parametrize(("gpu", "gateway"), [(True, True), (False, True), (True, False), (False, False)])
def test_rendered_configs_pass_promtool_and_amtool(tools, tmp_path, gpu, gateway):
    out = _render(tmp_path, gpu=gpu, gateway=gateway, monitoring_webhook_url="http://127.0.0.1:9099/alerts")
    checks = [[tools["promtool"], "check", "rules", "llm-onprem.rules.yml"],
              [tools["promtool"], "check", "config", "prometheus.yml"],
              [tools["amtool"], "check-config", "alertmanager.yml"],
              [tools["blackbox"], "--config.check", "--config.file=blackbox.yml"]]
    if gateway:
        checks.append([tools["mtail"], "--compile_only", "--progs", "llm-onprem-gateway.mtail"])
    for argv in checks:
        proc = _run(argv, out)
        assert proc.returncode == 0, f"{argv}: {proc.stdout}{proc.stderr}"
    jobs = {job["job_name"] for job in yaml.safe_load((out / "prometheus.yml").read_text())["scrape_configs"]}
    assert jobs == ({"prometheus", "alertmanager", "node", "vllm", "vllm_health", "blackbox"}
                    | ({"gpu"} if gpu else set()) | ({"gateway", "gateway_probe"} if gateway else set()))
    alerts = _alerts(out / "llm-onprem.rules.yml")
    assert (alerts & GPU_ALERTS) == (GPU_ALERTS if gpu else set())
    assert (alerts & GATEWAY_ALERTS) == (GATEWAY_ALERTS if gateway else set())
    modules = yaml.safe_load((out / "blackbox.yml").read_text())["modules"]
    assert ("llm_onprem_gateway" in modules) == gateway
    if gateway:
        tls = modules["llm_onprem_gateway"]["http"]["tls_config"]
        assert tls == {"ca_file": "/etc/prometheus/llm-onprem-gateway.crt", "server_name": "gw.example.org",
                       "insecure_skip_verify": False}


MTAIL_LINES = [
    '{"time":"t","client":"10.0.0.5","method":"POST","uri":"/v1/chat/completions","status":200,"bytes_sent":9,'
    '"request_length":90,"request_time":0.700,"upstream_addr":"127.0.0.1:8000","upstream_status":"200",'
    '"upstream_connect_time":"0.000","upstream_header_time":"0.1","upstream_response_time":"0.7","user_agent":"c"}',
    '{"time":"t","client":"10.0.0.6","method":"GET","uri":"/v1/models","status":401,"bytes_sent":9,"request_length":90,'
    '"request_time":0.000,"upstream_addr":"","upstream_status":"","upstream_connect_time":"","upstream_header_time":"",'
    '"upstream_response_time":"","user_agent":"c"}',
    '{"time":"t","client":"10.0.0.5","method":"POST","uri":"/v1/completions","status":502,"bytes_sent":9,'
    '"request_length":90,"request_time":3.100,"upstream_addr":"127.0.0.1:8000","upstream_status":"502",'
    '"upstream_connect_time":"","upstream_header_time":"","upstream_response_time":"","user_agent":"c"}',
    '{"time":"t","client":"127.0.0.1","method":"GET","uri":"/healthz","status":200,"bytes_sent":2,"request_length":90,'
    '"request_time":0.001,"upstream_addr":"127.0.0.1:8000","upstream_status":"200","upstream_connect_time":"0.000",'
    '"upstream_header_time":"0.001","upstream_response_time":"0.001","user_agent":"Blackbox"}',
    '{"time":"t","client":"10.0.0.7","method":"GET","uri":"/prometheus/api/v1/query","status":401,"bytes_sent":9,'
    '"request_length":90,"request_time":0.000,"upstream_addr":"","upstream_status":"","upstream_connect_time":"",'
    '"upstream_header_time":"","upstream_response_time":"","user_agent":"c"}',
]


def test_mtail_counts_the_gateway_access_log(tools, tmp_path):
    """The mtail program reads lines in the gateway's own log format (roles/gateway's
    llm_onprem_gateway log_format) into requests by route and status."""
    out = _render(tmp_path, gpu=False, gateway=True)
    log = out / "access.log"
    log.write_text("\n".join(MTAIL_LINES) + "\n")
    proc = _run([tools["mtail"], "--progs", "llm-onprem-gateway.mtail", "--logs", str(log), "--one_shot",
                 "--one_shot_format", "prometheus", "--emit_prog_label=false"], out)
    assert proc.returncode == 0, proc.stderr
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in proc.stdout.splitlines() if line and not line.startswith("#")}
    assert samples['llm_onprem_gateway_requests_total{route="api",status="200"}'] == 1
    assert samples['llm_onprem_gateway_requests_total{route="api",status="401"}'] == 1
    assert samples['llm_onprem_gateway_requests_total{route="api",status="502"}'] == 1
    assert samples['llm_onprem_gateway_requests_total{route="health",status="200"}'] == 1
    assert samples['llm_onprem_gateway_requests_total{route="monitoring",status="401"}'] == 1
    assert samples['llm_onprem_gateway_request_seconds_sum{route="api"}'] == pytest.approx(3.8)


def test_the_gateway_log_format_is_what_mtail_reads():
    """One home for the format: the mtail program's pattern matches the gateway role's log_format fields in order."""
    site = (ROOT / "roles/gateway/templates/etc/nginx/sites-available/llm-onprem-gateway.conf.j2").read_text()
    block = site.split("log_format llm_onprem_gateway escape=json", 1)[1].split("';", 1)[0] + "'"
    fmt = "".join(re.findall(r"'([^']*)'", block))
    assert '"uri":"$uri","status":$status,' in fmt
    assert fmt.index('"status":') < fmt.index('"request_time":$request_time,')


def test_alertmanager_email_receiver(tools, tmp_path):
    out = _render(tmp_path, gpu=False, monitoring_email_to=["ops@example.org", "oncall@example.org"],
                  monitoring_email_from="llm@example.org", monitoring_email_smarthost="smtp.example.org:587",
                  monitoring_email_auth_username="llm", monitoring_email_auth_password="s3cret-from-vault")
    proc = _run([tools["amtool"], "check-config", "alertmanager.yml"], out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load((out / "alertmanager.yml").read_text())
    assert config["route"]["receiver"] == "site"
    (site,) = [r for r in config["receivers"] if r["name"] == "site"]
    assert "webhook_configs" not in site
    assert site["email_configs"] == [{"to": "ops@example.org, oncall@example.org", "from": "llm@example.org",
                                      "smarthost": "smtp.example.org:587", "auth_username": "llm",
                                      "auth_password": "s3cret-from-vault", "require_tls": True,
                                      "send_resolved": True}]


def test_alertmanager_without_webhook_is_valid(tools, tmp_path):
    out = _render(tmp_path, gpu=False)
    proc = _run([tools["amtool"], "check-config", "alertmanager.yml"], out)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("override", [
    {"monitoring_alert_kv_cache_ratio": 0.97},     # threshold above the firing input: no alert
    {"monitoring_alert_instance_down_for": "10m"},  # longer for: not firing at 5m
    {"monitoring_alert_gpu_memory_ratio": 0.5},    # second GPU fires too
])
def test_a_changed_rule_breaks_the_tests(tools, tmp_path, override):
    """The tests follow the rules: a rule rendered with another threshold than the
    test file expects makes promtool fail."""
    out = _render(tmp_path, gpu=True)
    broken = _env().get_template(RULES).render(**_vars(True, **override))
    (out / "llm-onprem.rules.yml").write_text(broken)
    proc = _run([tools["promtool"], "test", "rules", "llm-onprem.rules.test.yml"], out)
    assert proc.returncode != 0, proc.stdout

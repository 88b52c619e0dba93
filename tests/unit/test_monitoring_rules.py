"""roles/monitoring: the rendered alert rules, Prometheus and Alertmanager configs
checked and tested by the real promtool/amtool (Debian's pinned packages, unpacked
by tests/harness/prom-tools.sh, never installed)."""

import os
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "monitoring"
RULES = "etc/prometheus/rules/llm-onprem.rules.yml.j2"
GPU_ALERTS = {"GPUMemoryHigh", "LLMQueuedWhileGPUIdle"}


@pytest.fixture(scope="module")
def tools():
    proc = subprocess.run([str(ROOT / "tests/harness/prom-tools.sh")], capture_output=True, text=True, check=False)
    found = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    if proc.returncode != 0 or not {"promtool", "amtool"} <= found.keys():
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
    env.filters["bool"] = lambda value: value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
    return env


def _vars(gpu, **extra):
    values = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    values.update(ansible_managed="Ansible managed (test render)", __monitoring_gpu=gpu,
                  llm_service_instances=[{"name": "demo", "port": 8000}, {"name": "other", "port": 8001}])
    values.update(extra)
    return values


def _render(tmp_path, gpu, **extra):
    env, values = _env(), _vars(gpu, **extra)
    files = {
        "llm-onprem.rules.yml": RULES,
        "prometheus.yml": "etc/prometheus/prometheus.yml.j2",
        "alertmanager.yml": "etc/prometheus/alertmanager.yml.j2",
        "llm-onprem.rules.test.yml": "llm-onprem.rules.test.yml.j2",
    }
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
    out = _render(tmp_path, gpu=True)
    proc = _run([tools["promtool"], "test", "rules", "llm-onprem.rules.test.yml"], out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tested = yaml.safe_load((out / "llm-onprem.rules.test.yml").read_text())["tests"]
    firing = {case["alertname"] for test in tested for case in test["alert_rule_test"] if case["exp_alerts"]}
    silent = {case["alertname"] for test in tested for case in test["alert_rule_test"] if not case["exp_alerts"]}
    assert firing == _alerts(out / "llm-onprem.rules.yml") == silent


@pytest.mark.parametrize("gpu", [True, False])
def test_rendered_configs_pass_promtool_and_amtool(tools, tmp_path, gpu):
    out = _render(tmp_path, gpu=gpu, monitoring_webhook_url="http://127.0.0.1:9099/alerts")
    for argv in ([tools["promtool"], "check", "rules", "llm-onprem.rules.yml"],
                 [tools["promtool"], "check", "config", "prometheus.yml"],
                 [tools["amtool"], "check-config", "alertmanager.yml"]):
        proc = _run(argv, out)
        assert proc.returncode == 0, f"{argv}: {proc.stdout}{proc.stderr}"
    jobs = {job["job_name"] for job in yaml.safe_load((out / "prometheus.yml").read_text())["scrape_configs"]}
    assert jobs == {"prometheus", "alertmanager", "node", "vllm"} | ({"gpu"} if gpu else set())
    assert (_alerts(out / "llm-onprem.rules.yml") & GPU_ALERTS) == (GPU_ALERTS if gpu else set())


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

"""The periodic re-hash of the published models (llm-onprem-model-verify.timer/.service, see molecule.yml).

The converge ran the service once (no metrics file yet). side_effect then published tiny@v3,
pruned tiny@v2, turned the verification off (checked there: everything but the metrics
directory removed) and on again with another schedule, which ran the service once more while
tiny@v1, tiny@v3 and tiny-local@r1 were published.
"""

import pytest

STORE = "/var/lib/llm-onprem/models"
UNIT = "llm-onprem-model-verify"
METRICS_DIR = "/var/lib/prometheus/node-exporter"
METRICS = f"{METRICS_DIR}/llm-onprem-model-verify.prom"
DAMAGED = f"{STORE}/tiny/v3/weights/w2.bin"


def metrics(host):
    """{(name, labels): value} of the textfile; labels as a 'k="v",...' string."""
    out = {}
    for line in host.file(METRICS).content_string.splitlines():
        if line.startswith("#") or not line:
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        out[(name, labels.rstrip("}"))] = float(value)
    return out


def show(host, unit, prop):
    return host.check_output(f"systemctl show --property={prop} --value {unit}")


def flip_byte(host, path, offset=100):
    host.check_output(
        "/usr/bin/python3 -c \"import sys; f = open(sys.argv[1], 'r+b'); f.seek(int(sys.argv[2])); b = f.read(1); "
        f"f.seek(int(sys.argv[2])); f.write(bytes([b[0] ^ 0xFF])); f.close()\" {path} {offset}"
    )


def test_timer_enabled_with_the_schedule_set(host):
    timer = host.service(f"{UNIT}.timer")
    assert timer.is_enabled and timer.is_running
    assert show(host, f"{UNIT}.timer", "Persistent") == "yes"
    assert show(host, f"{UNIT}.timer", "RandomizedDelayUSec") == "10min"  # side_effect's 600, not the default 3600
    assert "OnCalendar=Sun *-*-* 03:00:00" in show(host, f"{UNIT}.timer", "TimersCalendar")
    assert host.check_output(f"systemctl list-timers --all --no-legend {UNIT}.timer").strip() != ""


def test_service_ran_and_found_nothing(host):
    assert show(host, f"{UNIT}.service", "ExecMainStatus") == "0"
    assert show(host, f"{UNIT}.service", "Result") == "success"
    values = metrics(host)
    assert values[("llm_onprem_model_verify_success", "")] == 1
    assert values[("llm_onprem_model_verify_last_run_timestamp_seconds", "")] > 1.7e9
    assert ("llm_onprem_model_files_verified", 'model="tiny",revision="v2"') not in values  # pruned by side_effect
    for labels in ('model="tiny",revision="v1"', 'model="tiny",revision="v3"', 'model="tiny-local",revision="r1"'):
        assert values[("llm_onprem_model_files_mismatched", labels)] == 0
        assert values[("llm_onprem_model_files_verified", labels)] == 4
    text = host.file(METRICS).content_string
    for name in ("llm_onprem_model_files_mismatched", "llm_onprem_model_files_verified",
                 "llm_onprem_model_verify_last_run_timestamp_seconds", "llm_onprem_model_verify_success"):
        assert f"# HELP {name} " in text and f"# TYPE {name} gauge" in text


def test_metrics_file_and_directory(host):
    d = host.file(METRICS_DIR)
    assert d.is_directory and d.user == "root" and d.group == "llm-onprem" and d.mode == 0o775
    f = host.file(METRICS)
    assert f.user == "llm-onprem" and f.mode == 0o644  # written by the store's account, readable by node-exporter
    assert host.check_output(f"ls -A {METRICS_DIR}") == "llm-onprem-model-verify.prom"  # no temp file left


def test_installed_code_is_the_projects(host):
    for name in ("model_fetch.py", "model_verify.py", "llm_onprem_model_verify.py"):
        f = host.file(f"/usr/local/lib/llm-onprem/model-verify/{name}")
        assert f.is_file and f.user == "root" and not f.mode & 0o022
    assert "from model_fetch import" in host.file("/usr/local/lib/llm-onprem/model-verify/model_verify.py").content_string


@pytest.mark.parametrize(("prop", "value"), [
    ("User", "llm-onprem"),
    ("Type", "oneshot"),
    ("ProtectSystem", "strict"),
    ("PrivateNetwork", "yes"),
    ("PrivateTmp", "yes"),
    ("NoNewPrivileges", "yes"),
    ("Nice", "19"),
    ("IOSchedulingClass", ("3", "idle")),
    ("ReadWritePaths", METRICS_DIR),
    ("ReadOnlyPaths", STORE),
    ("CapabilityBoundingSet", ""),
])
def test_service_sandbox(host, prop, value):
    assert show(host, f"{UNIT}.service", prop) in (value if isinstance(value, tuple) else (value,))


def test_corrupted_byte_is_found_and_fails_the_unit(host):
    """One flipped byte in a published file: mismatched == 1 for that revision and the unit fails (exit 1)."""
    flip_byte(host, DAMAGED)
    try:
        start = host.run(f"systemctl start {UNIT}.service")
        assert start.rc != 0
        assert show(host, f"{UNIT}.service", "ExecMainStatus") == "1"
        assert show(host, f"{UNIT}.service", "Result") == "exit-code"
        assert host.run(f"systemctl is-failed --quiet {UNIT}.service").rc == 0
        values = metrics(host)
        assert values[("llm_onprem_model_files_mismatched", 'model="tiny",revision="v3"')] == 1
        assert values[("llm_onprem_model_files_verified", 'model="tiny",revision="v3"')] == 4
        assert values[("llm_onprem_model_files_mismatched", 'model="tiny",revision="v1"')] == 0
        assert values[("llm_onprem_model_files_mismatched", 'model="tiny-local",revision="r1"')] == 0
        assert ("llm_onprem_model_files_verified", 'model="tiny",revision="v2"') not in values  # pruned by side_effect
        assert values[("llm_onprem_model_verify_success", "")] == 1  # it ran; it found damage
        journal = host.check_output(f"journalctl --no-pager -o cat -u {UNIT}.service -n 20")
        assert "mismatch: tiny@v3: weights/w2.bin: sha256 mismatch" in journal
    finally:
        flip_byte(host, DAMAGED)  # put the byte back, so the store is as the other tests expect
    # A clean run after the repair: the unit succeeds and the metric goes back to 0.
    assert host.run(f"systemctl start {UNIT}.service").rc == 0
    assert show(host, f"{UNIT}.service", "ExecMainStatus") == "0"
    assert metrics(host)[("llm_onprem_model_files_mismatched", 'model="tiny",revision="v3"')] == 0

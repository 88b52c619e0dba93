"""roles/monitoring's GPU exporter files, rendered from the role's defaults: the
collectors CSV dcgm-exporter reads and the systemd unit that runs it.

No GPU and no NVIDIA repository here: these tests check what the role writes
(loopback listener, the DCGM fields the rules and dashboards read, the CSV form
dcgm-exporter 4.8's parser accepts) and, where systemd is installed, that
`systemd-analyze verify` accepts the unit.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "monitoring"
CSV_TEMPLATE = "etc/dcgm-exporter/llm-onprem-counters.csv.j2"
UNIT_TEMPLATE = "etc/systemd/system/nvidia-dcgm-exporter.service.j2"
RULES_TEMPLATE = ROLE / "templates" / "etc/prometheus/rules/llm-onprem.rules.yml.j2"
FIELD = re.compile(r"DCGM_FI_[A-Z0-9_]+")
# dcgm-exporter 4.8.2, internal/pkg/counters/variables.go (promMetricType).
PROM_TYPES = {"gauge", "counter", "histogram", "summary", "label"}
# The fields the GPU alert rules are written against (README, "GPU exporter").
RULE_FIELDS = {"DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_XID_ERRORS",
               "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"}


def _env():
    # trim_blocks as Ansible's template module renders.
    env = jinja2.Environment(  # noqa: S701 (renders a CSV file and a unit, not HTML)
        loader=jinja2.FileSystemLoader(ROLE / "templates"), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True)
    env.filters["comment"] = lambda text: "\n".join("# " + line for line in text.splitlines())
    return env


def _vars(**extra):
    """The role's defaults and its plain (untemplated) internal values, as Ansible would pass them."""
    values = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    internal = yaml.safe_load((ROLE / "vars/main.yml").read_text())
    values.update({k: v for k, v in internal.items() if not (isinstance(v, str) and "{{" in v)})
    values.update(ansible_managed="Ansible managed (test render)", __monitoring_address="127.0.0.1")
    values.update(extra)
    return values


def _render(template, **extra):
    return _env().get_template(template).render(**_vars(**extra))


def _records(text):
    """The CSV as dcgm-exporter reads it: Go's encoding/csv with Comment '#', fields trimmed of spaces."""
    rows = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [[field.strip(" ") for field in row] for row in csv.reader(io.StringIO("\n".join(rows)), strict=True)]


def _unit(text):
    """[Section] -> {key: [values]} of a rendered unit (comments dropped, repeated keys kept)."""
    sections, current = {}, None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[] "), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _exec_args(service):
    argv = shlex.split(service["ExecStart"][0])
    return argv[0], dict(zip(argv[1::2], argv[2::2], strict=False)), argv


def test_counters_csv_has_three_fields_a_line():
    records = _records(_render(CSV_TEMPLATE))
    assert records
    for record in records:
        assert len(record) == 3, record
        name, kind, text = record
        assert re.fullmatch(r"DCGM_FI_[A-Z0-9_]+", name), record
        assert kind in PROM_TYPES, record
        assert text and '"' not in text, record
    names = [r[0] for r in records]
    assert len(names) == len(set(names))


def test_counters_csv_lists_every_configured_field():
    counters = _vars()["monitoring_dcgm_exporter_counters"]
    assert _records(_render(CSV_TEMPLATE)) == [[c["name"], c["type"], c["help"]] for c in counters]


def test_counters_cover_the_rules_and_dashboards():
    names = {r[0] for r in _records(_render(CSV_TEMPLATE))}
    used = set(FIELD.findall(RULES_TEMPLATE.read_text()))
    for dashboard in sorted((ROLE / "files" / "dashboards").glob("*.json")):
        used |= set(FIELD.findall(json.dumps(json.loads(dashboard.read_text()))))
    assert RULE_FIELDS <= names, sorted(RULE_FIELDS - names)
    assert used <= names, f"rules or dashboards read fields the exporter does not publish: {sorted(used - names)}"


def test_inventory_check_knows_every_field_the_rules_read():
    # validate_inventory.yml refuses a counters list without __monitoring_gpu_rule_counters.
    required = set(_vars()["__monitoring_gpu_rule_counters"])
    assert set(FIELD.findall(RULES_TEMPLATE.read_text())) | RULE_FIELDS <= required


def test_defaults_and_argument_spec_agree():
    spec = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    values = _vars()
    for name in ("monitoring_dcgm_version", "monitoring_dcgm_packages", "monitoring_dcgm_exporter_version",
                 "monitoring_dcgm_exporter_counters"):
        assert spec[name]["default"] == values[name], name
    kinds = set(spec["monitoring_dcgm_exporter_counters"]["options"]["type"]["choices"])
    assert {c["type"] for c in values["monitoring_dcgm_exporter_counters"]} <= kinds <= PROM_TYPES


@pytest.mark.parametrize("port", [9400, 9500])
def test_unit_listens_on_loopback_only(port):
    values = _vars(monitoring_gpu_exporter_port=port)
    unit = _unit(_render(UNIT_TEMPLATE, monitoring_gpu_exporter_port=port))
    service = unit["Service"]
    binary, flags, argv = _exec_args(service)
    assert binary == "/usr/bin/dcgm-exporter"
    assert flags["--address"] == f"127.0.0.1:{port}"
    assert flags["--remote-hostengine-info"] == f"127.0.0.1:{values['__monitoring_dcgm_hostengine_port']}"
    assert flags["--collectors"] == values["__monitoring_dcgm_exporter_counters_file"]
    assert "--kubernetes" not in argv and "-k" not in argv
    assert service["IPAddressDeny"] == ["any"]
    assert service["IPAddressAllow"] == ["localhost"]


def test_unit_runs_unprivileged_and_sandboxed():
    unit = _unit(_render(UNIT_TEMPLATE))
    service = unit["Service"]
    assert "User" not in service and service["DynamicUser"] == ["yes"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                       "DevicePolicy": "closed", "PrivateDevices": "yes", "CapabilityBoundingSet": "",
                       "Restart": "on-failure", "RestrictNamespaces": "yes"}.items():
        assert service[key] == [value], key
    assert "DeviceAllow" not in service  # the host engine holds the GPUs
    assert unit["Unit"]["Requires"] == ["nvidia-dcgm.service"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    # The exporter and NVIDIA's host engine unit are not installed here: a stand-in for each.
    binary = tmp_path / "dcgm-exporter"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    (tmp_path / "nvidia-dcgm.service").write_text("[Unit]\nDescription=stand-in\n[Service]\nExecStart=/bin/true\n")
    unit = tmp_path / "nvidia-dcgm-exporter.service"
    unit.write_text(_render(UNIT_TEMPLATE, __monitoring_dcgm_exporter_bin=str(binary)))
    proc = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/bin:/bin", "SYSTEMD_UNIT_PATH": f"{tmp_path}:", "SYSTEMD_LOG_LEVEL": "notice"})
    messages = [line for line in (proc.stdout + proc.stderr).splitlines() if unit.name in line]
    assert proc.returncode == 0 and not messages, proc.stdout + proc.stderr

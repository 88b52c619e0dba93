"""Unit tests for module_utils/gpu_facts.py and library/gpu_facts.py."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import stat
import subprocess
import sys
import textwrap

import gpu_facts as gf
import pytest
from conftest import LIBRARY, MODULE_UTILS, read_capture, register_module_utils

MIB = 1024 ** 2
H200_UUID = "GPU-67254dee-ce53-19c4-1834-3ffaa5ff1c2a"
A40_UUIDS = ("GPU-3b1f9a52-7c1e-4d0b-9a55-0f1c2d3e4a01", "GPU-3b1f9a52-7c1e-4d0b-9a55-0f1c2d3e4a02")
NOUNITS_FIELDS = ["index", "uuid", "name", "memory.total", "memory.used", "memory.free",
                  "driver_version", "compute_cap"]


# ---------------------------------------------------------------------------
# pure parsers
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "unit", "expected"), [
    ("143771 MiB", None, 143771 * MIB),
    ("143771", "MiB", 143771 * MIB),
    ("0 MiB", None, 0),
    ("1 GiB", None, 1024 ** 3),
    ("[N/A]", "MiB", None),
    ("[Not Supported]", None, None),
    ("N/A", None, None),
    ("143771", None, None),  # a bare number needs a unit from the header
    ("lots", "MiB", None),
])
def test_to_bytes(value, unit, expected):
    assert gf.to_bytes(value, default_unit=unit) == expected


@pytest.mark.parametrize(("fixture", "kind", "expected"), [
    ("nvidia-smi-q.xml", "xml", {"index": 0, "uuid": H200_UUID, "name": "NVIDIA H200",
                                 "memory_total_bytes": 143771 * MIB, "memory_used_bytes": 0,
                                 "memory_free_bytes": 143156 * MIB, "memory_reserved_bytes": 616 * MIB,
                                 "driver_version": "580.159.04", "cuda_driver_version": "13.0",
                                 "pci_bus_id": "00000000:00:06.0", "mig_mode": "Disabled",
                                 "architecture": "Hopper", "processes": [], "mig_devices": []}),
    ("query-gpu.csv", "csv", {"index": 0, "uuid": H200_UUID, "name": "NVIDIA H200",
                              "memory_total_bytes": 143771 * MIB, "memory_used_bytes": 0,
                              "memory_free_bytes": 143156 * MIB, "driver_version": "580.159.04",
                              "compute_cap": "9.0", "pci_bus_id": "00000000:00:06.0",
                              "pcie_link_gen_max": 5, "pcie_link_width_max": 16, "power_limit_w": 700.0,
                              "temperature_c": 44, "utilization_percent": 0, "mig_mode": "Disabled"}),
    ("query-gpu-nounits.csv", "nounits", {"index": 0, "uuid": H200_UUID, "memory_total_bytes": 143771 * MIB,
                                          "memory_used_bytes": 0, "memory_free_bytes": 143156 * MIB,
                                          "compute_cap": "9.0"}),
    ("busy-query-gpu.csv", "nounits6", {"index": 0, "memory_used_bytes": 21007 * MIB,
                                        "memory_free_bytes": 122150 * MIB}),
])
def test_h200_captures(h200, fixture, kind, expected):
    text, rc = read_capture(h200 / fixture)
    assert rc == 0
    if kind == "xml":
        gpus = gf.parse_smi_xml(text)
    elif kind == "csv":
        gpus = gf.parse_smi_csv(text)
    elif kind == "nounits":
        gpus = gf.parse_smi_csv(text, fields=NOUNITS_FIELDS)
    else:
        gpus = gf.parse_smi_csv(text, fields=NOUNITS_FIELDS[:6])
    assert len(gpus) == 1
    for key, value in expected.items():
        assert gpus[0][key] == value, key


def test_rc_line_is_tolerated(h200):
    raw = (h200 / "nvidia-smi-q.xml").read_text()
    assert raw.rstrip().endswith("# rc=0")
    stripped, _ = read_capture(h200 / "nvidia-smi-q.xml")
    assert gf.parse_smi_xml(raw) == gf.parse_smi_xml(stripped)
    assert gf.parse_smi_csv((h200 / "query-gpu.csv").read_text()) == \
        gf.parse_smi_csv(read_capture(h200 / "query-gpu.csv")[0])


def test_reserved_matches_torch_total(h200):
    """total - reserved is what torch reports (within 1 MiB: nvidia-smi rounds to MiB)."""
    gpu = gf.parse_smi_xml(read_capture(h200 / "nvidia-smi-q.xml")[0])[0]
    match = re.search(r"\(\d+, \d+\) (\d+) \(", read_capture(h200 / "torch-env.txt")[0])
    torch_total = int(match.group(1))
    assert torch_total == 150109880320
    assert 0 <= torch_total - (gpu["memory_total_bytes"] - gpu["memory_reserved_bytes"]) <= MIB


def test_busy_compute_apps(h200):
    apps = gf.parse_compute_apps_csv(read_capture(h200 / "busy-compute-apps.csv")[0])
    assert apps == [{"pid": 649, "process_name": "python3", "used_memory_bytes": 20998 * MIB,
                     "gpu_uuid": H200_UUID}]


@pytest.mark.parametrize("text", ["", "No running processes found\n",
                                  "pid, process_name, used_gpu_memory [MiB], gpu_uuid\n"])
def test_compute_apps_empty(text):
    assert gf.parse_compute_apps_csv(text) == []


def test_csv_na_values(local_gpu):
    gpu = gf.parse_smi_csv(read_capture(local_gpu / "geforce-query-gpu-na.csv")[0])[0]
    assert gpu["name"] == "NVIDIA GeForce RTX 4090"
    assert gpu["memory_total_bytes"] == 24564 * MIB
    assert gpu["power_limit_w"] is None
    assert gpu["utilization_percent"] is None
    assert gpu["mig_mode"] is None


def test_csv_column_mismatch_raises():
    with pytest.raises(ValueError, match="columns"):
        gf.parse_smi_csv("index, name\n0, A, extra\n")


@pytest.mark.parametrize("text", ["", "not xml at all", "<other/>", "No devices were found"])
def test_xml_rejects_non_smi_output(text):
    with pytest.raises(ValueError, match="not nvidia-smi XML"):
        gf.parse_smi_xml(text)


def test_multi_gpu_xml_with_process(local_gpu):
    gpus = gf.parse_smi_xml(read_capture(local_gpu / "a40x2-nvidia-smi-q.xml")[0])
    assert [g["uuid"] for g in gpus] == list(A40_UUIDS)
    assert [g["index"] for g in gpus] == [0, 1]
    assert gpus[1]["memory_used_bytes"] == 10244 * MIB
    assert gpus[1]["processes"] == [{"pid": 31337, "type": "C", "process_name": "/usr/bin/python3",
                                     "used_memory_bytes": 10236 * MIB, "gpu_uuid": A40_UUIDS[1],
                                     "gpu_instance_id": None}]
    assert gpus[0]["processes"] == []


def test_mig_xml(local_gpu):
    gpu = gf.parse_smi_xml(read_capture(local_gpu / "a100-mig-nvidia-smi-q.xml")[0])[0]
    assert gpu["mig_mode"] == "Enabled"
    assert [(m["gpu_instance_id"], m["memory_total_bytes"], m["memory_used_bytes"]) for m in gpu["mig_devices"]] == \
        [(1, 40192 * MIB, 37 * MIB), (2, 40192 * MIB, 38 * MIB)]


def test_merge_and_attach(local_gpu):
    xml = gf.parse_smi_xml(read_capture(local_gpu / "a40x2-nvidia-smi-q.xml")[0])
    csv = gf.parse_smi_csv(read_capture(local_gpu / "a40x2-query-gpu.csv")[0])
    merged = gf.merge_gpus(xml, list(reversed(csv)))
    assert [g["compute_cap"] for g in merged] == ["8.6", "8.6"]
    assert [g["index"] for g in merged] == [0, 1]
    apps = gf.parse_compute_apps_csv(read_capture(local_gpu / "a40x2-compute-apps.csv")[0])
    gf.attach_processes(merged, apps)
    assert [len(g["processes"]) for g in merged] == [0, 1]  # XML and CSV name the same pid once
    assert gf.merge_gpus([], csv) == csv


@pytest.mark.parametrize(("fixture", "devices", "pairs", "all_nvlink", "affinity0"), [
    ("h200:topo-m.txt", ["GPU0"], {}, False, ("0-15", "0")),
    ("local:a40x4-topo-m.txt", ["GPU0", "GPU1", "GPU2", "GPU3"],
     {(0, 1): ("PIX", "pcie"), (0, 2): ("SYS", "pcie"), (2, 3): ("NV4", "nvlink"), (1, 3): ("SYS", "pcie")},
     False, ("0-31", "0")),
    ("local:h100x8-topo-m.txt", [f"GPU{i}" for i in range(8)] + ["NIC0"],
     {(0, 7): ("NV18", "nvlink"), (3, 4): ("NV18", "nvlink")}, True, ("0-55,112-167", "0")),
])
def test_topology(h200, local_gpu, fixture, devices, pairs, all_nvlink, affinity0):
    where, name = fixture.split(":")
    text = (h200 if where == "h200" else local_gpu).joinpath(name).read_text()
    assert "\x1b[" in text  # real output carries escape codes
    topo = gf.parse_topology(text)
    assert topo["devices"] == devices
    links = {(link["a"], link["b"]): (link["code"], link["kind"]) for link in topo["links"]}
    gpu_count = len([d for d in devices if d.startswith("GPU")])
    assert len(links) == gpu_count * (gpu_count - 1) // 2
    for pair, value in pairs.items():
        assert links[pair] == value
    assert topo["all_nvlink"] is all_nvlink
    assert (topo["affinity"]["GPU0"]["cpu_affinity"], topo["affinity"]["GPU0"]["numa_affinity"]) == affinity0


def test_topology_without_matrix():
    assert gf.parse_topology("garbage\n") == {"devices": [], "links": [], "affinity": {}, "all_nvlink": False}


def test_strip_ansi():
    assert gf.strip_ansi("\x1b[4mGPU0\x1b[0m\tX") == "GPU0\tX"


@pytest.mark.parametrize(("fixture", "found", "state", "words"), [
    ("err-driver-not-loaded.txt", True, gf.STATE_DRIVER_NOT_LOADED, "kernel module"),
    ("err-no-devices.txt", True, gf.STATE_NO_DEVICES, "sees no GPU"),
    ("err-nvml-mismatch.txt", True, gf.STATE_DRIVER_MISMATCH, "Reboot"),
    ("err-nvml-unknown.txt", True, gf.STATE_ERROR, "Unknown Error"),
    (None, False, gf.STATE_NO_SMI, "CPU plan"),
])
def test_classify_error(local_gpu, fixture, found, state, words):
    text, rc = read_capture(local_gpu / fixture) if fixture else ("", None)
    got_state, message = gf.classify_error(rc, "", text, found=found)
    assert got_state == state
    assert words in message


def test_classify_ok(h200):
    text, rc = read_capture(h200 / "nvidia-smi.txt")
    assert gf.classify_error(rc, text, "") == (gf.STATE_OK, "nvidia-smi answered")


# ---------------------------------------------------------------------------
# library/gpu_facts.py with a fake nvidia-smi
# ---------------------------------------------------------------------------

FAKE_SMI = """\
#!{python}
import json, sys
cases = json.load(open({cases!r}))
argv = sys.argv[1:]
if argv[:2] == ["-q", "-x"]:
    key = "xml"
elif argv and argv[0].startswith("--query-gpu="):
    key = "csv"
elif argv and argv[0].startswith("--query-compute-apps="):
    key = "apps"
elif argv[:2] == ["topo", "-m"]:
    key = "topo"
else:
    key = "other"
with open({log!r}, "a") as log:
    log.write(json.dumps(argv) + "\\n")
path, rc = cases.get(key, cases.get("default", [None, 2]))
if path:
    text = open(path).read()
    lines = [l for l in text.splitlines(True) if not l.startswith("# rc=")]
    sys.stdout.write("".join(lines))
sys.exit(rc)
"""


def make_fake_smi(tmp_path, cases):
    cases_file = tmp_path / "cases.json"
    cases_file.write_text(json.dumps({k: [str(v[0]) if v[0] else None, v[1]] for k, v in cases.items()}))
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text(FAKE_SMI.format(python=sys.executable, cases=str(cases_file), log=str(tmp_path / "argv.log")))
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    return smi


def load_library(name):
    register_module_utils()
    spec = importlib.util.spec_from_file_location("lib_" + name, LIBRARY / (name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_module(name, args, capsys, check_mode=False):
    from ansible.module_utils.testing import patch_module_args

    mod = load_library(name)
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    with patch_module_args(args), pytest.raises(SystemExit) as exc:
        mod.main()
    out = json.loads(capsys.readouterr().out)
    out["_exit"] = exc.value.code
    return out


def h200_cases(h200, busy=False):
    return {"xml": (h200 / "nvidia-smi-q.xml", 0),
            "csv": (h200 / ("busy-query-gpu.csv" if busy else "query-gpu.csv"), 0),
            "apps": (h200 / "busy-compute-apps.csv", 0) if busy else (None, 0),
            "topo": (h200 / "topo-m.txt", 0)}


def test_module_h200(tmp_path, h200, capsys, monkeypatch):
    smi = make_fake_smi(tmp_path, h200_cases(h200))
    monkeypatch.setenv("PATH", str(smi.parent))
    out = run_module("gpu_facts", {}, capsys)
    assert out["_exit"] == 0 and not out.get("failed")
    assert out["state"] == "ok" and out["has_gpu"] and out["gpu_count"] == 1
    assert out["changed"] is False
    assert out["nvidia_smi"] == str(smi)
    gpu = out["gpus"][0]
    assert gpu["compute_cap"] == "9.0"
    assert gpu["memory_reserved_bytes"] == 616 * MIB
    assert out["driver_version"] == "580.159.04" and out["cuda_driver_version"] == "13.0"
    assert out["topology"]["affinity"]["GPU0"]["cpu_affinity"] == "0-15"
    calls = [json.loads(line) for line in (tmp_path / "argv.log").read_text().splitlines()]
    assert calls[0] == ["-q", "-x"]
    assert calls[1][0].startswith("--query-gpu=index,uuid,name,memory.total")
    assert calls[-1] == ["topo", "-m"]


def test_module_busy_h200_reports_process(tmp_path, h200, capsys, monkeypatch):
    cases = h200_cases(h200, busy=True)
    cases["csv"] = (tmp_path / "busy.csv", 0)
    # busy-query-gpu.csv is noheader/nounits; give the module the header form it asks for
    body = read_capture(h200 / "busy-query-gpu.csv")[0].strip()
    (tmp_path / "busy.csv").write_text(
        "index, uuid, name, memory.total [MiB], memory.used [MiB], memory.free [MiB]\n" + body + "\n")
    smi = make_fake_smi(tmp_path, cases)
    out = run_module("gpu_facts", {"nvidia_smi_path": str(smi)}, capsys)
    assert out["processes"][0]["pid"] == 649
    assert out["gpus"][0]["processes"][0]["used_memory_bytes"] == 20998 * MIB


def test_module_retries_without_memory_reserved(tmp_path, h200, capsys):
    err = tmp_path / "err.txt"
    err.write_text('Field "memory.reserved" is not a valid field to query.\n')
    smi = make_fake_smi(tmp_path, {"xml": (h200 / "nvidia-smi-q.xml", 0), "csv": (err, 2),
                                   "apps": (None, 0), "topo": (h200 / "topo-m.txt", 0)})
    out = run_module("gpu_facts", {"nvidia_smi_path": str(smi)}, capsys)
    argv = [json.loads(line) for line in (tmp_path / "argv.log").read_text().splitlines()]
    queries = [a[0] for a in argv if a[0].startswith("--query-gpu=")]
    assert len(queries) == 2 and "memory.reserved" not in queries[1]
    assert out["state"] == "ok"
    assert any("--query-gpu failed" in w for w in out["warnings_list"])


@pytest.mark.parametrize(("fixture", "rc", "state"), [
    ("err-driver-not-loaded.txt", 9, "driver_not_loaded"),
    ("err-no-devices.txt", 6, "no_devices"),
    ("err-nvml-mismatch.txt", 18, "driver_mismatch"),
    ("err-nvml-unknown.txt", 255, "error"),
])
@pytest.mark.parametrize("require", [False, True])
def test_module_errors(tmp_path, local_gpu, capsys, fixture, rc, state, require):
    smi = make_fake_smi(tmp_path, {"default": (local_gpu / fixture, rc)})
    out = run_module("gpu_facts", {"nvidia_smi_path": str(smi), "require_gpu": require}, capsys)
    assert out["state"] == state
    assert out["has_gpu"] is False and out["gpus"] == []
    assert out["msg"]
    if require:
        assert out["failed"] is True and out["_exit"] == 1
        assert out["rc"] == rc and out["stdout"]
    else:
        assert not out.get("failed") and out["_exit"] == 0


def test_module_unparseable_xml(tmp_path, capsys):
    bad = tmp_path / "bad.xml"
    bad.write_text("<nvidia_smi_log><gpu>")
    smi = make_fake_smi(tmp_path, {"default": (bad, 0)})
    out = run_module("gpu_facts", {"nvidia_smi_path": str(smi)}, capsys)
    assert out["state"] == "error" and "cannot parse" in out["msg"]


def test_module_without_nvidia_smi(tmp_path, capsys, check_mode=True):
    out = run_module("gpu_facts", {"nvidia_smi_path": str(tmp_path / "missing")}, capsys, check_mode=True)
    assert out["state"] == "no_nvidia_smi" and out["gpu_count"] == 0
    assert out["nvidia_smi"] is None and not out.get("failed")


def test_module_check_mode_runs_read_only(tmp_path, local_gpu, capsys):
    smi = make_fake_smi(tmp_path, {"xml": (local_gpu / "a40x2-nvidia-smi-q.xml", 0),
                                   "csv": (local_gpu / "a40x2-query-gpu.csv", 0),
                                   "apps": (local_gpu / "a40x2-compute-apps.csv", 0),
                                   "topo": (local_gpu / "a40x4-topo-m.txt", 0)})
    out = run_module("gpu_facts", {"nvidia_smi_path": str(smi)}, capsys, check_mode=True)
    assert out["changed"] is False and out["gpu_count"] == 2
    assert [g["compute_cap"] for g in out["gpus"]] == ["8.6", "8.6"]
    assert out["gpus"][1]["processes"][0]["pid"] == 31337


def test_module_as_a_program(tmp_path, local_gpu):
    """Run the file as Ansible does (args JSON on stdin): JSON out, no traceback."""
    smi = make_fake_smi(tmp_path, {"default": (local_gpu / "err-nvml-mismatch.txt", 18)})
    boot = textwrap.dedent(f"""
        import sys, runpy
        sys.path.insert(0, {str(MODULE_UTILS)!r})
        import ansible.module_utils as amu, gpu_facts
        sys.modules['ansible.module_utils.gpu_facts'] = gpu_facts
        runpy.run_path({str(LIBRARY / 'gpu_facts.py')!r}, run_name='__main__')
    """)
    args = json.dumps({"ANSIBLE_MODULE_ARGS": {"nvidia_smi_path": str(smi)}})
    proc = subprocess.run([sys.executable, "-c", boot], input=args, capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, LC_ALL="C"), check=False)
    assert "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and out["state"] == "driver_mismatch"


def make_pci_tree(root, devices):
    for address, vendor, klass, device in devices:
        node = root / address
        node.mkdir(parents=True)
        (node / "vendor").write_text(vendor + "\n")
        (node / "class").write_text(klass + "\n")
        (node / "device").write_text(device + "\n")


@pytest.mark.parametrize(("devices", "expected"), [
    ([], []),
    ([("0000:00:01.0", "0x1af4", "0x010000", "0x1001")], []),  # virtio disk
    ([("0000:00:06.0", "0x10de", "0x030200", "0x2335"),  # H200 (3D controller)
      ("0000:00:07.0", "0x10de", "0x040300", "0x22e8"),  # NVIDIA audio function: not a GPU
      ("0000:00:02.0", "0x1234", "0x030000", "0x1111")],  # another vendor's VGA
     [{"address": "0000:00:06.0", "device_id": "0x2335", "class": "0x030200"}]),
    ([("0000:65:00.0", "0x10de", "0x030000", "0x2235"), ("0000:17:00.0", "0x10de", "0x030000", "0x2235")],
     [{"address": "0000:17:00.0", "device_id": "0x2235", "class": "0x030000"},
      {"address": "0000:65:00.0", "device_id": "0x2235", "class": "0x030000"}]),
])
def test_nvidia_pci_devices(tmp_path, devices, expected):
    make_pci_tree(tmp_path / "pci", devices)
    assert gf.nvidia_pci_devices(str(tmp_path / "pci")) == expected


def test_nvidia_pci_devices_missing_root(tmp_path):
    assert gf.nvidia_pci_devices(str(tmp_path / "absent")) == []


def test_module_gpu_host_without_driver(tmp_path, capsys):
    """PCI shows an NVIDIA GPU but nvidia-smi is missing: a GPU host whose driver is not installed yet."""
    make_pci_tree(tmp_path / "pci", [("0000:00:06.0", "0x10de", "0x030200", "0x2335")])
    out = run_module("gpu_facts", {"nvidia_smi_path": str(tmp_path / "missing"), "pci_root": str(tmp_path / "pci")},
                     capsys)
    assert out["state"] == "no_nvidia_smi" and out["has_gpu"] is False
    assert out["pci_gpus"] == [{"address": "0000:00:06.0", "device_id": "0x2335", "class": "0x030200"}]
    assert "driver is not installed" in out["msg"]


def module_docs(name):
    """DOCUMENTATION, EXAMPLES and RETURN of library/<name>.py, parsed."""
    import ast

    import yaml

    tree = ast.parse((LIBRARY / (name + ".py")).read_text())
    docs = {node.targets[0].id: yaml.safe_load(node.value.value) for node in tree.body
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in ("DOCUMENTATION", "EXAMPLES", "RETURN")}
    assert set(docs) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}
    return docs


def test_gpu_facts_docs_cover_what_it_returns(tmp_path, h200, capsys):
    docs = module_docs("gpu_facts")
    assert docs["DOCUMENTATION"]["attributes"]["check_mode"]["support"] == "full"
    assert "diff_mode" in docs["DOCUMENTATION"]["attributes"]
    assert all(task.get("name") for task in docs["EXAMPLES"])
    assert set(docs["DOCUMENTATION"]["options"]) == {"nvidia_smi_path", "require_gpu", "collect_topology",
                                                     "collect_processes", "pci_root"}
    smi = make_fake_smi(tmp_path, h200_cases(h200, busy=False))
    out = run_module("gpu_facts", {"nvidia_smi_path": str(smi)}, capsys)
    returned = set(out) - {"changed", "_exit", "invocation", "failed", "warnings", "deprecations"}
    assert returned <= set(docs["RETURN"]), returned - set(docs["RETURN"])
    assert set(docs["RETURN"]) <= returned
    gpu_keys = set(out["gpus"][0])
    documented = set(docs["RETURN"]["gpus"]["contains"])
    assert {"index", "uuid", "name", "memory_total_bytes", "memory_used_bytes", "memory_free_bytes",
            "driver_version"} <= documented & gpu_keys

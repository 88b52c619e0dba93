#!/usr/bin/python
# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module gpu_facts: NVIDIA GPUs, their memory, processes and links."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpu_facts
short_description: Read NVIDIA GPU facts (memory, processes, topology) with nvidia-smi
description:
  - Runs C(nvidia-smi -q -x), C(nvidia-smi --query-gpu=... --format=csv),
    C(nvidia-smi --query-compute-apps=... --format=csv) and C(nvidia-smi topo -m)
    as argv lists under C(LC_ALL=C) and returns one dict per GPU.
  - A host without nvidia-smi, with the driver not loaded, with no devices, or
    with an NVML driver/library version mismatch is not an error by default;
    the module returns a C(state) and a message saying what to do.
    Set O(require_gpu=true) to fail in those cases instead.
  - Read-only; it never changes the host.
  - The parsing lives in C(module_utils/gpu_facts.py).
version_added: "1.0.0"
author:
  - llm-onprem contributors
options:
  nvidia_smi_path:
    description:
      - Path of nvidia-smi. By default it is searched on E(PATH), then in C(/usr/local/nvidia/bin).
    type: path
  require_gpu:
    description:
      - Fail the task when no usable GPU is found (any C(state) other than C(ok)).
    type: bool
    default: false
  collect_topology:
    description:
      - Run C(nvidia-smi topo -m) to report the link (NVLink or PCIe) between each pair of GPUs.
    type: bool
    default: true
  collect_processes:
    description:
      - Report the compute processes holding GPU memory.
    type: bool
    default: true
  pci_root:
    description: Where the PCI devices are listed (sysfs); changed only by tests.
    type: path
    default: /sys/bus/pci/devices
attributes:
  check_mode:
    support: full
    description: The module only reads; it runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
notes:
  - Memory figures are nvidia-smi's (bytes). PyTorch and vLLM see
    C(memory_total_bytes - memory_reserved_bytes), a few hundred MiB less;
    the llm_sizing module uses that figure.
"""

EXAMPLES = r"""
- name: Read the GPU facts
  gpu_facts:
  register: gpu

- name: Show the GPUs
  ansible.builtin.debug:
    msg: "{{ gpu.gpus | map(attribute='name') | list }} ({{ gpu.state }})"

- name: Require a working GPU
  gpu_facts:
    require_gpu: true
    collect_topology: false
"""

RETURN = r"""
state:
  description: >-
    C(ok); C(no_nvidia_smi) (not installed: no NVIDIA driver, a CPU host);
    C(driver_not_loaded); C(no_devices); C(driver_mismatch) (NVML driver/library
    version mismatch, usually fixed by a reboot); C(error) (anything else).
  returned: always
  type: str
  sample: ok
msg:
  description: A sentence an operator can act on.
  returned: always
  type: str
has_gpu:
  description: True when state is C(ok) and at least one GPU was found.
  returned: always
  type: bool
gpu_count:
  description: Number of GPUs.
  returned: always
  type: int
nvidia_smi:
  description: Path of the nvidia-smi used, or null.
  returned: always
  type: str
driver_version:
  description: NVIDIA driver version.
  returned: always
  type: str
  sample: 580.159.04
cuda_driver_version:
  description: Highest CUDA version the driver supports.
  returned: always
  type: str
  sample: "13.0"
gpus:
  description: One dict per GPU.
  returned: always
  type: list
  elements: dict
  contains:
    index:
      description: "nvidia-smi index"
      type: int
    uuid:
      description: "GPU UUID"
      type: str
    name:
      description: "Product name"
      type: str
    architecture:
      description: "Product architecture (Hopper, Ampere, ...)"
      type: str
    memory_total_bytes:
      description: "Total framebuffer memory (nvidia-smi)"
      type: int
    memory_reserved_bytes:
      description: "Memory the driver reserves (not usable by CUDA)"
      type: int
    memory_used_bytes:
      description: "Used memory"
      type: int
    memory_free_bytes:
      description: "Free memory"
      type: int
    driver_version:
      description: "Driver version"
      type: str
    cuda_driver_version:
      description: "CUDA driver version"
      type: str
    compute_cap:
      description: "Compute capability"
      type: str
      sample: "9.0"
    pci_bus_id:
      description: "PCI bus id"
      type: str
    mig_mode:
      description: "Current MIG mode (Enabled/Disabled/null)"
      type: str
    mig_devices:
      description: "MIG instances with their own memory figures"
      type: list
    processes:
      description: "Compute processes on this GPU (pid, process_name, used_memory_bytes)"
      type: list
topology:
  description: Links between GPUs from C(nvidia-smi topo -m).
  returned: always
  type: dict
  contains:
    devices:
      description: "Device names in the matrix"
      type: list
    links:
      description: One entry per GPU pair, C(kind) is nvlink or pcie, C(code) the matrix code (NV12, PIX, SYS...).
      type: list
    affinity:
      description: "CPU and NUMA affinity per GPU"
      type: dict
    all_nvlink:
      description: "Every GPU pair is linked by NVLink"
      type: bool
processes:
  description: All compute processes holding GPU memory.
  returned: always
  type: list
  elements: dict
pci_gpus:
  description: >-
    NVIDIA display/3D controllers found in /sys/bus/pci/devices (address,
    device_id, class), also when no driver is installed: a host with
    pci_gpus but state C(no_nvidia_smi) is a GPU host without a driver.
  returned: always
  type: list
  elements: dict
warnings_list:
  description: Non-fatal problems (for example topo -m failing).
  returned: always
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gpu_facts import (
    COMPUTE_APP_FIELDS,
    QUERY_FIELDS,
    STATE_ERROR,
    STATE_NO_SMI,
    STATE_OK,
    attach_processes,
    classify_error,
    merge_gpus,
    nvidia_pci_devices,
    parse_compute_apps_csv,
    parse_smi_csv,
    parse_smi_xml,
    parse_topology,
)

C_LOCALE = {"LC_ALL": "C", "LANG": "C"}


def _run(module, argv):
    return module.run_command(argv, environ_update=C_LOCALE, check_rc=False)


def collect(module, smi, topology=True, processes=True):
    """Run nvidia-smi and return the result dict (never raises on bad output)."""
    result = {"nvidia_smi": smi, "gpus": [], "topology": {"devices": [], "links": [], "affinity": {},
              "all_nvlink": False}, "processes": [], "warnings_list": [],
              "driver_version": None, "cuda_driver_version": None}
    if smi is None:
        state, msg = classify_error(None, found=False)
        result.update(state=state, msg=msg)
        return result, None
    rc, out, err = _run(module, [smi, "-q", "-x"])
    state, msg = classify_error(rc, out, err)
    if state != STATE_OK:
        result.update(state=state, msg=msg)
        return result, (rc, out, err)
    try:
        xml_gpus = parse_smi_xml(out)
    except ValueError as exc:
        result.update(state=STATE_ERROR, msg=f"cannot parse nvidia-smi -q -x output: {exc}")
        return result, (rc, out, err)
    fields = list(QUERY_FIELDS)
    rc, out, err = _run(module, [smi, "--query-gpu=" + ",".join(fields), "--format=csv"])
    if rc != 0 and "memory.reserved" in (out + err):
        fields.remove("memory.reserved")  # older drivers do not know the field
        rc, out, err = _run(module, [smi, "--query-gpu=" + ",".join(fields), "--format=csv"])
    csv_gpus = []
    if rc == 0:
        try:
            csv_gpus = parse_smi_csv(out)
        except ValueError as exc:
            result["warnings_list"].append(f"cannot parse --query-gpu output: {exc}")
    else:
        result["warnings_list"].append(f"nvidia-smi --query-gpu failed (rc={rc}): {(err or out).strip()}")
    gpus = merge_gpus(xml_gpus, csv_gpus)
    if processes:
        rc, out, err = _run(module, [smi, "--query-compute-apps=" + ",".join(COMPUTE_APP_FIELDS), "--format=csv"])
        if rc == 0:
            try:
                result["processes"] = parse_compute_apps_csv(out)
            except ValueError as exc:
                result["warnings_list"].append(f"cannot parse --query-compute-apps output: {exc}")
        else:
            result["warnings_list"].append(f"nvidia-smi --query-compute-apps failed (rc={rc})")
        attach_processes(gpus, result["processes"])
    if topology and len(gpus) > 0:
        rc, out, err = _run(module, [smi, "topo", "-m"])
        if rc == 0:
            result["topology"] = parse_topology(out)
        else:
            result["warnings_list"].append(f"nvidia-smi topo -m failed (rc={rc}): {(err or out).strip()}")
    result["gpus"] = gpus
    if gpus:
        result["driver_version"] = gpus[0].get("driver_version")
        result["cuda_driver_version"] = gpus[0].get("cuda_driver_version")
    result.update(state=STATE_OK, msg=f"{len(gpus)} NVIDIA GPU(s) found")
    return result, None


def find_smi(module):
    path = module.params["nvidia_smi_path"]
    if path:
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    # PATH first (so a PATH entry wins), then where NVIDIA's container runtime mounts it.
    found = module.get_bin_path("nvidia-smi", required=False)
    if found is None:
        fallback = "/usr/local/nvidia/bin/nvidia-smi"
        found = fallback if os.access(fallback, os.X_OK) else None
    return found


def main():
    module = AnsibleModule(
        argument_spec={
            "nvidia_smi_path": {"type": "path"},
            "require_gpu": {"type": "bool", "default": False},
            "collect_topology": {"type": "bool", "default": True},
            "collect_processes": {"type": "bool", "default": True},
            "pci_root": {"type": "path", "default": "/sys/bus/pci/devices"},
        },
        supports_check_mode=True,
    )
    result, failed_run = collect(module, find_smi(module), module.params["collect_topology"],
                                 module.params["collect_processes"])
    result["pci_gpus"] = nvidia_pci_devices(module.params["pci_root"])
    if result["state"] == STATE_NO_SMI and result["pci_gpus"]:
        result["msg"] = ("{} NVIDIA GPU(s) on the PCI bus but no nvidia-smi: the NVIDIA driver is not "
                         "installed yet (the nvidia_driver role installs it)").format(len(result["pci_gpus"]))
    result["gpu_count"] = len(result["gpus"])
    result["has_gpu"] = result["state"] == STATE_OK and result["gpu_count"] > 0
    if module.params["require_gpu"] and not result["has_gpu"]:
        extra = {}
        if failed_run is not None:
            extra = {"rc": failed_run[0], "stdout": failed_run[1], "stderr": failed_run[2]}
        module.fail_json(changed=False, **dict(result, **extra))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()

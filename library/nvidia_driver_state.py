#!/usr/bin/python
# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module nvidia_driver_state: what the nvidia_driver role does on this host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nvidia_driver_state
short_description: Decide whether to install, keep or skip the NVIDIA driver, and whether a reboot is due
description:
  - Reads the installed driver packages (C(dpkg-query -W)) and the loaded kernel module
    (C(/proc/driver/nvidia/version)), takes the O(gpu) result of the gpu_facts module, and
    returns the role's decision (C(skip), C(keep), C(install)) with a sentence explaining it.
  - Also says whether a reboot is needed to load the installed driver (a real host with an
    NVIDIA device whose loaded module is missing or another version), never for a container.
  - Fails when the pinned driver branch cannot run O(required_cuda).
  - Read-only; the logic lives in C(module_utils/nvidia_driver.py).
version_added: "1.0.0"
author:
  - llm-onprem contributors
options:
  gpu:
    description: The registered result of the gpu_facts module.
    type: dict
    required: true
  packages:
    description: Driver packages whose installed versions are read.
    type: list
    elements: str
    default: []
  pin_packages:
    description: apt_preferences globs of the branch-pinned packages; the first installed package matching one gives the installed driver version.
    type: list
    elements: str
    default: []
  branch:
    description: Pinned driver branch (e.g. C(580)).
    type: str
    required: true
  version:
    description: Exact pinned upstream driver version within the branch; empty for the newest of the branch.
    type: str
    default: ""
  install:
    description: C(auto) (hosts with an NVIDIA device), C(always), C(never).
    type: str
    choices: [auto, always, never]
    default: auto
  container:
    description: The host is a container (no kernel of its own).
    type: bool
    default: false
  required_cuda:
    description: CUDA major.minor the driver must run (torch's wheels); empty for no check.
    type: str
    default: ""
  proc_version:
    description: Where the loaded module reports its version.
    type: path
    default: /proc/driver/nvidia/version
attributes:
  check_mode:
    support: full
    description: The module only reads.
  diff_mode:
    support: none
    description: Nothing changes.
"""

EXAMPLES = r"""
- name: Read the GPU facts
  gpu_facts:
    collect_topology: false
    collect_processes: false
  register: gpu

- name: Decide what to do with the driver
  nvidia_driver_state:
    gpu: "{{ gpu }}"
    packages: [nvidia-driver-cuda, nvidia-kernel-open-dkms]
    pin_packages: ["nvidia-*"]
    branch: "580"
    required_cuda: "13.0"
  register: driver
"""

RETURN = r"""
action:
  description: C(skip) (nothing to manage), C(keep) (the pinned driver works; its packages are left alone) or C(install).
  returned: always
  type: str
  sample: install
msg:
  description: Why, in a sentence an operator can act on.
  returned: always
  type: str
installed:
  description: Installed versions of O(packages) (absent ones are left out).
  returned: always
  type: dict
  sample: {"nvidia-driver-cuda": "580.159.04-1"}
installed_driver_version:
  description: Package version of the first installed branch-pinned package, or null.
  returned: always
  type: str
loaded_version:
  description: Version of the loaded NVIDIA kernel module, or null.
  returned: always
  type: str
  sample: 580.159.04
gpu_present:
  description: An NVIDIA device is visible (working driver or on the PCI bus).
  returned: always
  type: bool
reboot_needed:
  description: A reboot would load the installed driver.
  returned: always
  type: bool
reboot_reason:
  description: Why a reboot is or is not needed.
  returned: always
  type: str
cuda_check:
  description: The driver branch / CUDA compatibility sentence.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.nvidia_driver import (
    branch_pinned,
    branch_supports_cuda,
    decide,
    parse_dpkg_query,
    parse_proc_version,
    reboot_needed,
    valid_branch,
    valid_upstream,
)

C_LOCALE = {"LC_ALL": "C", "LANG": "C"}


def read_installed(module, packages):
    if not packages:
        return {}
    dpkg_query = module.get_bin_path("dpkg-query", required=True)
    rc, out, err = module.run_command(
        [dpkg_query, "-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n", *packages],
        environ_update=C_LOCALE)
    # rc 1: some packages unknown to dpkg (never installed); that is normal.
    if rc not in (0, 1):
        module.fail_json(msg=f"dpkg-query failed (rc={rc}): the dpkg database cannot be read", rc=rc,
                         stdout=out, stderr=err)
    return parse_dpkg_query(out)


def read_loaded(path, gpu):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            version = parse_proc_version(handle.read())
    except OSError:
        version = None
    return version or (gpu.get("driver_version") if gpu.get("state") == "ok" else None)


def main():
    module = AnsibleModule(
        argument_spec={
            "gpu": {"type": "dict", "required": True},
            "packages": {"type": "list", "elements": "str", "default": []},
            "pin_packages": {"type": "list", "elements": "str", "default": []},
            "branch": {"type": "str", "required": True},
            "version": {"type": "str", "default": ""},
            "install": {"type": "str", "choices": ["auto", "always", "never"], "default": "auto"},
            "container": {"type": "bool", "default": False},
            "required_cuda": {"type": "str", "default": ""},
            "proc_version": {"type": "path", "default": "/proc/driver/nvidia/version"},
        },
        supports_check_mode=True,
    )
    p = module.params
    if not valid_branch(p["branch"]):
        module.fail_json(msg=f"driver branch {p['branch']!r} is not a branch number like 580")
    if p["version"] and not (valid_upstream(p["version"]) and p["version"].split(".")[0] == p["branch"]):
        module.fail_json(msg=(f"driver version {p['version']!r} is not an upstream version of branch "
                              f"{p['branch']} (like {p['branch']}.159.04)"))
    ok, cuda_check = branch_supports_cuda(p["branch"], p["required_cuda"])
    if not ok:
        module.fail_json(msg=cuda_check, cuda_check=cuda_check)
    gpu = p["gpu"]
    action, msg = decide(gpu, p["install"], p["branch"], p["version"], p["container"])
    installed = read_installed(module, p["packages"]) if action != "skip" else {}
    driver_version = next((installed[name] for name in p["packages"]
                           if name in installed and branch_pinned(name, p["pin_packages"])), None)
    loaded = read_loaded(p["proc_version"], gpu)
    present = bool(gpu.get("has_gpu")) or bool(gpu.get("pci_gpus"))
    needed, reason = reboot_needed(present, p["container"], loaded, driver_version)
    module.exit_json(changed=False, action=action, msg=msg, installed=installed,
                     installed_driver_version=driver_version, loaded_version=loaded, gpu_present=present,
                     reboot_needed=needed and action != "skip", reboot_reason=reason, cuda_check=cuda_check)


if __name__ == "__main__":
    main()

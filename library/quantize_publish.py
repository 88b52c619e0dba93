#!/usr/bin/python
# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module quantize_publish: thin wrapper over module_utils/quantize.py."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: quantize_publish
short_description: Check a quantized checkpoint in staging and publish it atomically with its recipe stamp
version_added: "1.0.0"
description:
  - Plans the recipe again exactly as M(quantize_plan) does (same options), so what is published is
    what was planned.
  - Checks the worker's output in C(<store>/<name>/.staging-<revision>) against the recipe and the
    source's layers (config.json's quantization_config, quantized layers stored packed, kept layers and
    embeddings in 16-bit) and the worker's report (the generation check ran when asked).
  - Writes the stamp C(llm-onprem-quantize.json) (recipe, hash, source digest, versions, wall time,
    peak RSS, output size) into the staging directory, sets owner and modes, and renames it to
    C(<store>/<name>/<revision>) in one step. The C(current) link is left to the caller.
  - Removes published outputs of this name beyond O(keep_old), never the new one or the C(current)
    link's target.
  - Does nothing when the recipe's output is already published. On any error nothing is published
    and the previous outputs are untouched.
extends_documentation_fragment:
  - quantize_recipe
options:
  owner:
    description: Owner of the published files.
    type: str
    required: true
  group:
    description: Group of the published files.
    type: str
    required: true
  mode:
    description: Mode of files.
    type: raw
    default: "0640"
  directory_mode:
    description: Mode of directories.
    type: raw
    default: "0750"
  keep_old:
    description: Older published outputs kept besides the new one and the current link's target.
    type: int
    default: 1
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author: llm-onprem contributors
"""

EXAMPLES = r"""
- name: Publish the INT4 checkpoint of the 32B
  quantize_publish:
    name: DeepSeek-R1-Distill-Qwen-32B-W4A16
    source: DeepSeek-R1-Distill-Qwen-32B
    ignore: [lm_head]
    owner: llm-onprem
    group: llm-onprem
"""

RETURN = r"""
published_path:
  description: C(<store>/<name>/<revision>).
  type: str
  returned: success
revision:
  description: The output directory name (first 12 hex digits of the recipe hash).
  type: str
  returned: success
stamp:
  description: The stamp written (recipe, recipe_hash, source, versions, wall_seconds, peak_rss_bytes, output_bytes, ...).
  type: dict
  returned: changed
removed:
  description: Older output directories removed.
  type: list
  returned: success
error_kind:
  description: On failure, invalid, ignore, fused, source, checkpoint, publish or verify.
  type: str
  returned: failure
"""

import grp
import json
import os
import pwd
import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.quantize import (
    ARGUMENT_SPEC,
    QuantizeError,
    module_params,
    plan,
    prune_list,
    publish,
    published_outputs,
)


def _mode(module, value, name):
    try:
        return int(str(value), 8)
    except ValueError:
        module.fail_json(msg=f"{name} must be an octal mode such as '0640', not {value!r}")


def main():
    spec = dict(ARGUMENT_SPEC)
    spec.update(
        owner={"type": "str", "required": True},
        group={"type": "str", "required": True},
        mode={"type": "raw", "default": "0640"},
        directory_mode={"type": "raw", "default": "0750"},
        keep_old={"type": "int", "default": 1},
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    try:
        uid, gid = pwd.getpwnam(p["owner"]).pw_uid, grp.getgrnam(p["group"]).gr_gid
    except KeyError:
        module.fail_json(msg=f"owner {p['owner']} or group {p['group']} does not exist on the host")
    try:
        planned = plan(module_params(p))
    except QuantizeError as exc:
        module.fail_json(msg=f"{p['name']}: {exc.message}", error_kind=exc.kind)
    result = {"published_path": planned["published_path"], "revision": planned["revision"], "removed": []}
    if planned["published"]:
        module.exit_json(changed=False, **result)
    diff = {"before": f"{p['name']}: {planned['revision']} not published\n",
            "after": f"{p['name']}: {planned['published_path']} published\n"}
    if module.check_mode:
        module.exit_json(changed=True, diff=diff, **result)
    report_path = planned["paths"]["report"]
    try:
        with open(report_path, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError) as exc:
        module.fail_json(msg=f"{p['name']}: the worker's report {report_path} is missing or unreadable ({exc}); "
                         "nothing was published", error_kind="publish")
    try:
        stamp = publish(planned, report, uid, gid, _mode(module, p["mode"], "mode"),
                        _mode(module, p["directory_mode"], "directory_mode"))
    except QuantizeError as exc:
        module.fail_json(msg=f"{p['name']}: {exc.message}", error_kind=exc.kind)
    except OSError as exc:
        module.fail_json(msg=f"{p['name']}: publishing failed ({exc}); the previous outputs are untouched",
                         error_kind="publish")
    os.unlink(report_path)
    protect = {planned["revision"], os.path.basename(planned["current_target"])}
    removed = prune_list(published_outputs(planned["paths"]["model_dir"]), p["keep_old"], protect)
    for name in removed:
        shutil.rmtree(os.path.join(planned["paths"]["model_dir"], name))
    result.update(stamp=stamp, removed=removed)
    module.exit_json(changed=True, diff=diff, **result)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module quantize_plan: thin wrapper over module_utils/quantize.py."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: quantize_plan
short_description: Check a quantization recipe against the model's layers and say whether it is already published
version_added: "1.0.0"
description:
  - Reads the source checkpoint's safetensors headers (no torch needed), finds its Linear layers and
    checks the ignore list against them. Entries are leaf names (C(lm_head), C(q_proj)), full module
    names or C(re:<regex>). A name that matches no layer, or a fused group kept only in part
    (q/k/v, gate/up; vLLM refuses mixed schemes), is an error that lists the valid names.
  - Computes the canonical recipe (scheme, method, group size, ignore list, pipeline, calibration file
    digest, source checkpoint digest) and its sha256; the output directory is
    C(<store>/<name>/<first 12 hex>). O(published) is true when that directory carries a stamp with
    the same hash.
  - Chooses the pipeline for O(pipeline=auto) (model_free, shard by shard, for data-free RTN of a
    checkpoint of at least O(model_free_min_bytes); oneshot otherwise) and returns the worker's job.
  - Changes nothing.
extends_documentation_fragment:
  - quantize_recipe
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author: llm-onprem contributors
"""

EXAMPLES = r"""
- name: Plan the INT4 checkpoint of the 32B
  quantize_plan:
    name: DeepSeek-R1-Distill-Qwen-32B-W4A16
    source: DeepSeek-R1-Distill-Qwen-32B
    ignore: [lm_head, q_proj, k_proj, v_proj]
  register: plan
"""

RETURN = r"""
published:
  description: The output directory for this recipe exists with a matching stamp.
  type: bool
  returned: success
published_path:
  description: C(<store>/<name>/<revision>).
  type: str
  returned: success
revision:
  description: First 12 hex digits of the recipe hash (the output directory name).
  type: str
  returned: success
recipe:
  description: The canonical recipe.
  type: dict
  returned: success
recipe_hash:
  description: sha256 of the canonical recipe.
  type: str
  returned: success
ignore:
  description: The ignore list as llm-compressor receives it (leaf names become C(re:) patterns).
  type: list
  returned: success
modules:
  description: Counts of Linear layers (C(linear), C(quantized)) and the names of those kept (C(kept)).
  type: dict
  returned: success
pipeline:
  description: The chosen pipeline.
  type: str
  returned: success
source_path:
  description: The real source checkpoint directory.
  type: str
  returned: success
source_bytes:
  description: Size of the source's safetensors files.
  type: int
  returned: success
source_digest:
  description: C(kind) (verified-stamp or listing) and C(sha256) of the source.
  type: dict
  returned: success
current_target:
  description: Target of C(<store>/<name>/current) now ("" when absent).
  type: str
  returned: success
paths:
  description: model_dir, output, staging, job, report, current and cache paths.
  type: dict
  returned: success
job:
  description: The worker's job (roles/quantize/files/quantize_worker.py).
  type: dict
  returned: success
error_kind:
  description: On failure, invalid, ignore, fused, source or checkpoint.
  type: str
  returned: failure
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.quantize import ARGUMENT_SPEC, QuantizeError, module_params, plan


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result = plan(module_params(module.params))
    except QuantizeError as exc:
        module.fail_json(msg=f"{module.params['name']}: {exc.message}", error_kind=exc.kind)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()

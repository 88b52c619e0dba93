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
options:
  name:
    description: Output model name under O(store) (one directory name).
    type: str
    required: true
  source:
    description: A model store name (its C(current) revision is used) or an absolute checkpoint directory.
    type: str
    required: true
  store:
    description: Root of the model store.
    type: path
    default: /var/lib/llm-onprem/models
  scheme:
    description: Quantization scheme (W4A16 int4 weights; W8A8 int8 weights and dynamic int8 activations).
    type: str
    default: W4A16
    choices: [W4A16, W8A8]
  method:
    description: rtn (data-free round-to-nearest) or gptq (needs O(calibration_path)).
    type: str
    default: rtn
    choices: [rtn, gptq]
  group_size:
    description: Weight group size for W4A16 (32, 64, 128 or 256).
    type: int
    default: 128
  ignore:
    description: Layers kept in 16-bit.
    type: list
    elements: str
    default: [lm_head]
  pipeline:
    description: auto, oneshot (whole model in memory) or model_free (shard by shard, data-free).
    type: str
    default: auto
    choices: [auto, oneshot, model_free]
  model_free_min_bytes:
    description: With O(pipeline=auto), data-free checkpoints at least this large use model_free.
    type: int
    default: 17179869184
  device:
    description: Where the worker computes.
    type: str
    default: cpu
    choices: [cpu, gpu]
  calibration_path:
    description: Calibration texts on the host for gptq (.jsonl with a C(text) key per line, or .txt, one sample a line).
    type: path
  calibration_samples:
    description: Calibration samples used (gptq).
    type: int
    default: 256
  calibration_max_seq_length:
    description: Tokens per calibration sample (gptq).
    type: int
    default: 2048
  generate_tokens:
    description: Tokens the worker generates from the result as a check (0 = none).
    type: int
    default: 16
  generate_max_bytes:
    description: The generation check runs only for checkpoints up to this size (it loads the whole model).
    type: int
    default: 17179869184
  prompt:
    description: User message of the generation check.
    type: str
    default: Say hello in one short sentence.
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

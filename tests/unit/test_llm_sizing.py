"""Unit tests for module_utils/llm_sizing.py and library/llm_sizing.py."""

from __future__ import annotations

import json

import gpu_facts as gf
import llm_sizing as ls
import pytest
from conftest import read_capture
from test_gpu_facts import run_module

GIB = 1024 ** 3
MIB = 1024 ** 2
KIB = 1024
M32 = "DeepSeek-R1-Distill-Qwen-32B"

# facts.md: KV per token (bf16), parameters, bf16 weights in GB.
FACTS = [
    ("DeepSeek-R1-Distill-Qwen-7B", 56 * KIB, 7.62e9, 15.2e9, 28),
    ("DeepSeek-R1-Distill-Llama-8B", 128 * KIB, 8.03e9, 16.06e9, 32),
    ("DeepSeek-R1-Distill-Qwen-14B", 192 * KIB, 14.77e9, 29.54e9, 40),
    (M32, 256 * KIB, 32_763_876_352, 65.53e9, 40),
    ("DeepSeek-R1-Distill-Llama-70B", 320 * KIB, 70.55e9, 141.1e9, 64),
]


@pytest.mark.parametrize(("model", "kv", "params", "weights", "heads"), FACTS)
def test_catalog_matches_facts(model, kv, params, weights, heads):
    arch = ls.load_model(model)
    assert arch["heads"] == heads
    assert ls.kv_bytes_per_token(arch, 2) == kv
    assert ls.kv_bytes_per_token(arch, 1) == kv // 2  # fp8 KV cache
    assert ls.param_count(arch) == pytest.approx(params, rel=0.001)
    _, _, checkpoint = ls.weight_bytes_per_gpu(arch, "bf16")
    assert checkpoint == pytest.approx(weights, rel=0.003)


def test_32b_bf16_pinned_to_h200_load():
    """facts.md: a real bf16 load on an H200 allocated 65,529,851,392 bytes; KV grew 262,144 B/token."""
    arch = ls.load_model(M32)
    assert ls.param_count(arch) == 32_763_876_352
    per_gpu, _, checkpoint = ls.weight_bytes_per_gpu(arch, "bf16")
    assert checkpoint == 2 * 32_763_876_352
    assert abs(per_gpu - 65_529_851_392) <= 4 * KIB
    result = ls.plan(M32, max_model_len=32768, gpu_memory=["143771MiB"])
    assert abs(result["weights_bytes"] - 65_529_851_392) <= 4 * KIB
    assert result["kv_bytes_per_token"] == 262_144


@pytest.mark.parametrize(("weights", "keep", "low", "high"), [
    ("w4a16", ["lm_head"], 19.2e9, 19.3e9),  # published INT4 checkpoints: 19.2-19.3 GB
    ("w4a16", ["lm_head", "q_proj", "k_proj", "v_proj"], 22.6e9, 22.8e9),  # + ~3.5 GB
    ("gptq", ["lm_head"], 19.2e9, 19.5e9),  # zero points add a little
    ("fp8", ["lm_head"], 34.2e9, 34.5e9),  # 31.2 G linear bytes + 3.1 GB 16-bit embeddings
    ("w8a8", ["lm_head"], 34.2e9, 34.5e9),
    ("fp16", ["lm_head"], 65.5e9, 65.6e9),
])
def test_quantized_checkpoint_sizes(weights, keep, low, high):
    _, _, checkpoint = ls.weight_bytes_per_gpu(ls.load_model(M32), weights, keep_16bit=keep)
    assert low <= checkpoint <= high


def test_lm_head_quantized_when_not_kept():
    arch = ls.load_model(M32)
    kept = ls.weight_bytes_per_gpu(arch, "w4a16", keep_16bit=["lm_head"])[2]
    quantized = ls.weight_bytes_per_gpu(arch, "w4a16", keep_16bit=[])[2]
    assert kept - quantized == pytest.approx(152064 * 5120 * (2 - 0.5 - 2 / 128), rel=0.01)


@pytest.mark.parametrize(("tp", "kv_per_gpu"), [(1, 256 * KIB), (2, 128 * KIB), (4, 64 * KIB), (8, 32 * KIB),
                                                (10, 32 * KIB), (20, 32 * KIB), (40, 32 * KIB)])
def test_kv_split_by_tp_up_to_kv_heads(tp, kv_per_gpu):
    assert ls.kv_bytes_per_token(ls.load_model(M32), 2, tp=tp) == kv_per_gpu


@pytest.mark.parametrize(("model", "weights", "valid"), [
    (M32, "bf16", [1, 2, 4, 8]),  # 5 divides the 40 heads but not the 8 KV heads; 40 not the MLP width
    (M32, "w4a16", [1, 2, 4, 8]),
    ("DeepSeek-R1-Distill-Qwen-14B", "bf16", [1, 2, 4, 8]),
    ("DeepSeek-R1-Distill-Qwen-14B", "w4a16", [1, 2, 4]),  # 13824 / 8 = 1728 is not whole groups of 128
    ("DeepSeek-R1-Distill-Qwen-7B", "bf16", [1, 2, 4]),  # 28 heads, 4 KV heads, MLP 18944
    ("DeepSeek-R1-Distill-Llama-70B", "bf16", [1, 2, 4, 8, 16, 32, 64]),
    ("DeepSeek-R1-Distill-Llama-70B", "w4a16", [1, 2, 4, 8, 16, 32]),
])
def test_valid_tp_sizes(model, weights, valid):
    assert ls.valid_tp_sizes(ls.load_model(model), weights, 128) == valid


@pytest.mark.parametrize(("model", "weights", "tp", "words"), [
    (M32, "bf16", 5, "8 KV heads"),
    ("DeepSeek-R1-Distill-Qwen-14B", "w4a16", 8, "w4a16 groups of 128"),
])
def test_tp_that_vllm_cannot_shard_is_an_error(model, weights, tp, words):
    with pytest.raises(ls.SizingError) as exc:
        ls.plan(model, weights=weights, tensor_parallel_size=tp, max_model_len=4096, gpu_memory=["80GiB"] * tp)
    assert exc.value.field == "tensor_parallel_size" and words in exc.value.message


@pytest.mark.parametrize(("value", "expected"), [
    ("80GiB", 80 * GIB), ("81559MiB", 81559 * MIB), ("48GB", 48 * 10 ** 9), ("48 gb", 48 * 10 ** 9),
    ("1.5GiB", int(1.5 * GIB)), ("512B", 512), (1024, 1024), (0, 0), (2.0 * GIB, 2 * GIB), ("2TiB", 2 * 1024 ** 4),
])
def test_parse_memory(value, expected):
    assert ls.parse_memory(value, "gpu_memory") == expected


@pytest.mark.parametrize(("value", "words"), [
    ("80", "no unit"), ("81559", "no unit"), ("1.5", "no unit"), ("-5GiB", "negative"), (-1, "negative"),
    (1.5, "whole"), ("80 parsecs", "cannot parse"), ("GiB", "cannot parse"), (True, "boolean"), ([80], "expected"),
])
def test_parse_memory_rejects(value, words):
    with pytest.raises(ls.SizingError) as exc:
        ls.parse_memory(value, "gpu_memory[0]")
    assert exc.value.field == "gpu_memory[0]"
    assert words in exc.value.message


QWEN_CONFIG = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 5120,
    "intermediate_size": 27648, "num_attention_heads": 40, "num_hidden_layers": 64,
    "num_key_value_heads": 8, "vocab_size": 152064, "max_position_embeddings": 131072,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}


@pytest.mark.parametrize("dtype_key", ["dtype", "torch_dtype"])
def test_config_json_equals_catalog(tmp_path, dtype_key):
    cfg = {k: v for k, v in QWEN_CONFIG.items() if k != "torch_dtype"}
    cfg[dtype_key] = "bfloat16"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    from_file = ls.plan(config_path=str(path), max_model_len=8192, gpu_memory=["80GiB"])
    from_catalog = ls.plan(M32, max_model_len=8192, gpu_memory=["80GiB"])
    for key in ("weights_bytes", "kv_bytes_per_token", "kv_cache_tokens", "vllm_args", "params"):
        assert from_file[key] == from_catalog[key], key


def test_config_head_dim_and_dtype_defaults():
    cfg = dict(QWEN_CONFIG, torch_dtype="float16", num_key_value_heads=None)
    arch = ls.model_from_config(cfg)
    assert arch["head_dim"] == 128 and arch["kv_heads"] == 40 and arch["dtype"] == "float16"
    arch = ls.model_from_config(dict(QWEN_CONFIG, head_dim=64))
    assert arch["head_dim"] == 64


@pytest.mark.parametrize(("change", "field"), [
    ({"hidden_size": None}, "config.json:hidden_size"),
    ({"num_hidden_layers": None}, "config.json:num_hidden_layers"),
    ({"vocab_size": None}, "config.json:vocab_size"),
    ({"num_attention_heads": None}, "config.json:num_attention_heads"),
    ({"intermediate_size": -1}, "config.json:intermediate_size"),
    ({"hidden_size": 5121}, "config.json:head_dim"),
    ({"torch_dtype": "int3"}, "config.json:dtype"),
    ({"num_key_value_heads": "eight"}, "config.json:num_key_value_heads"),
])
def test_config_errors_name_the_field(change, field):
    cfg = dict(QWEN_CONFIG)
    for key, value in change.items():
        if value is None:
            cfg.pop(key)
        else:
            cfg[key] = value
    with pytest.raises(ls.SizingError) as exc:
        ls.plan(config=cfg, gpu_memory=["80GiB"], max_model_len=4096)
    assert exc.value.field == field


def test_config_path_errors(tmp_path):
    with pytest.raises(ls.SizingError, match="cannot read"):
        ls.load_model(config_path=str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ls.SizingError, match="not valid JSON"):
        ls.load_model(config_path=str(bad))


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"model": "DeepSeek-R1-Distill-Qwen-33B"}, "model"),
    ({"model": None}, "model"),
    ({"tensor_parallel_size": 3}, "tensor_parallel_size"),
    ({"tensor_parallel_size": 16}, "tensor_parallel_size"),
    ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
    ({"tensor_parallel_size": 2.5}, "tensor_parallel_size"),
    ({"pipeline_parallel_size": -1}, "pipeline_parallel_size"),
    ({"pipeline_parallel_size": 65}, "pipeline_parallel_size"),
    ({"gpu_memory_utilization": 0}, "gpu_memory_utilization"),
    ({"gpu_memory_utilization": 1.01}, "gpu_memory_utilization"),
    ({"gpu_memory_utilization": -0.5}, "gpu_memory_utilization"),
    ({"gpu_memory_utilization": "lots"}, "gpu_memory_utilization"),
    ({"gpu_memory_utilization": True}, "gpu_memory_utilization"),
    ({"max_model_len": -4096}, "max_model_len"),
    ({"max_model_len": 262144}, "max_model_len"),
    ({"max_model_len": "32k"}, "max_model_len"),
    ({"max_num_seqs": -1}, "max_num_seqs"),
    ({"max_num_batched_tokens": 16, "max_num_seqs": 64}, "max_num_batched_tokens"),
    ({"weights": "int3"}, "weights"),
    ({"kv_cache_dtype": "int8"}, "kv_cache_dtype"),
    ({"weights_group_size": 0}, "weights_group_size"),
    ({"weights_keep_16bit": ["mlp"]}, "weights_keep_16bit"),
    ({"gpu_memory": ["80"]}, "gpu_memory[0]"),
    ({"gpu_memory": ["80GiB", "-1GiB"]}, "gpu_memory[1]"),
    ({"gpu_memory": ["0GiB"]}, "gpu_memory[0]"),
    ({"gpu_memory": []}, "gpus"),
    ({"gpu_memory": None, "gpus": [{"name": "x"}]}, "gpus[0].memory_total_bytes"),
    ({"gpu_memory": None, "gpus": ["H100"]}, "gpus[0]"),
])
def test_bad_input_names_the_field(kwargs, field):
    args = {"model": M32, "gpu_memory": ["80GiB"], "max_model_len": 4096}
    args.update(kwargs)
    with pytest.raises(ls.SizingError) as exc:
        ls.plan(**args)
    assert exc.value.field == field
    assert field in str(exc.value)


def test_h200_fixture_plan(h200):
    gpus = gf.parse_smi_xml(read_capture(h200 / "nvidia-smi-q.xml")[0])
    result = ls.plan(M32, max_model_len=32768, gpus=gpus)
    row = result["per_gpu"][0]
    # torch total from torch-env.txt is 150,109,880,320 B; the basis must not exceed it.
    assert 150_109_880_320 - MIB <= row["memory_basis_bytes"] <= 150_109_880_320
    assert row["memory_basis"] == "nvidia-smi total - driver reserved"
    assert result["fits"] is True
    assert result["max_num_seqs"] == 1024 and result["max_num_batched_tokens"] == 8192  # >= 70 GiB defaults
    assert result["kv_cache_tokens"] % 16 == 0
    assert result["vllm_args"] == ["--tensor-parallel-size", "1", "--pipeline-parallel-size", "1",
                                   "--max-model-len", "32768", "--max-num-seqs", "1024",
                                   "--max-num-batched-tokens", "8192", "--gpu-memory-utilization", "0.9"]


def test_busy_h200_free_memory_check(h200):
    text = read_capture(h200 / "busy-query-gpu.csv")[0]
    gpus = gf.parse_smi_csv(text, fields=["index", "uuid", "name", "memory.total", "memory.used", "memory.free"])
    result = ls.plan(M32, max_model_len=32768, gpus=gpus)
    assert result["fits"] is False
    assert any("free memory" in r and "other processes" in r for r in result["reasons"])
    util = [s for s in result["suggestions"] if s["variable"] == "llm_gpu_memory_utilization"]
    assert util and util[0]["value"] == 0.85
    again = ls.plan(M32, max_model_len=32768, gpus=gpus, gpu_memory_utilization=util[0]["value"])
    assert again["fits"] is True


def test_h100_32b_bf16_at_32k_does_not_fit_and_suggestions_do():
    result = ls.plan(M32, max_model_len=32768, gpu_memory=["81559MiB"])
    assert result["fits"] is False
    assert "largest max_model_len" in result["reasons"][0]
    by_var = {s["variable"]: s for s in result["suggestions"]}
    assert set(by_var) >= {"llm_max_model_len", "llm_tensor_parallel_size", "llm_weights"}
    assert by_var["llm_tensor_parallel_size"]["value"] == 2
    length = by_var["llm_max_model_len"]["value"]
    assert ls.plan(M32, max_model_len=length, gpu_memory=["81559MiB"])["fits"] is True
    assert ls.plan(M32, max_model_len=length + 1024, gpu_memory=["81559MiB"])["fits"] is False
    assert ls.plan(M32, max_model_len=32768, gpu_memory=["81559MiB"], weights="w4a16")["fits"] is True


def test_default_max_model_len_is_131072_and_fails_on_one_gpu():
    result = ls.plan(M32, gpu_memory=["81559MiB"])
    assert result["max_model_len"] == 131072
    assert result["fits"] is False


@pytest.mark.parametrize(("mem", "name", "expected"), [
    ("141GB", "NVIDIA H200", (8192, 1024)),
    ("81559MiB", "NVIDIA H100 80GB HBM3", (8192, 1024)),
    ("81920MiB", "NVIDIA A100-SXM4-80GB", (2048, 256)),
    ("46068MiB", "NVIDIA A40", (2048, 256)),
    ("24564MiB", "NVIDIA GeForce RTX 4090", (2048, 256)),
])
def test_vllm_batch_defaults(mem, name, expected):
    gpus = [{"name": name, "memory_total_bytes": ls.parse_memory(mem)}]
    result = ls.plan("DeepSeek-R1-Distill-Qwen-7B", max_model_len=4096, gpus=gpus)
    assert (result["max_num_batched_tokens"], result["max_num_seqs"]) == expected
    assert result["max_num_seqs_default"] and result["max_num_batched_tokens_default"]


def test_24gb_card_int4_32b_leaves_about_one_gib():
    """facts.md: INT4 32B on a 24 GB card leaves about 1 GiB for the KV cache."""
    fewer = ls.plan(M32, weights="w4a16", max_model_len=4096, max_num_seqs=8, gpu_memory=["24564MiB"])
    assert fewer["fits"] is True and 0.5 * GIB < fewer["kv_cache_bytes"] < 2 * GIB
    default = ls.plan(M32, weights="w4a16", max_model_len=2048, gpu_memory=["24564MiB"])  # 256 sequences
    assert default["fits"] is True and 0.25 * GIB < default["kv_cache_bytes"] < 1.5 * GIB
    # 4k context needs fewer sequences (smaller sampler profile and CUDA-graph pool); the plan says how many.
    longer = ls.plan(M32, weights="w4a16", max_model_len=4096, gpu_memory=["24564MiB"])
    assert longer["fits"] is False
    seqs = [s for s in longer["suggestions"] if s["variable"] == "llm_max_num_seqs"]
    assert seqs and seqs[0]["value"] < 256
    assert ls.plan(M32, weights="w4a16", max_model_len=4096, max_num_seqs=seqs[0]["value"],
                   gpu_memory=["24564MiB"])["fits"] is True
    assert ls.plan(M32, weights="w4a16", max_model_len=32768, gpu_memory=["24564MiB"])["fits"] is False


def test_two_a40_int4_32k_16_users():
    result = ls.plan(M32, weights="w4a16", tensor_parallel_size=2, max_model_len=32768, max_num_seqs=16,
                     gpu_memory=["46068MiB", "46068MiB"])
    assert result["fits"] is True
    assert result["kv_bytes_per_token_per_gpu"] == 128 * KIB
    assert result["max_concurrency"] > 4
    assert len(result["per_gpu"]) == 2


def test_fp8_kv_doubles_tokens():
    auto = ls.plan(M32, max_model_len=8192, gpu_memory=["141GB"])
    fp8 = ls.plan(M32, max_model_len=8192, gpu_memory=["141GB"], kv_cache_dtype="fp8")
    assert fp8["kv_cache_tokens"] == pytest.approx(2 * auto["kv_cache_tokens"], abs=16)
    assert fp8["vllm_args"][-2:] == ["--kv-cache-dtype", "fp8"]
    assert "--kv-cache-dtype" not in auto["vllm_args"]


def test_fp8_kv_suggested_when_it_is_enough():
    # vLLM's H100 defaults (1024 sequences): about 6k tokens in bf16 KV, 12k in fp8.
    result = ls.plan(M32, max_model_len=8192, gpu_memory=["81559MiB"])
    assert result["fits"] is False
    assert "llm_kv_cache_dtype" in {s["variable"] for s in result["suggestions"]}


def test_estimates_are_monotonic():
    base = {"model": M32, "max_model_len": 8192, "gpu_memory": ["141GB"]}
    tokens = [ls.plan(**base, gpu_memory_utilization=u)["kv_cache_tokens"] for u in (0.7, 0.8, 0.9, 0.95)]
    assert tokens == sorted(tokens) and len(set(tokens)) == 4
    tokens = [ls.plan(**base, max_num_batched_tokens=b, max_num_seqs=64)["kv_cache_tokens"]
              for b in (2048, 8192, 32768)]
    assert tokens == sorted(tokens, reverse=True)
    eager = ls.plan(**base, enforce_eager=True)
    assert eager["kv_cache_tokens"] > ls.plan(**base)["kv_cache_tokens"]
    assert "--enforce-eager" in eager["vllm_args"]


def test_safety_margin_and_overheads_are_subtracted():
    result = ls.plan(M32, max_model_len=8192, gpu_memory=["141GB"])
    row = result["per_gpu"][0]
    left = (row["budget_bytes"] - row["weights_bytes"] - row["activation_peak_bytes"] - row["non_torch_bytes"]
            - row["cuda_graph_bytes"] - row["safety_margin_bytes"])
    assert row["kv_cache_bytes"] == left
    assert row["safety_margin_bytes"] >= max(256 * MIB, int(0.015 * row["budget_bytes"]))
    assert row["kv_cache_tokens"] == left // (row["kv_bytes_per_token"] * 16) * 16


def test_pipeline_parallel_70b():
    result = ls.plan("DeepSeek-R1-Distill-Llama-70B", tensor_parallel_size=4, pipeline_parallel_size=2,
                     max_model_len=32768, gpu_memory=["81559MiB"] * 8)
    assert result["fits"] is True
    per_gpu = result["weights_bytes_per_gpu"]
    assert 141.1e9 / 8 < per_gpu < 141.1e9 / 8 * 1.1
    assert result["kv_bytes_per_token_per_gpu"] == 320 * KIB // 4 // 2
    assert result["vllm_args"][:4] == ["--tensor-parallel-size", "4", "--pipeline-parallel-size", "2"]


def test_pipeline_parallel_across_nodes_assumes_same_nodes():
    result = ls.plan("DeepSeek-R1-Distill-Llama-70B", tensor_parallel_size=4, pipeline_parallel_size=2,
                     max_model_len=8192, gpu_memory=["81559MiB"] * 4)
    assert result["placement"].startswith("multi node")
    assert any("assumes 2 nodes" in w for w in result["warnings"])


def test_not_enough_gpus():
    result = ls.plan(M32, tensor_parallel_size=4, max_model_len=8192, gpu_memory=["80GiB"] * 2)
    assert result["fits"] is False
    assert any("needs tensor_parallel_size x pipeline_parallel_size = 4 GPUs" in r for r in result["reasons"])


def test_70b_on_one_gpu_weights_do_not_fit():
    result = ls.plan("DeepSeek-R1-Distill-Llama-70B", max_model_len=8192, gpu_memory=["81559MiB"])
    assert result["fits"] is False
    assert any("weights" in r and "do not fit" in r for r in result["reasons"])
    tp = [s for s in result["suggestions"] if s["variable"] == "llm_tensor_parallel_size"]
    # 64 heads allow TP 2, but 65.7 GiB of weights per GPU leave no KV room in 0.9 x 79 GiB.
    assert tp and tp[0]["value"] == 4
    assert ls.plan("DeepSeek-R1-Distill-Llama-70B", tensor_parallel_size=2, max_model_len=8192,
                   gpu_memory=["81559MiB"] * 2)["fits"] is False


def test_mig_instances_are_devices(local_gpu):
    gpus = gf.parse_smi_xml(read_capture(local_gpu / "a100-mig-nvidia-smi-q.xml")[0])
    one = ls.plan("DeepSeek-R1-Distill-Qwen-7B", max_model_len=8192, gpus=gpus)
    assert one["per_gpu"][0]["memory_total_bytes"] == 40192 * MIB
    assert any("MIG" in w for w in one["warnings"])
    two = ls.plan("DeepSeek-R1-Distill-Qwen-7B", tensor_parallel_size=2, max_model_len=8192, gpus=gpus)
    assert two["fits"] is False and any("MIG" in r for r in two["reasons"])


def test_cpu_plan_tiny_config():
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 256,
           "intermediate_size": 768, "num_attention_heads": 4, "num_key_value_heads": 2,
           "num_hidden_layers": 2, "vocab_size": 4096, "max_position_embeddings": 4096,
           "dtype": "bfloat16", "torch_dtype": "bfloat16"}
    result = ls.plan_cpu(model="tiny-r1", config=cfg, max_model_len=2048, max_num_seqs=8,
                         kv_cache_memory_bytes=268435456, host_memory_bytes="24GiB")
    assert result["engine"] == "vllm-cpu" and result["vllm_release"] == "0.32.0"
    assert result["fits"] is True
    assert result["vllm_args"] == ["--max-model-len", "2048", "--max-num-seqs", "8", "--max-num-batched-tokens", "2048",
                                   "--dtype", "bfloat16", "--kv-cache-memory-bytes", "268435456"]
    assert not any("gpu-memory-utilization" in a for a in result["vllm_args"])
    kv = 2 * 2 * 2 * 64 * 2  # K and V, 2 layers, 2 KV heads, head_dim 256/4, bf16
    assert result["kv_bytes_per_token"] == kv
    assert result["kv_cache_tokens"] == 268435456 // (kv * 16) * 16
    eager = ls.plan_cpu(model="tiny-r1", config=cfg, max_model_len=2048, max_num_seqs=8,
                        kv_cache_memory_bytes=268435456, enforce_eager=True)
    assert eager["vllm_args"] == result["vllm_args"] + ["--enforce-eager"]
    assert {k: v for k, v in eager.items() if k != "vllm_args"} == {k: v for k, v in result.items() if k != "vllm_args"}


def test_cpu_plan_defaults_and_failures():
    auto = ls.plan_cpu(M32, max_model_len=4096, max_num_seqs=2)
    assert auto["kv_cache_bytes"] == 2 * 4096 * 256 * KIB
    short = ls.plan_cpu(M32, max_model_len=4096, kv_cache_memory_bytes="256MiB")
    assert short["fits"] is False and short["suggestions"][0]["variable"] == "llm_cpu_kv_cache_bytes"
    small_host = ls.plan_cpu(M32, max_model_len=4096, host_memory_bytes="24GiB")
    assert small_host["fits"] is False and "host RAM" in small_host["reasons"][0]
    int4 = ls.plan_cpu("DeepSeek-R1-Distill-Qwen-7B", weights="w4a16", max_model_len=2048,
                       cpu_flags=["avx2", "fma"])
    assert int4["fits"] is False and "AVX512" in int4["reasons"][0]
    ok = ls.plan_cpu("DeepSeek-R1-Distill-Qwen-7B", weights="w4a16", max_model_len=2048,
                     cpu_flags=["avx2", "avx512f"])
    assert ok["fits"] is True
    with pytest.raises(ls.SizingError) as exc:
        ls.plan_cpu(M32, max_model_len=4096, kv_cache_memory_bytes="256")
    assert exc.value.field == "cpu_kv_cache_bytes"


def test_host_ram_and_disk():
    result = ls.plan(M32, max_model_len=8192, gpu_memory=["141GB"])
    assert result["disk_bytes"] == int(result["checkpoint_bytes"] * 1.2)
    assert result["host_ram_bytes"] >= 8 * GIB


# ---------------------------------------------------------------------------
# Public vLLM start-up logs (docs/sizing.md, "Error bounds by share"; data points
# D1-D11 of docs/sizing-small-shares-research.md). Model configs are the models'
# public config.json values.
# ---------------------------------------------------------------------------

QWEN2_7B = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584,
            "intermediate_size": 18944, "num_attention_heads": 28, "num_key_value_heads": 4,
            "num_hidden_layers": 28, "vocab_size": 152064, "max_position_embeddings": 32768,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
QWEN25_1_5B_AWQ = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 1536,
                   "intermediate_size": 8960, "num_attention_heads": 12, "num_key_value_heads": 2,
                   "num_hidden_layers": 28, "vocab_size": 151936, "max_position_embeddings": 32768,
                   "tie_word_embeddings": True, "torch_dtype": "float16"}
LLAMA31_8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
              "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
              "num_hidden_layers": 32, "vocab_size": 128256, "max_position_embeddings": 131072,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16", "attention_bias": False}
QWEN3_0_6B = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 1024,
              "intermediate_size": 3072, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
              "num_hidden_layers": 28, "vocab_size": 151936, "max_position_embeddings": 40960,
              "tie_word_embeddings": True, "torch_dtype": "bfloat16", "attention_bias": False}
QWEN3_32B = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 5120,
             "intermediate_size": 25600, "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 128,
             "num_hidden_layers": 64, "vocab_size": 151936, "max_position_embeddings": 40960,
             "tie_word_embeddings": False, "torch_dtype": "bfloat16", "attention_bias": False}
A100_80, A100_40, RTX_3090, H100 = "81920MiB", "40960MiB", "24576MiB", "81559MiB"  # nvidia-smi memory.total

# (id, config, weights, GPU, share, TP, max_model_len, max_num_seqs, max_num_batched_tokens,
#  the log's KV per GPU in GiB as vLLM 0.32 would keep it ("0.32-eq KV"), how far under it the plan may be).
# The plan must never be above the log; the allowed shortfall is 30 % at shares <= 0.3, 10 % above.
# D9 (Qwen3-32B on one H100, 1024 sequences) keeps 1.5 GiB of 3.95: the 10-copy sampler charge
# (5.8 GiB) is most of a small cache; it is the price of not over-promising D9 itself.
PUBLIC_LOGS = [
    ("D1", QWEN2_7B, "bf16", A100_80, 0.25, 1, 16384, 256, 2048, 4.51, 0.30),
    ("D2", QWEN2_7B, "bf16", A100_80, 0.50, 1, 16384, 256, 2048, 24.33, 0.10),
    ("D3", QWEN2_7B, "bf16", A100_80, 0.25, 2, 16384, 256, 2048, 11.37, 0.30),
    ("D4", QWEN2_7B, "bf16", A100_80, 0.50, 2, 16384, 256, 2048, 31.18, 0.10),
    ("D5", QWEN2_7B, "bf16", A100_40, 0.50, 2, 16384, 256, 2048, 10.03, 0.10),
    ("D6", QWEN25_1_5B_AWQ, "awq", RTX_3090, 0.50, 1, 2048, 256, 2048, 8.75, 0.10),
    ("D7", LLAMA31_8B, "bf16", H100, 0.90, 1, 16000, 1024, 8192, 50.88, 0.10),
    ("D8", QWEN3_0_6B, "bf16", H100, 0.90, 1, 16000, 1024, 8192, 63.95, 0.10),
    ("D9", QWEN3_32B, "bf16", H100, 0.90, 1, 16000, 1024, 8192, 3.95, 0.65),
    ("D10", QWEN3_32B, "bf16", H100, 0.90, 2, 16000, 1024, 8192, 33.99, 0.10),
    ("D11", LLAMA31_8B, "bf16", A100_80, 0.92, 1, 131072, 256, 2048, 56.21, 0.10),
]


@pytest.mark.parametrize(("config", "weights", "gpu", "share", "tp", "max_model_len", "seqs", "batched",
                          "logged_gib", "max_under"),
                         [row[1:] for row in PUBLIC_LOGS], ids=[row[0] for row in PUBLIC_LOGS])
def test_plan_never_over_promises_public_logs(config, weights, gpu, share, tp, max_model_len, seqs, batched,
                                              logged_gib, max_under):
    result = ls.plan(config=config, weights=weights, tensor_parallel_size=tp, max_model_len=max_model_len,
                     max_num_seqs=seqs, max_num_batched_tokens=batched, gpu_memory_utilization=share,
                     gpu_memory=[gpu] * tp)
    planned = result["per_gpu"][0]["kv_cache_bytes"] / GIB
    assert planned <= logged_gib, f"over-promises: plan {planned:.2f} GiB, log {logged_gib} GiB"
    assert planned >= logged_gib * (1 - max_under), (
        f"more than {max_under:.0%} under: plan {planned:.2f} GiB, log {logged_gib} GiB")


@pytest.mark.parametrize(("seqs", "world", "eager", "graphs"), [
    (256, 1, False, 86),  # 51 PIECEWISE + 35 FULL, as in the logs' progress bars
    (512, 1, False, 102),
    (1024, 1, False, 102),  # capture sizes stop at 512
    (16, 1, False, 12),
    (4, 1, False, 7),
    (1, 1, False, 3),
    (256, 2, False, 86),
    (256, 1, True, None),
])
def test_cuda_graph_bytes_counts_the_captured_graphs(seqs, world, eager, graphs):
    got = ls.cuda_graph_bytes(seqs, eager, world)
    if graphs is None:
        assert got == 0
    else:
        per_graph = 12 * MIB + (4 * MIB if world > 1 else 0)
        assert got == 128 * MIB + graphs * per_graph


@pytest.mark.parametrize(("seqs", "copies"), [(1, 4), (256, 4), (257, 10), (1024, 10)])
def test_sampler_copies_above_256_sequences(seqs, copies):
    arch = ls.load_model(M32)
    assert ls.activation_peak_bytes(arch, 1, seqs) == seqs * 152064 * 4 * copies


# ---------------------------------------------------------------------------
# library/llm_sizing.py
# ---------------------------------------------------------------------------

def test_module_gpu_plan(capsys, h200):
    gpus = gf.parse_smi_xml(read_capture(h200 / "nvidia-smi-q.xml")[0])
    out = run_module("llm_sizing", {"model": M32, "max_model_len": 32768, "gpus": gpus}, capsys)
    assert out["_exit"] == 0 and out["changed"] is False
    assert out["fits"] is True and out["engine"] == "vllm" and out["vllm_release"] == "0.32"
    assert out["plan"]["kv_bytes_per_token"] == 262144
    assert out["vllm_args"] == out["plan"]["vllm_args"]


def test_module_not_fitting_is_not_a_failure(capsys):
    out = run_module("llm_sizing", {"model": M32, "max_model_len": 32768, "gpu_memory": ["81559MiB"]},
                     capsys, check_mode=True)
    assert out["_exit"] == 0 and not out.get("failed")
    assert out["fits"] is False and out["reasons"] and out["suggestions"]


def test_module_cpu_plan_when_no_gpus(capsys):
    out = run_module("llm_sizing", {"model": "DeepSeek-R1-Distill-Qwen-7B", "max_model_len": 2048,
                                    "max_num_seqs": 8, "cpu_kv_cache_bytes": "256MiB",
                                    "host_memory_bytes": 64 * GIB}, capsys)
    assert out["engine"] == "vllm-cpu" and out["fits"] is True
    assert "--kv-cache-memory-bytes" in out["vllm_args"]


@pytest.mark.parametrize(("args", "field"), [
    ({"model": "nope", "gpu_memory": ["80GiB"]}, "model"),
    ({"model": M32, "gpu_memory": ["80"]}, "gpu_memory[0]"),
    ({"model": M32, "gpu_memory": ["80GiB"], "tensor_parallel_size": 3}, "tensor_parallel_size"),
    ({"model": M32, "gpu_memory": ["80GiB"], "gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
    ({"model_config": {"hidden_size": 128}, "gpu_memory": ["80GiB"]}, "config.json:num_hidden_layers"),
])
def test_module_bad_input_fails_naming_field(capsys, args, field):
    out = run_module("llm_sizing", args, capsys)
    assert out["failed"] is True and out["_exit"] == 1
    assert out["field"] == field and field in out["msg"]


def test_module_argument_spec_errors(capsys):
    out = run_module("llm_sizing", {"model": M32, "weights": "int3"}, capsys)
    assert out["failed"] is True and "weights" in out["msg"]
    out = run_module("llm_sizing", {"gpu_memory": ["80GiB"]}, capsys)
    assert out["failed"] is True and "model" in out["msg"]


def test_busy_h200_xml_end_to_end(capsys, h200, local_gpu, tmp_path):
    """gpu_facts on a busy H200 (fake nvidia-smi), then llm_sizing on its output: free memory is short."""
    from test_gpu_facts import make_fake_smi

    smi = make_fake_smi(tmp_path, {"xml": (local_gpu / "h200-busy-nvidia-smi-q.xml", 0),
                                   "csv": (h200 / "query-gpu.csv", 0),
                                   "apps": (h200 / "busy-compute-apps.csv", 0), "topo": (h200 / "topo-m.txt", 0)})
    facts = run_module("gpu_facts", {"nvidia_smi_path": str(smi)}, capsys)
    gpu = facts["gpus"][0]
    assert gpu["memory_used_bytes"] == 21007 * MIB and gpu["processes"][0]["pid"] == 649
    out = run_module("llm_sizing", {"model": M32, "max_model_len": 32768, "gpus": facts["gpus"]}, capsys)
    assert out["fits"] is False
    assert any("free memory" in r for r in out["reasons"])
    assert {"variable": "llm_gpu_memory_utilization", "value": 0.85} in [
        {k: s[k] for k in ("variable", "value")} for s in out["suggestions"]]


# The foundation inventories must pass their own preflight on their planned hardware
# (the hardware named in each inventory's hosts.yml; nvidia-smi memory.total of the cards).
PLANNED_HARDWARE = {
    "hospital": ["81559MiB"],  # 1x H100 SXM 80 GB
    "factory": ["46068MiB", "46068MiB"],  # 2x A40 48 GB
}


@pytest.mark.parametrize("site", sorted(PLANNED_HARDWARE))
def test_foundation_inventories_fit_their_planned_hardware(site):
    yaml = pytest.importorskip("yaml")
    from conftest import REPO_ROOT

    path = REPO_ROOT / "inventories" / site / "group_vars" / "all" / "deployment.yml"
    profile = yaml.safe_load(path.read_text())
    result = ls.plan(
        model=profile["llm_model"], weights=profile["llm_weights"],
        weights_group_size=profile["llm_weights_group_size"], weights_keep_16bit=profile["llm_weights_keep_16bit"],
        kv_cache_dtype=profile["llm_kv_cache_dtype"], tensor_parallel_size=profile["llm_tensor_parallel_size"],
        pipeline_parallel_size=profile["llm_pipeline_parallel_size"], max_model_len=profile["llm_max_model_len"],
        max_num_seqs=profile["llm_max_num_seqs"], max_num_batched_tokens=profile["llm_max_num_batched_tokens"],
        gpu_memory_utilization=profile["llm_gpu_memory_utilization"], gpu_memory=PLANNED_HARDWARE[site])
    assert result["fits"], result["reasons"]
    assert result["max_concurrency"] >= 1


# ---------------------------------------------------------------------------
# playbooks/preflight.yml end to end, on this machine over the local connection.
# Every task of the role only reads; nvidia-smi is the fake from test_gpu_facts.
# ---------------------------------------------------------------------------

TINY_CONFIG = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 256,
               "intermediate_size": 768, "num_attention_heads": 4, "num_key_value_heads": 2,
               "num_hidden_layers": 2, "vocab_size": 4096, "max_position_embeddings": 4096,
               "dtype": "bfloat16", "torch_dtype": "bfloat16", "tie_word_embeddings": False}


def run_preflight(tmp_path, profile, extra_path=None, extra_vars=None, check=False):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from conftest import REPO_ROOT

    playbook_bin = Path(sys.executable).parent / "ansible-playbook"
    if not playbook_bin.exists():
        pytest.fail(f"ansible-playbook not found beside {sys.executable}: install requirements.txt in this venv")
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        "all:\n  children:\n    llm_servers:\n      hosts:\n        localhost:\n"
        f"          ansible_connection: local\n          ansible_python_interpreter: {sys.executable}\n")
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "config.json").write_text(json.dumps(TINY_CONFIG))
    base = {"llm_model": str(tmp_path / "tiny" / "config.json"), "llm_weights": "bf16", "llm_weights_group_size": 128,
            "llm_weights_keep_16bit": ["lm_head"], "llm_kv_cache_dtype": "auto", "llm_tensor_parallel_size": 1,
            "llm_pipeline_parallel_size": 1, "llm_max_model_len": 2048, "llm_max_num_seqs": 8,
            "llm_max_num_batched_tokens": 0, "llm_gpu_memory_utilization": 0.9, "llm_cpu_kv_cache_bytes": 268435456,
            "llm_model_dir_disk_path": str(tmp_path), "llm_service_api_key": "unit-test-key-" + "0" * 30,
            "gateway_api_keys": ["unit-test-client-key-" + "1" * 30],
            # The first play checks every role of site.yml: a complete (minimal) site.
            "llm_service_instances": [{"name": "main", "model_path": str(tmp_path / "tiny"), "port": 8000}],
            "gateway_upstreams": [{"name": "main", "port": 8000}], "gateway_tls_mode": "generated",
            "gateway_upstream_api_key": "unit-test-key-" + "0" * 30, "gateway_allowed_networks": ["127.0.0.0/8"]}
    base.update(profile)
    (inv / "group_vars" / "all" / "deployment.yml").write_text(json.dumps(base))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"), ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
               ANSIBLE_NOCOLOR="1")
    if extra_path:
        env["PATH"] = f"{extra_path}{os.pathsep}{env['PATH']}"
    cmd = [str(playbook_bin), "-i", str(inv), str(REPO_ROOT / "playbooks" / "preflight.yml")]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_preflight_playbook_cpu_host_gets_a_cpu_plan(tmp_path):
    """No nvidia-smi on PATH and no NVIDIA PCI device (as on CI and the demo host): a vllm-cpu plan, not a skip."""
    import os

    if any(d.get("device_id") for d in gf.nvidia_pci_devices()) or any(
            os.access(os.path.join(p, "nvidia-smi"), os.X_OK) for p in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.skip("this machine has an NVIDIA GPU or driver; the CPU path needs a host without one")
    rc, out = run_preflight(tmp_path, {}, check=True)
    assert rc == 0, out
    assert "FITS - 1 instance(s) on vllm-cpu 0.32.0" in out and "[1] main: tiny (bf16), cpu" in out
    assert "--kv-cache-memory-bytes 268435456" in out
    assert "changed=0" in out


def test_preflight_playbook_validation_names_variable_and_file(tmp_path):
    rc, out = run_preflight(tmp_path, {"llm_tensor_parallel_size": 3})
    assert rc != 0
    assert "llm_tensor_parallel_size (3) must be one of 1, 2, 4 for this model (4 attention heads, 2 KV heads" in out
    assert str(tmp_path / "inventory" / "group_vars" / "all" / "deployment.yml") in out
    assert "PLAY [Preflight]" not in out  # stopped in the first play, before any host was contacted


def test_preflight_playbook_busy_gpu_says_what_to_change(tmp_path, h200, local_gpu):
    from test_gpu_facts import make_fake_smi

    smi = make_fake_smi(tmp_path, {"xml": (local_gpu / "h200-busy-nvidia-smi-q.xml", 0),
                                   "csv": (h200 / "query-gpu.csv", 0),
                                   "apps": (h200 / "busy-compute-apps.csv", 0), "topo": (h200 / "topo-m.txt", 0)})
    rc, out = run_preflight(tmp_path, {"llm_model": M32, "llm_max_model_len": 32768},
                            extra_path=str(smi.parent), extra_vars={"preflight_check_disk": False})
    assert rc != 0
    assert "DOES NOT FIT - 1 instance(s) on vllm 0.32" in out and "[1] main: DeepSeek-R1-Distill-Qwen-32B (bf16)" in out
    # 119.29 GiB free at preflight, less the instance's own CUDA context (768 MiB) before vLLM's check.
    assert "free memory 118.54 GiB is less than gpu_memory_utilization 0.90" in out
    assert "set llm_gpu_memory_utilization to 0.84 in " in out


@pytest.mark.parametrize("engine_args", [
    {"model": M32, "max_model_len": 32768, "gpu_memory": ["81559MiB"]},
    {"model": "DeepSeek-R1-Distill-Qwen-7B", "max_model_len": 2048, "engine": "cpu"},
])
def test_llm_sizing_docs_cover_what_it_returns(capsys, engine_args):
    from test_gpu_facts import load_library, module_docs

    docs = module_docs("llm_sizing")
    attrs = docs["DOCUMENTATION"]["attributes"]
    assert attrs["check_mode"]["support"] == "full" and "diff_mode" in attrs
    assert all(task.get("name") for task in docs["EXAMPLES"])
    assert set(docs["DOCUMENTATION"]["options"]) == set(load_library("llm_sizing").ARGUMENT_SPEC)
    out = run_module("llm_sizing", engine_args, capsys)
    returned = set(out) - {"changed", "_exit", "invocation", "failed", "warnings", "deprecations"}
    assert returned == set(docs["RETURN"]) - {"host_plan"}  # host_plan: with instances (test_llm_host_plan.py)
    assert set(out["plan"]) == set(docs["RETURN"]["plan"]["contains"])

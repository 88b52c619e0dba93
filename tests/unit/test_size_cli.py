"""Tests for bin/llm-onprem-size, run as a program (fresh interpreter each time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

CLI = REPO_ROOT / "bin" / "llm-onprem-size"
M32 = "DeepSeek-R1-Distill-Qwen-32B"


def cli(*args, cwd=None):
    proc = subprocess.run([sys.executable, str(CLI), *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def test_is_executable_with_shebang():
    assert os.access(CLI, os.X_OK)
    assert CLI.read_text().startswith("#!/usr/bin/env python3\n")


@pytest.mark.parametrize(("args", "rc", "fits"), [
    (["--model", M32, "--weights", "w4a16", "--gpu-mem", "48GB,48GB", "--tp", "2",
      "--max-model-len", "32768", "--max-num-seqs", "16"], 0, True),
    (["--model", M32, "--weights", "w4a16", "--gpu-mem", "48GB", "--gpu-mem", "48GB", "--tp", "2",
      "--max-model-len", "32768", "--max-num-seqs", "16"], 0, True),
    (["--model", M32, "--gpu-mem", "81559MiB", "--max-model-len", "32768"], 1, False),
    (["--model", M32, "--gpu-mem", "81559MiB", "--max-model-len", "32768", "--kv-cache-dtype", "fp8",
      "--gpu-memory-utilization", "0.95"], 0, True),
    (["--model", M32, "--weights", "w4a16", "--gpu-mem", "24564MiB", "--max-model-len", "4096",
      "--max-num-seqs", "8"], 0, True),
    (["--model", "DeepSeek-R1-Distill-Llama-70B", "--gpu-mem", "80GiB", "--tp", "4", "--pp", "2",
      "--max-model-len", "32768"], 0, True),
])
def test_json_and_exit_codes(args, rc, fits):
    code, out, err = cli(*args, "--json")
    assert code == rc, err
    data = json.loads(out)
    for key in ("fits", "weights_bytes", "kv_bytes_per_token", "kv_cache_tokens", "max_concurrency",
                "suggestions", "vllm_args"):
        assert key in data
    assert data["fits"] is fits
    assert (data["suggestions"] != []) is (not fits)


def test_json_values_for_two_a40():
    code, out, _ = cli("--model", M32, "--weights", "w4a16", "--gpu-mem", "48GB,48GB", "--tp", "2",
                       "--max-model-len", "32768", "--max-num-seqs", "16", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["kv_bytes_per_token"] == 262144
    assert data["kv_bytes_per_token_per_gpu"] == 131072
    assert data["kv_cache_tokens"] == min(r["kv_cache_tokens"] for r in data["per_gpu"])
    assert data["max_concurrency"] == round(data["kv_cache_tokens"] / 32768, 2)
    assert data["vllm_args"] == ["--tensor-parallel-size", "2", "--pipeline-parallel-size", "1",
                                 "--max-model-len", "32768", "--max-num-seqs", "16",
                                 "--max-num-batched-tokens", "2048", "--gpu-memory-utilization", "0.9"]


def test_table_output():
    code, out, _ = cli("--model", M32, "--gpu-mem", "81559MiB", "--max-model-len", "32768")
    assert code == 1
    assert "DOES NOT FIT" in out
    assert "largest max_model_len that fits" in out
    assert "vLLM args  --tensor-parallel-size 1" in out
    assert "KV tokens" in out


def test_config_path_and_cpu_plan(tmp_path):
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 256,
           "intermediate_size": 768, "num_attention_heads": 4, "num_key_value_heads": 2,
           "num_hidden_layers": 2, "vocab_size": 4096, "max_position_embeddings": 4096, "dtype": "bfloat16"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    code, out, err = cli("--config", str(path), "--cpu", "--host-mem", "24GiB", "--max-model-len", "2048",
                         "--max-num-seqs", "8", "--cpu-kv-cache", "256MiB", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["engine"] == "vllm-cpu"
    assert "--kv-cache-memory-bytes" in data["vllm_args"] and "268435456" in data["vllm_args"]
    code, out, _ = cli("--config", str(path), "--gpu-mem", "24GiB", "--max-model-len", "2048")
    assert code == 0 and "FITS" in out


def test_runs_through_a_symlink(tmp_path):
    link = tmp_path / "size"
    link.symlink_to(CLI)
    proc = subprocess.run([sys.executable, str(link), "--model", M32, "--gpu-mem", "141GB",
                           "--max-model-len", "8192", "--json"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, check=False)
    assert proc.returncode == 0 and json.loads(proc.stdout)["fits"] is True


@pytest.mark.parametrize(("args", "flag"), [
    (["--model", M32, "--gpu-mem", "80"], "--gpu-mem[0]"),
    (["--model", M32, "--gpu-mem", "80GiB,abc"], "--gpu-mem[1]"),
    (["--model", M32], "--gpu-mem"),
    (["--model", "Llama-4", "--gpu-mem", "80GiB"], "--model"),
    (["--gpu-mem", "80GiB"], "--model"),
    (["--model", M32, "--gpu-mem", "80GiB", "--tp", "3"], "--tp"),
    (["--model", M32, "--gpu-mem", "80GiB", "--tp", "two"], "--tp"),
    (["--model", M32, "--gpu-mem", "80GiB", "--gpu-memory-utilization", "1.2"], "--gpu-memory-utilization"),
    (["--model", M32, "--gpu-mem", "80GiB", "--gpu-memory-utilization", "0"], "--gpu-memory-utilization"),
    (["--model", M32, "--gpu-mem", "80GiB", "--max-model-len", "-1"], "--max-model-len"),
    (["--model", M32, "--gpu-mem", "80GiB", "--max-num-seqs", "1.5"], "--max-num-seqs"),
    (["--model", M32, "--gpu-mem", "80GiB", "--keep-16bit", "mlp"], "--keep-16bit"),
    (["--config", "/nonexistent/config.json", "--gpu-mem", "80GiB"], "--config"),
])
def test_bad_input_exit_2(args, flag):
    code, out, err = cli(*args, "--json")
    assert code == 2
    data = json.loads(out)
    assert data["option"] == flag
    assert flag in err and "Traceback" not in err


def test_argparse_errors_exit_2():
    code, _, err = cli("--model", M32, "--weights", "int3", "--gpu-mem", "80GiB")
    assert code == 2 and "invalid choice" in err


def test_one_size_means_identical_gpus_but_a_list_is_taken_as_is():
    code, out, _ = cli("--model", M32, "--gpu-mem", "80GiB", "--tp", "4", "--max-model-len", "8192", "--json")
    assert code == 0 and len(json.loads(out)["per_gpu"]) == 4
    code, out, _ = cli("--model", M32, "--gpu-mem", "80GiB,80GiB", "--tp", "4", "--max-model-len", "8192", "--json")
    data = json.loads(out)
    assert code == 1 and any("4 GPUs, only 2 present" in r for r in data["reasons"])


TWO_PRECISIONS = ["--instance", "screen:weights=w4a16,share=0.3", "--instance", "verify:weights=bf16,share=0.6"]


@pytest.mark.parametrize(("gpu_mem", "code", "fits"), [
    ("143771MiB", 0, True),   # one H200: INT4 screening beside bf16 verification, 32k context each
    ("81559MiB", 1, False),   # one H100 80 GB: the bf16 weights alone exceed a 0.6 share
])
def test_two_precisions_on_one_gpu(gpu_mem, code, fits):
    rc, out, _ = cli("--model", M32, "--gpu-mem", gpu_mem, "--max-model-len", "32768", *TWO_PRECISIONS, "--json")
    data = json.loads(out)
    assert rc == code and data["fits"] is fits
    assert data["start_order"] == ["screen", "verify"]
    assert data["instances"]["screen"]["weights"] == "w4a16" and data["instances"]["verify"]["weights"] == "bf16"
    assert data["gpus"][0]["shares"] == {"screen": 0.3, "verify": 0.6}
    if not fits:
        assert any(r.startswith("instance verify:") and "do not fit" in r for r in data["reasons"])


def test_two_precisions_table():
    rc, out, _ = cli("--model", M32, "--gpu-mem", "143771MiB", "--max-model-len", "32768", *TWO_PRECISIONS)
    assert rc == 0
    assert "GPU 0: shares add up to 0.9" in out and "FITS" in out
    assert "vLLM args of verify: CUDA_VISIBLE_DEVICES=0 " in out and "--gpu-memory-utilization 0.6" in out


@pytest.mark.parametrize("instance", ["a:share", ":weights=w4a16", "a:colour=red", "a:share=much", "a:gpus=0+x"])
def test_bad_instance_exit_2(instance):
    rc, out, err = cli("--model", M32, "--gpu-mem", "80GiB", "--instance", instance, "--json")
    assert rc == 2 and json.loads(out)["option"] == "--instance" and "Traceback" not in err

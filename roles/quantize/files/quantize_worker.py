#!/usr/bin/env python3
"""Quantize one model with llm-compressor into a staging directory.

Installed by the quantize role and run with the quantization environment's
Python (torch + llmcompressor) as the model store's service account:

    python quantize_worker.py --job JOB.json

JOB.json (written by the role from the plan of the quantize_plan module):
    source          directory of the 16-bit model (safetensors)
    staging         output directory; removed first if a failed run left it
    report          where the JSON report goes (written atomically)
    scheme          W4A16 | W8A8
    group_size      weight group size (W4A16)
    method          rtn | gptq
    pipeline        oneshot | model_free
    ignore          llm-compressor ignore list (module names, "re:" patterns)
    model_free_extra_ignore  non-Linear 2-D weights the name-based model-free
                    path must skip (embeddings); not written to the recipe
    device          cpu | gpu
    calibration     {path, samples, max_seq_length} (gptq)
    generate_tokens tokens to generate from the result (0 = no generation check)
    prompt          user message of the generation check

The report records wall time, peak resident memory (the process's maximum
RSS), the versions that produced the checkpoint and the generated sample.
Progress goes to stdout; any failure exits non-zero with the reason on stderr.
"""

import argparse
import json
import os
import resource
import shutil
import sys
import time


def _peak_rss_bytes():
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _log(msg):
    print(f"[quantize] {msg}", flush=True)


def _scheme(job):
    from compressed_tensors.quantization import preset_name_to_scheme

    scheme = preset_name_to_scheme(job["scheme"], ["Linear"])
    if job["scheme"] == "W4A16":
        scheme.weights.group_size = int(job["group_size"])
    return scheme


def _calibration_dataset(job):
    from datasets import Dataset

    cal = job["calibration"]
    texts = []
    with open(cal["path"], encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            if cal["path"].endswith(".jsonl"):
                record = json.loads(line)
                line = record.get("text") or ""
            if line:
                texts.append(line)
            if len(texts) >= int(cal["samples"]):
                break
    if not texts:
        raise SystemExit(f"calibration file {cal['path']} has no text samples")
    return Dataset.from_dict({"text": texts}), len(texts)


def _run_oneshot(job, scheme):
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Loaded into host memory, as llm-compressor's examples do: on a GPU host
    # oneshot's sequential pipeline moves one layer at a time to the GPU, so
    # the GPU need not hold the whole 16-bit model.
    model = AutoModelForCausalLM.from_pretrained(job["source"], dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(job["source"])
    groups = {"group_0": scheme}
    kwargs = {}
    if job["method"] == "gptq":
        recipe = GPTQModifier(config_groups=groups, ignore=job["ignore"])
        dataset, samples = _calibration_dataset(job)
        kwargs = {
            "dataset": dataset,
            "num_calibration_samples": samples,
            "max_seq_length": int(job["calibration"]["max_seq_length"]),
        }
        _log(f"GPTQ with {samples} calibration samples")
    else:
        recipe = QuantizationModifier(config_groups=groups, ignore=job["ignore"])
    oneshot(model=model, tokenizer=tokenizer, recipe=recipe, **kwargs)
    model.save_pretrained(job["staging"], save_compressed=True)
    tokenizer.save_pretrained(job["staging"])


def _run_model_free(job, scheme):
    from llmcompressor import model_free_ptq

    device = "cuda:0" if job["device"] == "gpu" else "cpu"
    model_free_ptq(
        model_stub=job["source"],
        save_directory=job["staging"],
        scheme=scheme,
        ignore=list(job["ignore"]) + list(job.get("model_free_extra_ignore", [])),
        max_workers=1,
        device=device,
    )
    # The name-based path must skip the embeddings, but they are not Linear
    # layers: the published recipe keeps the ignore list the inventory asked for.
    cfg_path = os.path.join(job["staging"], "config.json")
    with open(cfg_path, encoding="utf-8") as fh:
        cfg = json.load(fh)
    qcfg = cfg.get("quantization_config") or {}
    qcfg["ignore"] = list(job["ignore"])
    cfg["quantization_config"] = qcfg
    with open(cfg_path, "w", encoding="utf-8") as fh:
        json.dump(cfg, fh, indent=2, sort_keys=True)
        fh.write("\n")


def _generate(job):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device_map = "auto" if job["device"] == "gpu" else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(job["staging"])
    model = AutoModelForCausalLM.from_pretrained(job["staging"], dtype="auto", device_map=device_map)
    messages = [{"role": "user", "content": job["prompt"]}]
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = job["prompt"]
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    with torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=int(job["generate_tokens"]), do_sample=False,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
    new = out[0][inputs["input_ids"].shape[1]:]
    sample = tokenizer.decode(new, skip_special_tokens=False)
    return int(new.shape[0]), sample


def _versions():
    from importlib.metadata import version

    return {p: version(p) for p in ("llmcompressor", "compressed-tensors", "torch", "transformers")}


def _write_json(path, data):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True)
    args = parser.parse_args()
    with open(args.job, encoding="utf-8") as fh:
        job = json.load(fh)

    if job["device"] == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("device gpu was asked for, but torch sees no CUDA device in the quantization environment")

    if os.path.lexists(job["staging"]):
        _log(f"removing the staging directory a failed run left: {job['staging']}")
        shutil.rmtree(job["staging"])
    os.makedirs(job["staging"], mode=0o750)

    started = time.monotonic()
    _log(f"{job['scheme']} {job['method']} via {job['pipeline']} on {job['device']}: {job['source']} -> {job['staging']}")
    scheme = _scheme(job)
    if job["pipeline"] == "model_free":
        _run_model_free(job, scheme)
    else:
        _run_oneshot(job, scheme)
    quantize_s = time.monotonic() - started
    peak_quantize = _peak_rss_bytes()
    _log(f"quantized in {quantize_s:.1f} s, peak RSS {peak_quantize / 2**20:.0f} MiB")

    report = {
        "quantize_seconds": round(quantize_s, 2),
        "peak_rss_quantize_bytes": peak_quantize,
        "versions": _versions(),
        "generated_tokens": None,
        "generated_sample": None,
    }
    if int(job["generate_tokens"]) > 0:
        gen_started = time.monotonic()
        count, sample = _generate(job)
        report["generate_seconds"] = round(time.monotonic() - gen_started, 2)
        report["generated_tokens"] = count
        report["generated_sample"] = sample
        _log(f"generated {count} tokens: {sample!r}")
        if count == 0:
            raise SystemExit("the quantized model loaded but generated no tokens")
    report["wall_seconds"] = round(time.monotonic() - started, 2)
    report["peak_rss_bytes"] = _peak_rss_bytes()
    _write_json(job["report"], report)
    _log(f"done in {report['wall_seconds']} s, peak RSS {report['peak_rss_bytes'] / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

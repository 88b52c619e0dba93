# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Several vLLM instances on one host: a plan per instance and a check of the host as a whole.

The preflight role calls this through the llm_sizing module (option ``instances``) and keeps
the result as the host fact ``llm_plan``; bin/llm-onprem-size calls it for ``--instance``.
Unit-tested in tests/unit/test_llm_host_plan.py.

``plan_host(instances, gpus=None, site=None, gpu_memory=None, engine="auto", ...)`` sizes each
instance with llm_sizing.plan() (GPU hosts) or plan_cpu() (hosts without GPUs) in start order:

- an instance's profile is the site profile (``site``: the llm_* deployment values as plan()
  keywords) with the instance's own keys over it (model, weights, kv_cache_dtype,
  max_model_len, max_num_seqs, max_num_batched_tokens, enforce_eager, cpu_kv_cache_bytes, ...);
- its placement on GPU hosts: ``gpus`` (host GPU indices: whole GPUs, which become
  CUDA_VISIBLE_DEVICES and, unless the instance sets tensor_parallel_size, the TP size; default
  the first TP x PP GPUs) and ``gpu_memory_utilization`` (its share of each of those GPUs;
  default the site's);
- vLLM checks at start that a GPU's free memory, measured after its own CUDA context exists,
  covers share x memory. The instances start one after another (the llm_service role waits for
  each to answer), so each instance is planned against the free memory the ones before it
  leave: free at preflight minus their budgets and CUDA contexts, minus its own context;
- the shares on each GPU add up to at most 1;
- host RAM and disk: the instances' sums (a model served twice is on disk once);
- ``own_pids``: the processes of this project's running instances; the GPU memory they hold
  counts as free, so a rerun on a serving host plans the same as the first run.

Each refusal names the instance and what to change.
"""

from __future__ import annotations

import math
import re

try:  # as a module_utils of a module on a host
    from ansible.module_utils.llm_sizing import MIB, SizingError, format_bytes, normalize_gpus, parse_memory, plan, plan_cpu
except ImportError:  # on the control node and in unit tests: module_utils/ is on sys.path
    from llm_sizing import MIB, SizingError, format_bytes, normalize_gpus, parse_memory, plan, plan_cpu

# plan() / plan_cpu() keywords an instance may set for itself (its deployment profile).
PROFILE_KEYS = ("model", "config", "config_path", "weights", "weights_group_size", "weights_keep_16bit",
                "kv_cache_dtype", "tensor_parallel_size", "pipeline_parallel_size", "max_model_len",
                "max_num_seqs", "max_num_batched_tokens", "enforce_eager")
CPU_KEYS = ("model", "config", "config_path", "weights", "weights_group_size", "weights_keep_16bit",
            "kv_cache_dtype", "max_model_len", "max_num_seqs", "max_num_batched_tokens", "enforce_eager")
# Keys that place an instance, and the CPU engine's KV size.
PLACEMENT_KEYS = ("gpus", "gpu_memory_utilization", "cpu_kv_cache_bytes")
# Shares above this on one GPU leave nothing for a second CUDA context.
MAX_GPU_SHARE = 1.0
# vLLM's default gpu_memory_utilization, for a share neither the instance nor the site sets.
DEFAULT_GPU_SHARE = 0.9
# Each vLLM process's CUDA context (and cuBLAS/NCCL set-up) on each of its GPUs: created
# before vLLM measures free memory, outside its budget (docs/sizing.md, "Several instances").
# Public figures are 0.4-0.7 GiB; this errs high so a plan never promises a start that fails.
CUDA_CONTEXT_BYTES = 768 * MIB


def default_gpu_count(instance, site):
    """How many GPUs an instance without ``gpus`` takes (the first ones): its TP x PP, or the site's.

    Also play 1's check of the shares per GPU (module_utils/inventory_checks.py).
    """
    return int(instance.get("tensor_parallel_size") or site.get("tensor_parallel_size") or 1) \
        * int(instance.get("pipeline_parallel_size") or site.get("pipeline_parallel_size") or 1)


def instance_share(instance, site):
    """An instance's gpu_memory_utilization: its own, else the site's, else vLLM's default."""
    return instance.get("gpu_memory_utilization", site.get("gpu_memory_utilization", DEFAULT_GPU_SHARE))


def _placement(instance, host_indices, site):
    """(GPU indices, share) of one instance, checked against the host's GPUs."""
    name = instance["name"]
    wanted = instance.get("gpus")
    if wanted is None:
        wanted = host_indices[:default_gpu_count(instance, site)]
    if not isinstance(wanted, list) or not wanted:
        raise SizingError(f"{name}.gpus", "must be a non-empty list of GPU indices")
    if len(set(wanted)) != len(wanted):
        raise SizingError(f"{name}.gpus", f"names a GPU twice ({wanted})")
    unknown = [index for index in wanted if index not in host_indices]
    if unknown:
        raise SizingError(f"{name}.gpus", f"{unknown} are not GPUs of this host (it has {host_indices})")
    share = instance_share(instance, site)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= MAX_GPU_SHARE:
        raise SizingError(f"{name}.gpu_memory_utilization", f"must be a number in (0, 1] (got {share!r})")
    return list(wanted), float(share)


def _profile(instance, site, keys):
    profile = {key: value for key, value in site.items() if key in keys}
    if any(key in instance for key in ("model", "config", "config_path")):
        for key in ("model", "config", "config_path"):
            profile.pop(key, None)
    profile.update({key: instance[key] for key in keys if key in instance})
    return profile


def _check_instances(instances):
    if not instances:
        raise SizingError("instances", "no instance to plan")
    names = [instance.get("name") if isinstance(instance, dict) else None for instance in instances]
    if any(not name for name in names) or len(set(names)) != len(names):
        raise SizingError("instances", f"each instance needs a name of its own (got {names})")
    return names


def _room_share(free, held, torch_total):
    """The largest share (two decimals) that still passes vLLM's start check after `held`."""
    room = free - held - CUDA_CONTEXT_BYTES
    return max(0.0, math.floor(room / torch_total * 100) / 100)


def _plan_cpu_host(instances, names, site, host_memory_bytes, cpu_flags):
    plans, reasons, warnings, disk = {}, [], [], {}
    for position, instance in enumerate(instances):
        name = instance["name"]
        profile = _profile(instance, site, CPU_KEYS)
        kv = instance.get("cpu_kv_cache_bytes", site.get("cpu_kv_cache_bytes"))
        result = plan_cpu(kv_cache_memory_bytes=kv, cpu_flags=cpu_flags, **profile)
        result.update(gpu_indices=[], cuda_visible_devices="", start_position=position + 1)
        plans[name] = result
        reasons += [f"instance {name}: {reason}" for reason in result["reasons"]]
        warnings += [f"instance {name}: {warning}" for warning in result["warnings"]]
        disk[result["model"] + "/" + result["weights"]] = result["disk_bytes"]
    ram = sum(result["host_ram_bytes"] for result in plans.values())
    host = None if host_memory_bytes is None else parse_memory(host_memory_bytes, "host_memory_bytes")
    if host is not None and ram > host:
        listed = ", ".join(f"{name} {format_bytes(plans[name]['host_ram_bytes'])}" for name in names)
        reasons.append(f"host RAM {format_bytes(host)} is less than the {format_bytes(ram)} the "
                       f"instances need together ({listed}): give one a smaller cpu_kv_cache_bytes or "
                       "max_model_len, or serve fewer instances on this host")
    return plans, reasons, warnings, disk, ram, []


def _release_own(gpus, own_pids):
    """The GPU facts with the memory of this project's running instances (own_pids) counted as free.

    A rerun plans the steady state: every instance's budget is held again by the start-order
    accounting, so the memory the running instances hold now must not count twice.
    """
    out = []
    for gpu in gpus or []:
        gpu = dict(gpu)
        released = sum(int(proc.get("used_memory_bytes") or 0) for proc in gpu.get("processes") or []
                       if proc.get("pid") in own_pids)
        if released and gpu.get("memory_free_bytes") is not None:
            gpu["memory_free_bytes"] = int(gpu["memory_free_bytes"]) + released
            if gpu.get("memory_used_bytes") is not None:
                gpu["memory_used_bytes"] = max(0, int(gpu["memory_used_bytes"]) - released)
        gpu["released_bytes"] = released
        out.append(gpu)
    return out


def _plan_gpu_host(instances, names, site, gpus, gpu_memory, own_pids):
    gpus = _release_own(gpus, set(own_pids or ())) if gpus else gpus
    host = normalize_gpus(gpus, gpu_memory)
    if not host:
        raise SizingError("gpus", "no GPUs on this host")
    by_index = {gpu["index"]: gpu for gpu in host}
    if gpus:
        facts = {gpu.get("index", idx): gpu for idx, gpu in enumerate(gpus)}
    else:  # planned GPUs: sizes only, the reserve estimated as for one instance
        facts = {gpu["index"]: {"index": gpu["index"], "memory_total_bytes": gpu["total_bytes"]} for gpu in host}
    # What the instances started so far hold of each GPU (budgets and CUDA contexts).
    held = {index: 0 for index in by_index}
    shares = {index: {} for index in by_index}
    plans, reasons, warnings, disk = {}, [], [], {}

    for position, instance in enumerate(instances):
        name = instance["name"]
        indices, share = _placement(instance, list(by_index), site)
        profile = _profile(instance, site, PROFILE_KEYS)
        if "gpus" in instance and "tensor_parallel_size" not in instance:
            profile["tensor_parallel_size"] = len(indices) // int(profile.get("pipeline_parallel_size") or 1)
        placed = []
        for index in indices:
            gpu, fact = by_index[index], dict(facts[index])
            free = gpu["free_bytes"] if gpu["free_bytes"] is not None else gpu["torch_total_bytes"]
            fact["memory_free_bytes"] = max(0, free - held[index] - CUDA_CONTEXT_BYTES)
            placed.append(fact)
        result = plan(gpus=placed, gpu_memory_utilization=share, **profile)
        result.update(gpu_indices=indices, cuda_visible_devices=",".join(str(index) for index in indices),
                      start_position=position + 1)
        plans[name] = result
        reasons += [f"instance {name}: {reason}" for reason in result["reasons"]]
        warnings += [f"instance {name}: {warning}" for warning in result["warnings"]]
        if any("free memory" in reason for reason in result["reasons"]):
            reasons.append(_free_advice(name, indices, share, by_index, held, position))
        for index in indices:
            held[index] += int(by_index[index]["torch_total_bytes"] * share) + CUDA_CONTEXT_BYTES
            shares[index][name] = share
        disk[result["model"] + "/" + result["weights"]] = result["disk_bytes"]

    for index, on_gpu in shares.items():
        total = sum(on_gpu.values())
        if total > MAX_GPU_SHARE + 1e-9:
            listed = ", ".join(f"{name} {share:.2f}" for name, share in on_gpu.items())
            reasons.append(f"GPU {index}: the instances' gpu_memory_utilization shares add up to {total:.2f} "
                           f"({listed}), more than 1: give them smaller shares or place one on another GPU")
    ram = sum(result["host_ram_bytes"] for result in plans.values())
    table = [{"index": index, "name": by_index[index]["name"], "shares": shares[index],
              "share_total": round(sum(shares[index].values()), 4), "held_bytes": held[index],
              "free_bytes": by_index[index]["free_bytes"], "torch_total_bytes": by_index[index]["torch_total_bytes"],
              "released_bytes": int((facts.get(index) or {}).get("released_bytes") or 0)}
             for index in by_index]
    return plans, reasons, warnings, disk, ram, table


def _free_advice(name, indices, share, by_index, held, position):
    """What to change when an instance would not pass vLLM's start check."""
    def free_of(index):
        gpu = by_index[index]
        return gpu["free_bytes"] if gpu["free_bytes"] is not None else gpu["torch_total_bytes"]
    room = min(_room_share(free_of(index), held[index], by_index[index]["torch_total_bytes"]) for index in indices)
    hints = [f"a share of at most {room:.2f}" if room > 0 else "no share fits there"]
    others = [index for index in by_index if index not in indices
              and _room_share(free_of(index), held[index], by_index[index]["torch_total_bytes"]) >= share]
    if others:
        hints.append(f"GPU {others[0]} (gpus: [{others[0]}]) has room for {share:.2f}")
    after = "after the instances before it" if position else "in the memory free at preflight"
    return (f"instance {name}: at its start GPU {','.join(map(str, indices))} has room {after} for {', '.join(hints)}; "
            "or INT4 weights, an fp8 KV cache or a shorter max_model_len let a smaller share hold it")


def plan_host(instances, gpus=None, site=None, gpu_memory=None, engine="auto", host_memory_bytes=None,
              cpu_flags=None, own_pids=None):
    """Plan every instance of one host in start order; see the module docstring."""
    site = dict(site or {})
    names = _check_instances(instances)
    if engine == "auto":
        engine = "gpu" if (gpus or gpu_memory) else "cpu"
    if engine == "cpu":
        plans, reasons, warnings, disk, ram, table = _plan_cpu_host(instances, names, site, host_memory_bytes, cpu_flags)
    else:
        plans, reasons, warnings, disk, ram, table = _plan_gpu_host(instances, names, site, gpus, gpu_memory, own_pids)
    first = plans[names[0]]
    return {
        "fits": not reasons, "reasons": reasons, "warnings": warnings,
        "engine": first["engine"], "vllm_release": first["vllm_release"],
        "instances": plans, "start_order": names, "gpus": table,
        "host_ram_bytes": ram, "disk_bytes": sum(disk.values()),
        "world_size_max": max(p["tensor_parallel_size"] * p["pipeline_parallel_size"] for p in plans.values()),
        "summary": "; ".join(_summary(name, plans[name]) for name in names),
    }


def _summary(name, result):
    where = "CPU" if not result["gpu_indices"] else (
        f"GPUs {result['cuda_visible_devices']} share {result['gpu_memory_utilization']:.2f}")
    return f"{name}: {result['model']} {result['weights']} on {where}, {result['kv_cache_tokens']} KV tokens"


# llm_model and an instance's sizing_model name a config.json when they look like a path.
MODEL_PATH_RE = re.compile(r"^(/|\./|\.\./|~)|\.json$")


def planner_instances(instances, load_config):
    """llm_service_instances entries -> plan_host() instances (the preflight's filter).

    Keeps each entry's name, profile and placement keys; its ``sizing_model`` (catalog id, or
    the control-node path of a config.json or of its directory, read with ``load_config``)
    becomes the planner's model. The service's own keys (model store name, port, ...) stay out.
    """
    out = []
    for instance in instances or []:
        entry = {key: instance[key] for key in ("name",) + PROFILE_KEYS + PLACEMENT_KEYS
                 if key in instance and key not in ("model", "config", "config_path")}
        ref = instance.get("sizing_model")
        if ref and MODEL_PATH_RE.search(str(ref)):
            path = str(ref) if str(ref).endswith(".json") else str(ref).rstrip("/") + "/config.json"
            entry["config"] = load_config(path)
            entry["model"] = path.rsplit("/", 2)[-2] if "/" in path else path
        elif ref:
            entry["model"] = ref
        out.append(entry)
    return out

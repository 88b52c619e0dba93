# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Several vLLM instances on one host: a plan per instance and a check of the host as a whole.

The first building block of "several served models per site" (issue 14): plain functions,
unit-tested in tests/unit/test_llm_host_plan.py; not yet called by the preflight role.

``plan_host(instances, gpus, site)`` sizes each instance with llm_sizing.plan() in start order:

- an instance's profile is the site profile (``site``: the llm_* deployment values as plan()
  keywords) with the instance's own keys over it (model, weights, kv_cache_dtype,
  max_model_len, max_num_seqs, max_num_batched_tokens, enforce_eager, ...);
- its placement: ``gpus`` (host GPU indices: whole GPUs, which become CUDA_VISIBLE_DEVICES and,
  unless the instance sets tensor_parallel_size, the TP size) and ``gpu_memory_utilization``
  (its share of each of those GPUs; default the site's);
- vLLM checks at start that a GPU's free memory covers share x memory: the instances start one
  after another, so each instance is planned against the free memory the ones before it leave
  (free at preflight minus their budgets);
- the shares on each GPU add up to at most 1;
- host RAM and disk: the instances' sums (a model served twice is on disk once).

Each refusal names the instance and what to change.
"""

from __future__ import annotations

try:  # as a module_utils of a module on a host
    from ansible.module_utils.llm_sizing import SizingError, format_bytes, normalize_gpus, plan
except ImportError:  # on the control node and in unit tests: module_utils/ is on sys.path
    from llm_sizing import SizingError, format_bytes, normalize_gpus, plan

# plan() keywords an instance may set for itself (its deployment profile).
PROFILE_KEYS = ("model", "config", "config_path", "weights", "weights_group_size", "weights_keep_16bit",
                "kv_cache_dtype", "tensor_parallel_size", "pipeline_parallel_size", "max_model_len",
                "max_num_seqs", "max_num_batched_tokens", "enforce_eager")
# Shares above this on one GPU leave nothing for a second CUDA context.
MAX_GPU_SHARE = 1.0


def _placement(instance, host_indices, site_util):
    """(GPU indices, share) of one instance, checked against the host's GPUs."""
    name = instance["name"]
    wanted = instance.get("gpus")
    tp = instance.get("tensor_parallel_size")
    if wanted is None:
        count = int(tp or 1) * int(instance.get("pipeline_parallel_size") or 1)
        wanted = host_indices[:count]
    if not isinstance(wanted, list) or not wanted:
        raise SizingError(f"{name}.gpus", "must be a non-empty list of GPU indices")
    if len(set(wanted)) != len(wanted):
        raise SizingError(f"{name}.gpus", f"names a GPU twice ({wanted})")
    unknown = [index for index in wanted if index not in host_indices]
    if unknown:
        raise SizingError(f"{name}.gpus", f"{unknown} are not GPUs of this host (it has {host_indices})")
    share = instance.get("gpu_memory_utilization", site_util)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= MAX_GPU_SHARE:
        raise SizingError(f"{name}.gpu_memory_utilization", f"must be a number in (0, 1] (got {share!r})")
    return list(wanted), float(share)


def plan_host(instances, gpus, site):
    """Plan every instance of one host in start order; see the module docstring."""
    if not instances:
        raise SizingError("instances", "no instance to plan")
    names = [instance.get("name") for instance in instances]
    if any(not name for name in names) or len(set(names)) != len(names):
        raise SizingError("instances", f"each instance needs a name of its own (got {names})")
    host = normalize_gpus(gpus)
    if not host:
        raise SizingError("gpus", "no GPUs on this host")
    by_index = {gpu["index"]: gpu for gpu in host}
    facts = {gpu.get("index", idx): gpu for idx, gpu in enumerate(gpus)}
    site_util = site.get("gpu_memory_utilization", 0.9)
    # What the instances started so far hold of each GPU (their budgets).
    held = {index: 0 for index in by_index}
    shares = {index: {} for index in by_index}
    reasons, plans, disk = [], {}, {}

    for instance in instances:
        name = instance["name"]
        indices, share = _placement(instance, list(by_index), site_util)
        profile = {key: value for key, value in site.items() if key in PROFILE_KEYS}
        profile.update({key: instance[key] for key in PROFILE_KEYS if key in instance})
        if "gpus" in instance and "tensor_parallel_size" not in instance:
            profile["tensor_parallel_size"] = len(indices) // int(profile.get("pipeline_parallel_size") or 1)
        placed = []
        for index in indices:
            gpu, fact = by_index[index], dict(facts[index])
            free = gpu["free_bytes"] if gpu["free_bytes"] is not None else gpu["torch_total_bytes"]
            fact["memory_free_bytes"] = max(0, free - held[index])
            placed.append(fact)
        result = plan(gpus=placed, gpu_memory_utilization=share, **profile)
        result["gpu_indices"] = indices
        result["cuda_visible_devices"] = ",".join(str(index) for index in indices)
        plans[name] = result
        for reason in result["reasons"]:
            reasons.append(f"instance {name}: {reason}")
        for index in indices:
            held[index] += int(by_index[index]["torch_total_bytes"] * share)
            shares[index][name] = share
        disk[result["model"] + "/" + result["weights"]] = result["disk_bytes"]

    for index, on_gpu in shares.items():
        total = sum(on_gpu.values())
        if total > MAX_GPU_SHARE + 1e-9:
            listed = ", ".join(f"{name} {share:.2f}" for name, share in on_gpu.items())
            reasons.append(f"GPU {index}: the instances' gpu_memory_utilization shares add up to {total:.2f} "
                           f"({listed}), more than 1: give them smaller shares or place one on another GPU")

    ram = sum(result["host_ram_bytes"] for result in plans.values())
    return {
        "fits": not reasons, "reasons": reasons, "instances": plans,
        "start_order": names,
        "gpus": [{"index": index, "shares": shares[index], "share_total": round(sum(shares[index].values()), 4),
                  "held_bytes": held[index], "torch_total_bytes": by_index[index]["torch_total_bytes"]}
                 for index in by_index],
        "host_ram_bytes": ram, "disk_bytes": sum(disk.values()),
        "summary": "; ".join(f"{name}: GPUs {plans[name]['cuda_visible_devices']} share "
                             f"{shares[plans[name]['gpu_indices'][0]][name]:.2f}, "
                             f"{plans[name]['kv_cache_tokens']} KV tokens, "
                             f"weights {format_bytes(plans[name]['weights_bytes_per_gpu'])}/GPU"
                             for name in names),
    }

"""Quantization recipes, ignore-list checks and atomic publishing: the pure logic
behind library/quantize_plan.py and library/quantize_publish.py.

Standard library only (runs with the target host's system python3.11+). The
model's layers are read from the safetensors headers (an 8-byte length and a
JSON table of tensor names, dtypes and shapes), so no torch is needed here; the
quantization itself runs in the quantization environment
(roles/quantize/files/quantize_worker.py).

Layout under the model store (``store``)::

    <store>/<name>/<hash12>/                     published checkpoint (read by vLLM)
    <store>/<name>/<hash12>/llm-onprem-quantize.json   stamp: recipe, hash, source, time, memory
    <store>/<name>/current -> <hash12>           the recipe in use
    <store>/<name>/.staging-<hash12>/            worker output, published by one rename
    <store>/<name>/.quantize-<hash12>.job.json   the worker's job; .report.json its report

``<hash12>`` is the first 12 hex digits of the sha256 of the canonical recipe
(scheme, method, group size, ignore list, pipeline, calibration file digest and
the source checkpoint's digest): an unchanged recipe finds its directory and
does nothing; a changed one gets a new directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import time

STAMP_NAME = "llm-onprem-quantize.json"
STAMP_VERSION = 1
SCHEMES = ("W4A16", "W8A8")
METHODS = ("rtn", "gptq")
PIPELINES = ("auto", "oneshot", "model_free")
# Leaves vLLM fuses into one layer: all members must share one scheme.
FUSED_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
# 2-D weights that are not Linear layers (llm-compressor's name-based
# model-free path would otherwise quantize them).
EMBEDDING_LEAVES = ("embed_tokens", "wte", "wpe", "word_embeddings", "embed_in", "tok_embeddings")
SIXTEEN_BIT = ("BF16", "F16")
MAX_HEADER = 100 * 1024 * 1024
_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class QuantizeError(Exception):
    """An error an operator can act on; ``kind`` classifies it for tests and callers."""

    def __init__(self, message, kind="invalid"):
        super().__init__(message)
        self.message = message
        self.kind = kind


# --------------------------------------------------------------------------
# Reading a checkpoint without torch
# --------------------------------------------------------------------------


def read_safetensors_header(path):
    """Return {tensor name: {"dtype", "shape"}} from a safetensors file's header."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise QuantizeError(f"{path} is not a safetensors file (shorter than 8 bytes)", "checkpoint")
            (length,) = struct.unpack("<Q", raw)
            if length <= 0 or length > MAX_HEADER:
                raise QuantizeError(f"{path} is not a safetensors file (header length {length})", "checkpoint")
            header = f.read(length)
    except OSError as exc:
        raise QuantizeError(f"cannot read {path}: {exc.strerror}", "checkpoint") from exc
    if len(header) != length:
        raise QuantizeError(f"{path} is truncated (header shorter than {length} bytes)", "checkpoint")
    try:
        table = json.loads(header.decode("utf-8"))
    except ValueError as exc:
        raise QuantizeError(f"{path} has a damaged safetensors header: {exc}", "checkpoint") from exc
    if not isinstance(table, dict):
        raise QuantizeError(f"{path} has a damaged safetensors header (not a table)", "checkpoint")
    out = {}
    for name, info in table.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or "dtype" not in info or "shape" not in info:
            raise QuantizeError(f"{path} has a damaged entry for tensor {name}", "checkpoint")
        out[name] = {"dtype": info["dtype"], "shape": list(info["shape"])}
    return out


def checkpoint_files(model_dir):
    """The safetensors files of a checkpoint: those of its index, or every *.safetensors."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise QuantizeError(f"{index} is unreadable or has no weight_map: {exc}", "checkpoint") from exc
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not os.path.isfile(os.path.join(model_dir, f))]
        if missing:
            raise QuantizeError(f"{model_dir}: shards named in the index are missing: {', '.join(missing)}", "checkpoint")
        return files
    try:
        files = sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors"))
    except OSError as exc:
        raise QuantizeError(f"cannot list {model_dir}: {exc.strerror}", "checkpoint") from exc
    if not files:
        raise QuantizeError(f"{model_dir} has no safetensors weights (only safetensors checkpoints can be quantized)", "checkpoint")
    return files


def checkpoint_tensors(model_dir):
    """Merge the headers of a checkpoint's shards: {name: {"dtype", "shape", "file"}}."""
    tensors = {}
    for rel in checkpoint_files(model_dir):
        for name, info in read_safetensors_header(os.path.join(model_dir, rel)).items():
            tensors[name] = dict(info, file=rel)
    return tensors


def weight_bytes(model_dir):
    """Total size of a checkpoint's safetensors files."""
    return sum(os.path.getsize(os.path.join(model_dir, rel)) for rel in checkpoint_files(model_dir))


def leaf(name):
    return name.rsplit(".", 1)[-1]


def linear_modules(tensors):
    """Module names of the Linear layers: 2-D ``.weight`` tensors that are not norms or embeddings."""
    out = []
    for name, info in tensors.items():
        module, _, param = name.rpartition(".")
        if param != "weight" or not module or len(info["shape"]) != 2:
            continue
        if module.endswith("norm") or leaf(module) in EMBEDDING_LEAVES:
            continue
        out.append(module)
    return sorted(out)


# --------------------------------------------------------------------------
# Ignore list
# --------------------------------------------------------------------------


def _valid_names_hint(modules):
    leaves = sorted({leaf(m) for m in modules})
    example = next((m for m in modules if "." in m), modules[0] if modules else "")
    return f"valid names: {', '.join(leaves)} (or a full module name such as {example}, or 're:<regex>')"


def resolve_ignore(entries, modules):
    """Check an ignore list against the model's Linear modules.

    ``entries`` items are a leaf name (``lm_head``, ``q_proj``), a full module
    name, or ``re:<regex>`` (matched from the start of the module name, as
    llm-compressor and vLLM do). Returns (kept modules, llm-compressor ignore
    list). Raises QuantizeError for a name that matches nothing, a fused group
    kept only in part, or a list that keeps every layer.
    """
    if not modules:
        raise QuantizeError("the checkpoint has no Linear layers to quantize", "checkpoint")
    module_set = set(modules)
    kept = set()
    out = []
    unknown = []
    for entry in entries:
        entry = str(entry).strip()
        if not entry:
            unknown.append("''")
            continue
        if entry.startswith("re:"):
            try:
                rx = re.compile(entry[3:])
            except re.error as exc:
                raise QuantizeError(f"ignore entry {entry!r} is not a valid regular expression: {exc}") from exc
            matched = {m for m in modules if rx.match(m)}
            emitted = entry
        elif entry in module_set:
            matched = {entry}
            emitted = entry
        elif "." not in entry:
            matched = {m for m in modules if leaf(m) == entry}
            emitted = "re:.*\\." + re.escape(entry) + "$"
        else:
            matched = set()
            emitted = entry
        if not matched:
            unknown.append(entry)
            continue
        kept |= matched
        if emitted not in out:
            out.append(emitted)
    if unknown:
        raise QuantizeError(
            f"ignore list entries match no Linear layer of the model: {', '.join(unknown)}; {_valid_names_hint(modules)}",
            "ignore",
        )
    problems = []
    for group in FUSED_GROUPS:
        parents = {}
        for m in modules:
            parent, _, lf = m.rpartition(".")
            if lf in group:
                parents.setdefault(parent, set()).add(m)
        partial = []
        for parent, members in sorted(parents.items()):
            inside = members & kept
            if inside and inside != members:
                partial.append((parent, sorted(leaf(m) for m in inside), sorted(leaf(m) for m in members - inside)))
        if partial:
            parent, have, missing = partial[0]
            more = f" (and {len(partial) - 1} more layers)" if len(partial) > 1 else ""
            problems.append(
                f"{'/'.join(group)} must be kept or quantized together: in {parent or 'the model'}{more} "
                f"{', '.join(have)} would stay 16-bit but {', '.join(missing)} would not. vLLM fuses them "
                f"into one layer and refuses mixed schemes; add {', '.join(missing)} to the ignore list or remove "
                f"{', '.join(have)}"
            )
    if problems:
        raise QuantizeError("; ".join(problems), "fused")
    if kept == module_set:
        raise QuantizeError("the ignore list keeps every Linear layer in 16-bit: nothing would be quantized", "ignore")
    return sorted(kept), out


# --------------------------------------------------------------------------
# Source, recipe and plan
# --------------------------------------------------------------------------


def sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                return h.hexdigest()
            h.update(block)


def canonical_hash(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def resolve_source(source, store):
    """An absolute directory, or a model store name (its ``current`` revision). Returns the real path."""
    if os.path.isabs(source):
        path = source
    elif _COMPONENT.match(source):
        path = os.path.join(store, source, "current")
        if not os.path.lexists(path):
            raise QuantizeError(
                f"source model {source!r} is not published in the model store ({path} is missing): "
                "list it in model_store_models (or give an absolute directory)",
                "source",
            )
    else:
        raise QuantizeError(f"source {source!r} is neither an absolute directory nor a model store name", "source")
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        raise QuantizeError(f"source {source!r}: {real} is not a directory", "source")
    if not os.path.isfile(os.path.join(real, "config.json")):
        raise QuantizeError(f"source {source!r}: {real} has no config.json (not a Hugging Face checkpoint)", "source")
    return real


def source_digest(model_dir):
    """Digest of the source checkpoint.

    A model store revision has a verified stamp beside it
    (``<revision>.verified.json``, every file's sha256): its file list is
    hashed. Another directory is described by its file names, sizes and
    modification times (hashing tens of GB on every run would be too slow).
    """
    stamp = model_dir.rstrip("/") + ".verified.json"
    try:
        with open(stamp, encoding="utf-8") as f:
            files = json.load(f)["files"]
        entries = sorted((e["path"], e["size"], e["sha256"]) for e in files)
        return {"kind": "verified-stamp", "sha256": canonical_hash(entries), "stamp": stamp}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    entries = []
    for dirpath, dirnames, filenames in os.walk(model_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if fn.startswith("."):
                continue
            full = os.path.join(dirpath, fn)
            st = os.stat(full)
            entries.append((os.path.relpath(full, model_dir), st.st_size, st.st_mtime_ns))
    return {"kind": "listing", "sha256": canonical_hash(entries)}


def choose_pipeline(requested, method, size, model_free_min_bytes):
    """oneshot loads the whole model; model_free works shard by shard (data-free only)."""
    if requested == "model_free" and method != "rtn":
        raise QuantizeError("pipeline model_free is data-free: it cannot run GPTQ (use method rtn or pipeline oneshot)")
    if requested != "auto":
        return requested
    if method == "rtn" and size >= model_free_min_bytes:
        return "model_free"
    return "oneshot"


def build_recipe(params, ignore_list, pipeline, digest, calibration_sha256=None):
    """The canonical recipe (what decides the output) and its hash."""
    recipe = {
        "scheme": params["scheme"],
        "method": params["method"],
        "ignore": list(ignore_list),
        "pipeline": pipeline,
        "source_sha256": digest["sha256"],
    }
    if params["scheme"] == "W4A16":
        recipe["group_size"] = int(params["group_size"])
    if params["method"] == "gptq":
        recipe["calibration"] = {
            "sha256": calibration_sha256,
            "samples": int(params["calibration_samples"]),
            "max_seq_length": int(params["calibration_max_seq_length"]),
        }
    return recipe, canonical_hash(recipe)


def read_stamp(out_dir):
    try:
        with open(os.path.join(out_dir, STAMP_NAME), encoding="utf-8") as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def store_paths(store, name, recipe_hash):
    base = os.path.join(store, name)
    short = recipe_hash[:12]
    return {
        "model_dir": base,
        "output": os.path.join(base, short),
        "staging": os.path.join(base, ".staging-" + short),
        "job": os.path.join(base, ".quantize-" + short + ".job.json"),
        "report": os.path.join(base, ".quantize-" + short + ".report.json"),
        "current": os.path.join(base, "current"),
        "cache": os.path.join(base, ".quantize-cache"),
    }


def validate_params(params):
    for key, allowed in (("scheme", SCHEMES), ("method", METHODS), ("pipeline", PIPELINES)):
        if params[key] not in allowed:
            raise QuantizeError(f"{key} must be one of {', '.join(allowed)}, not {params[key]!r}")
    if not _COMPONENT.match(params["name"]) or params["name"] == "current":
        raise QuantizeError(f"name {params['name']!r} must be one directory name (letters, digits, '.', '_', '+', '-'; not 'current')")
    if params["scheme"] == "W4A16" and int(params["group_size"]) not in (32, 64, 128, 256):
        raise QuantizeError(f"group_size must be 32, 64, 128 or 256 for W4A16 (vLLM's kernels), not {params['group_size']}")
    if params["method"] == "gptq":
        path = params.get("calibration_path") or ""
        if not os.path.isabs(path):
            raise QuantizeError("method gptq needs calibration_path: an absolute path on the host to a .jsonl ({\"text\": ...} per line) or .txt file")
        if not os.path.isfile(path):
            raise QuantizeError(f"calibration file {path} does not exist on the host", "source")
        if int(params["calibration_samples"]) < 1 or int(params["calibration_max_seq_length"]) < 16:
            raise QuantizeError("calibration_samples must be >= 1 and calibration_max_seq_length >= 16")


def plan(params):
    """Everything the role needs to decide and run one quantization. Reads only."""
    validate_params(params)
    store = params["store"]
    source_dir = resolve_source(params["source"], store)
    tensors = checkpoint_tensors(source_dir)
    modules = linear_modules(tensors)
    kept, ignore_list = resolve_ignore(params["ignore"], modules)
    size = weight_bytes(source_dir)
    pipeline = choose_pipeline(params["pipeline"], params["method"], size, int(params["model_free_min_bytes"]))
    digest = source_digest(source_dir)
    cal_sha = sha256_file(params["calibration_path"]) if params["method"] == "gptq" else None
    recipe, recipe_hash = build_recipe(params, ignore_list, pipeline, digest, cal_sha)
    paths = store_paths(store, params["name"], recipe_hash)
    stamp = read_stamp(paths["output"])
    published = bool(stamp) and stamp.get("recipe_hash") == recipe_hash
    current_target = os.readlink(paths["current"]) if os.path.islink(paths["current"]) else ""
    embeddings = sorted(
        n.rpartition(".")[0] for n, i in tensors.items()
        if n.endswith(".weight") and len(i["shape"]) == 2 and leaf(n.rpartition(".")[0]) in EMBEDDING_LEAVES
    )
    generate = int(params["generate_tokens"]) if size <= int(params["generate_max_bytes"]) else 0
    job = {
        "source": source_dir,
        "staging": paths["staging"],
        "report": paths["report"],
        "scheme": params["scheme"],
        "group_size": int(params["group_size"]),
        "method": params["method"],
        "pipeline": pipeline,
        "ignore": ignore_list,
        "model_free_extra_ignore": ["re:.*\\." + re.escape(leaf(e)) + "$" if "." in e else e for e in embeddings],
        "device": params["device"],
        "calibration": {
            "path": params.get("calibration_path") or "",
            "samples": int(params["calibration_samples"]),
            "max_seq_length": int(params["calibration_max_seq_length"]),
        },
        "generate_tokens": generate,
        "prompt": params["prompt"],
    }
    return {
        "name": params["name"],
        "source_path": source_dir,
        "source_digest": digest,
        "source_bytes": size,
        "recipe": recipe,
        "recipe_hash": recipe_hash,
        "revision": recipe_hash[:12],
        "published": published,
        "published_path": paths["output"],
        "current_target": current_target,
        "paths": paths,
        "pipeline": pipeline,
        "modules": {"linear": len(modules), "kept": kept, "quantized": len(modules) - len(kept)},
        "ignore": ignore_list,
        "job": job,
    }


# --------------------------------------------------------------------------
# Checking the output
# --------------------------------------------------------------------------


def _expected_format(scheme):
    return "pack-quantized" if scheme == "W4A16" else "int-quantized"


def check_output(out_dir, source_tensors, recipe):
    """Problems with a quantized checkpoint (empty list = as expected).

    Checks config.json's quantization_config (compressed-tensors, format,
    bits, group size, ignore list) and the tensors: every Linear layer not
    kept is stored quantized (W4A16: weight_packed int32 + weight_scale +
    weight_shape; W8A8: int8 weight + weight_scale), every kept layer and
    every embedding keeps its 16-bit weight.
    """
    problems = []
    try:
        with open(os.path.join(out_dir, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as exc:
        return [f"config.json unreadable: {exc}"]
    q = cfg.get("quantization_config")
    if not isinstance(q, dict):
        return ["config.json has no quantization_config"]
    if q.get("quant_method") != "compressed-tensors":
        problems.append(f"quantization_config.quant_method is {q.get('quant_method')!r}, not 'compressed-tensors'")
    fmt = _expected_format(recipe["scheme"])
    if q.get("format") != fmt:
        problems.append(f"quantization_config.format is {q.get('format')!r}, not {fmt!r}")
    groups = list((q.get("config_groups") or {}).values())
    if len(groups) != 1:
        problems.append(f"quantization_config has {len(groups)} config groups, not 1")
    else:
        w = groups[0].get("weights") or {}
        bits = 4 if recipe["scheme"] == "W4A16" else 8
        if w.get("num_bits") != bits:
            problems.append(f"weights.num_bits is {w.get('num_bits')}, not {bits}")
        if recipe["scheme"] == "W4A16" and w.get("group_size") != recipe["group_size"]:
            problems.append(f"weights.group_size is {w.get('group_size')}, not {recipe['group_size']}")
    if sorted(q.get("ignore") or []) != sorted(recipe["ignore"]):
        problems.append(f"quantization_config.ignore is {q.get('ignore')}, not {recipe['ignore']}")
    try:
        out = checkpoint_tensors(out_dir)
    except QuantizeError as exc:
        return problems + [exc.message]
    modules = linear_modules(source_tensors)
    kept, _ = resolve_ignore(recipe["ignore"], modules)
    kept = set(kept)
    bad_q, bad_k = [], []
    for m in modules:
        if m in kept:
            w = out.get(m + ".weight")
            if not w or w["dtype"] not in SIXTEEN_BIT or m + ".weight_packed" in out:
                bad_k.append(m)
        elif recipe["scheme"] == "W4A16":
            p = out.get(m + ".weight_packed")
            if not p or p["dtype"] != "I32" or m + ".weight_scale" not in out or m + ".weight_shape" not in out:
                bad_q.append(m)
        else:
            w = out.get(m + ".weight")
            if not w or w["dtype"] != "I8" or m + ".weight_scale" not in out:
                bad_q.append(m)
    for name, info in source_tensors.items():
        module = name.rpartition(".")[0]
        if name.endswith(".weight") and leaf(module) in EMBEDDING_LEAVES:
            o = out.get(name)
            if not o or o["dtype"] not in SIXTEEN_BIT or o["shape"] != info["shape"]:
                bad_k.append(module)
    if bad_q:
        problems.append(f"{len(bad_q)} layers are not stored quantized as {recipe['scheme']}, e.g. {bad_q[0]}")
    if bad_k:
        problems.append(f"{len(bad_k)} layers should be kept in 16-bit but are not, e.g. {bad_k[0]}")
    return problems


# --------------------------------------------------------------------------
# Publishing and pruning
# --------------------------------------------------------------------------


def _fix_tree(path, uid, gid, file_mode, dir_mode):
    for dirpath, _dirnames, filenames in os.walk(path):
        os.chown(dirpath, uid, gid)
        os.chmod(dirpath, dir_mode)
        for fn in filenames:
            full = os.path.join(dirpath, fn)
            os.chown(full, uid, gid, follow_symlinks=False)
            if not os.path.islink(full):
                os.chmod(full, file_mode)


def write_json(path, data, uid=-1, gid=-1, mode=0o640):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.chown(tmp, uid, gid)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def make_stamp(planned, report):
    return {
        "version": STAMP_VERSION,
        "name": planned["name"],
        "recipe_hash": planned["recipe_hash"],
        "recipe": planned["recipe"],
        "source": {"path": planned["source_path"], "bytes": planned["source_bytes"], "digest": planned["source_digest"]},
        "kept_16bit": planned["modules"]["kept"],
        "quantized_layers": planned["modules"]["quantized"],
        "versions": report.get("versions", {}),
        "wall_seconds": report.get("wall_seconds"),
        "quantize_seconds": report.get("quantize_seconds"),
        "peak_rss_bytes": report.get("peak_rss_bytes"),
        "peak_rss_quantize_bytes": report.get("peak_rss_quantize_bytes"),
        "generated_tokens": report.get("generated_tokens"),
        "generated_sample": report.get("generated_sample"),
        "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def tree_bytes(path):
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for fn in filenames:
            total += os.lstat(os.path.join(dirpath, fn)).st_size
    return total


def publish(planned, report, uid, gid, file_mode, dir_mode):
    """Check the staging directory, stamp it and rename it into place. Returns the stamp."""
    paths = planned["paths"]
    staging, final = paths["staging"], paths["output"]
    if not os.path.isdir(staging):
        raise QuantizeError(f"nothing to publish: {staging} does not exist (the quantization did not run)", "publish")
    source_tensors = checkpoint_tensors(planned["source_path"])
    problems = check_output(staging, source_tensors, planned["recipe"])
    if problems:
        raise QuantizeError(
            f"the quantized checkpoint in {staging} is not as expected, nothing was published: " + "; ".join(problems),
            "verify",
        )
    gen = planned["job"]["generate_tokens"]
    if gen and not report.get("generated_tokens"):
        raise QuantizeError(f"the worker's report {paths['report']} shows no generation check; nothing was published", "verify")
    stamp = make_stamp(planned, report)
    stamp["output_bytes"] = tree_bytes(staging)
    write_json(os.path.join(staging, STAMP_NAME), stamp, uid, gid, file_mode)
    _fix_tree(staging, uid, gid, file_mode, dir_mode)
    aside = None
    if os.path.lexists(final):
        # A directory with this hash but no valid stamp (an interrupted manual
        # copy, a damaged stamp): replace it, never merge into it.
        aside = os.path.join(paths["model_dir"], f".replaced-{planned['revision']}-{int(time.time())}")
        os.rename(final, aside)
    os.rename(staging, final)
    if aside:
        shutil.rmtree(aside, ignore_errors=True)
    for leftover in (paths["job"],):
        if os.path.exists(leftover):
            os.unlink(leftover)
    return stamp


def prune_list(entries, keep_old, protect):
    """Published outputs to remove.

    ``entries``: [(directory name, mtime)] of published outputs of one model;
    ``protect``: names never removed (the current and the previous target).
    Keeps the ``keep_old`` newest others.
    """
    others = sorted((e for e in entries if e[0] not in protect), key=lambda e: (-e[1], e[0]))
    return sorted(name for name, _ in others[max(keep_old, 0):])


def published_outputs(model_dir):
    """[(name, mtime)] of the directories in model_dir that carry a quantize stamp."""
    out = []
    try:
        names = os.listdir(model_dir)
    except OSError:
        return out
    for n in names:
        full = os.path.join(model_dir, n)
        if n.startswith(".") or os.path.islink(full) or not os.path.isdir(full):
            continue
        if os.path.isfile(os.path.join(full, STAMP_NAME)):
            out.append((n, os.stat(full).st_mtime))
    return out


# --------------------------------------------------------------------------
# Shared by the two modules
# --------------------------------------------------------------------------

ARGUMENT_SPEC = {
    "name": {"type": "str", "required": True},
    "source": {"type": "str", "required": True},
    "store": {"type": "path", "default": "/var/lib/llm-onprem/models"},
    "scheme": {"type": "str", "default": "W4A16", "choices": list(SCHEMES)},
    "method": {"type": "str", "default": "rtn", "choices": list(METHODS)},
    "group_size": {"type": "int", "default": 128},
    "ignore": {"type": "list", "elements": "str", "default": ["lm_head"]},
    "pipeline": {"type": "str", "default": "auto", "choices": list(PIPELINES)},
    "model_free_min_bytes": {"type": "int", "default": 17179869184},
    "device": {"type": "str", "default": "cpu", "choices": ["cpu", "gpu"]},
    "calibration_path": {"type": "path"},
    "calibration_samples": {"type": "int", "default": 256},
    "calibration_max_seq_length": {"type": "int", "default": 2048},
    "generate_tokens": {"type": "int", "default": 16},
    "generate_max_bytes": {"type": "int", "default": 17179869184},
    "prompt": {"type": "str", "default": "Say hello in one short sentence."},
}


def module_params(params):
    """Module parameters -> the plan's parameter dict."""
    return {k: params.get(k) for k in ARGUMENT_SPEC}

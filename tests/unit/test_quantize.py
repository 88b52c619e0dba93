"""Unit tests of module_utils/quantize.py: safetensors headers, the ignore-list checks,
recipe hashing, pipeline choice, output checks, publishing and pruning.

Checkpoints are synthetic safetensors files with the tiny Qwen2 fixture's layer
names and shapes (tests/fixtures/tiny_model): a real header, zero-filled data.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import struct

import pytest
from conftest import ANSIBLE, run_ansible_module

import quantize as q

HIDDEN, INTER, KV, VOCAB, LAYERS = 256, 768, 128, 2048, 2


def qwen2_tensors(layers=LAYERS):
    t = {
        "model.embed_tokens.weight": ("BF16", [VOCAB, HIDDEN]),
        "model.norm.weight": ("BF16", [HIDDEN]),
        "lm_head.weight": ("BF16", [VOCAB, HIDDEN]),
    }
    for i in range(layers):
        p = f"model.layers.{i}"
        t.update({
            f"{p}.input_layernorm.weight": ("BF16", [HIDDEN]),
            f"{p}.post_attention_layernorm.weight": ("BF16", [HIDDEN]),
            f"{p}.self_attn.q_proj.weight": ("BF16", [HIDDEN, HIDDEN]),
            f"{p}.self_attn.q_proj.bias": ("BF16", [HIDDEN]),
            f"{p}.self_attn.k_proj.weight": ("BF16", [KV, HIDDEN]),
            f"{p}.self_attn.k_proj.bias": ("BF16", [KV]),
            f"{p}.self_attn.v_proj.weight": ("BF16", [KV, HIDDEN]),
            f"{p}.self_attn.v_proj.bias": ("BF16", [KV]),
            f"{p}.self_attn.o_proj.weight": ("BF16", [HIDDEN, HIDDEN]),
            f"{p}.mlp.gate_proj.weight": ("BF16", [INTER, HIDDEN]),
            f"{p}.mlp.up_proj.weight": ("BF16", [INTER, HIDDEN]),
            f"{p}.mlp.down_proj.weight": ("BF16", [HIDDEN, INTER]),
        })
    return t


SIZES = {"BF16": 2, "F16": 2, "I32": 4, "I64": 8, "I8": 1, "F32": 4}


def write_safetensors(path, tensors):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, (dtype, shape) in sorted(tensors.items()):
        n = SIZES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def make_model(path, tensors=None, shards=1):
    os.makedirs(path, exist_ok=True)
    tensors = tensors or qwen2_tensors()
    (path / "config.json").write_text('{"model_type": "qwen2"}\n')
    if shards == 1:
        write_safetensors(path / "model.safetensors", tensors)
        return path
    names = sorted(tensors)
    weight_map = {}
    for s in range(shards):
        fn = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s::shards]}
        write_safetensors(path / fn, part)
        weight_map.update({n: fn for n in part})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


def quantized_tensors(kept, scheme="W4A16", group=128, source=None):
    out = {}
    for name, (dtype, shape) in (source or qwen2_tensors()).items():
        module, _, param = name.rpartition(".")
        is_linear = param == "weight" and len(shape) == 2 and q.leaf(module) not in q.EMBEDDING_LEAVES
        if not is_linear or module in kept:
            out[name] = (dtype, shape)
        elif scheme == "W4A16":
            out[module + ".weight_packed"] = ("I32", [shape[0], shape[1] // 8])
            out[module + ".weight_scale"] = ("BF16", [shape[0], shape[1] // group])
            out[module + ".weight_shape"] = ("I64", [2])
        else:
            out[module + ".weight"] = ("I8", shape)
            out[module + ".weight_scale"] = ("BF16", [shape[0], 1])
    return out


def qconfig(ignore, scheme="W4A16", group=128):
    weights = {"num_bits": 4, "group_size": group, "strategy": "group"} if scheme == "W4A16" else \
        {"num_bits": 8, "group_size": None, "strategy": "channel"}
    fmt = "pack-quantized" if scheme == "W4A16" else "int-quantized"
    return {"quant_method": "compressed-tensors", "format": fmt, "ignore": ignore,
            "config_groups": {"group_0": {"format": fmt, "targets": ["Linear"], "weights": weights}}}


MODULES = q.linear_modules({n: {"dtype": d, "shape": s} for n, (d, s) in qwen2_tensors().items()})
QKV = ["re:.*\\.q_proj$", "re:.*\\.k_proj$", "re:.*\\.v_proj$"]


def params(tmp_path, **kw):
    p = {k: v.get("default") for k, v in q.ARGUMENT_SPEC.items()}
    p.update(name="tiny-w4a16", source="tiny", store=str(tmp_path / "store"))
    p.update(kw)
    return p


def publish_source(tmp_path, name="tiny", revision="r1", stamp=True):
    base = tmp_path / "store" / name
    make_model(base / revision)
    os.symlink(revision, base / "current")
    if stamp:
        (base / f"{revision}.verified.json").write_text(json.dumps({"files": [
            {"path": "config.json", "size": 24, "sha256": "a" * 64},
            {"path": "model.safetensors", "size": 1, "sha256": "b" * 64}]}))
    return base / revision


# --------------------------------------------------------------------------
# Headers and layers
# --------------------------------------------------------------------------


def test_read_header_and_linear_modules(tmp_path):
    make_model(tmp_path / "m")
    tensors = q.checkpoint_tensors(str(tmp_path / "m"))
    assert tensors["lm_head.weight"]["shape"] == [VOCAB, HIDDEN]
    assert tensors["model.layers.0.mlp.up_proj.weight"]["file"] == "model.safetensors"
    assert len(MODULES) == 1 + 7 * LAYERS
    assert "lm_head" in MODULES and "model.embed_tokens" not in MODULES
    assert not [m for m in MODULES if m.endswith("norm")]


def test_sharded_checkpoint_reads_every_shard(tmp_path):
    make_model(tmp_path / "m", shards=3)
    assert q.checkpoint_files(str(tmp_path / "m")) == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert len(q.checkpoint_tensors(str(tmp_path / "m"))) == len(qwen2_tensors())


@pytest.mark.parametrize(("content", "needle"), [
    (b"", "shorter than 8 bytes"),
    (struct.pack("<Q", 0), "header length 0"),
    (struct.pack("<Q", 10**12), "header length"),
    (struct.pack("<Q", 100) + b"{}", "truncated"),
    (struct.pack("<Q", 5) + b"nope!", "damaged safetensors header"),
    (struct.pack("<Q", 2) + b"[]", "not a table"),
    (struct.pack("<Q", 12) + b'{"a": {"x":1', "damaged"),
    (struct.pack("<Q", 14) + b'{"a": {"x":1}}', "damaged entry for tensor a"),
])
def test_bad_safetensors_headers(tmp_path, content, needle):
    f = tmp_path / "x.safetensors"
    f.write_bytes(content)
    with pytest.raises(q.QuantizeError, match=needle) as exc:
        q.read_safetensors_header(str(f))
    assert exc.value.kind == "checkpoint"


def test_missing_and_unlisted_shards(tmp_path):
    make_model(tmp_path / "m", shards=2)
    os.unlink(tmp_path / "m" / "model-00002-of-00002.safetensors")
    with pytest.raises(q.QuantizeError, match="shards named in the index are missing: model-00002-of-00002"):
        q.checkpoint_files(str(tmp_path / "m"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(q.QuantizeError, match="no safetensors weights"):
        q.checkpoint_files(str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(q.QuantizeError, match="no weight_map"):
        q.checkpoint_files(str(tmp_path / "bad"))


# --------------------------------------------------------------------------
# Ignore list
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("entries", "kept", "emitted"), [
    (["lm_head"], 1, ["lm_head"]),
    (["lm_head", "q_proj", "k_proj", "v_proj"], 1 + 3 * LAYERS, ["lm_head", *QKV]),
    (["q_proj", "k_proj", "v_proj"], 3 * LAYERS, QKV),
    (["lm_head", "lm_head"], 1, ["lm_head"]),
    (["gate_proj", "up_proj"], 2 * LAYERS, ["re:.*\\.gate_proj$", "re:.*\\.up_proj$"]),
    (["down_proj", "o_proj"], 2 * LAYERS, ["re:.*\\.down_proj$", "re:.*\\.o_proj$"]),
    (["re:.*self_attn\\.(q|k|v)_proj$"], 3 * LAYERS, ["re:.*self_attn\\.(q|k|v)_proj$"]),
    ([f"model.layers.0.self_attn.{x}_proj" for x in "qkv"], 3, [f"model.layers.0.self_attn.{x}_proj" for x in "qkv"]),
    ([], 0, []),
])
def test_resolve_ignore_accepts(entries, kept, emitted):
    got_kept, got = q.resolve_ignore(entries, MODULES)
    assert len(got_kept) == kept
    assert got == emitted


@pytest.mark.parametrize(("entries", "kind", "needles"), [
    (["q_proj"], "fused", ["q_proj/k_proj/v_proj must be kept or quantized together", "add k_proj, v_proj",
                           "model.layers.0.self_attn (and 1 more layers)"]),
    (["lm_head", "q_proj", "k_proj"], "fused", ["add v_proj to the ignore list"]),
    (["gate_proj"], "fused", ["gate_proj/up_proj must be kept", "add up_proj"]),
    (["model.layers.1.self_attn.q_proj"], "fused", ["in model.layers.1.self_attn q_proj would stay 16-bit"]),
    (["re:.*layers\\.0\\..*(q|k)_proj$"], "fused", ["add v_proj"]),
    (["q_proj", "gate_proj"], "fused", ["q_proj/k_proj/v_proj", "gate_proj/up_proj"]),
    (["lm_head", "qkv_proj"], "ignore", ["match no Linear layer of the model: qkv_proj",
                                         "valid names: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"]),
    (["embed_tokens"], "ignore", ["embed_tokens"]),
    (["model.layers.9.self_attn.q_proj"], "ignore", ["model.layers.9.self_attn.q_proj"]),
    (["re:^nothing$"], "ignore", ["re:^nothing$"]),
    ([""], "ignore", ["''"]),
    (["re:.*"], "ignore", ["keeps every Linear layer"]),
    (["re:(unclosed"], "invalid", ["not a valid regular expression"]),
])
def test_resolve_ignore_refuses(entries, kind, needles):
    with pytest.raises(q.QuantizeError) as exc:
        q.resolve_ignore(entries, MODULES)
    assert exc.value.kind == kind
    for needle in needles:
        assert needle in exc.value.message


def test_model_without_linear_layers():
    with pytest.raises(q.QuantizeError, match="no Linear layers"):
        q.resolve_ignore(["lm_head"], [])


# --------------------------------------------------------------------------
# Source, recipe, pipeline, plan
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("requested", "method", "size", "expected"), [
    ("auto", "rtn", 5 * 2**20, "oneshot"),
    ("auto", "rtn", 65 * 10**9, "model_free"),
    ("auto", "rtn", 16 * 2**30, "model_free"),
    ("auto", "gptq", 65 * 10**9, "oneshot"),
    ("oneshot", "rtn", 65 * 10**9, "oneshot"),
    ("model_free", "rtn", 1, "model_free"),
])
def test_choose_pipeline(requested, method, size, expected):
    assert q.choose_pipeline(requested, method, size, 16 * 2**30) == expected


def test_model_free_refuses_gptq():
    with pytest.raises(q.QuantizeError, match="cannot run GPTQ"):
        q.choose_pipeline("model_free", "gptq", 1, 1)


def test_recipe_hash_changes_with_every_input():
    base = {"scheme": "W4A16", "method": "rtn", "group_size": 128}
    digest = {"sha256": "s" * 64}
    _, h = q.build_recipe(base, ["lm_head"], "oneshot", digest)
    assert q.build_recipe(dict(base), ["lm_head"], "oneshot", dict(digest))[1] == h
    variants = [
        q.build_recipe(dict(base, group_size=64), ["lm_head"], "oneshot", digest),
        q.build_recipe(base, ["lm_head", *QKV], "oneshot", digest),
        q.build_recipe(base, ["lm_head"], "model_free", digest),
        q.build_recipe(base, ["lm_head"], "oneshot", {"sha256": "t" * 64}),
        q.build_recipe(dict(base, scheme="W8A8"), ["lm_head"], "oneshot", digest),
        q.build_recipe(dict(base, method="gptq", calibration_samples=16, calibration_max_seq_length=256),
                       ["lm_head"], "oneshot", digest, "c" * 64),
    ]
    assert len({h} | {v[1] for v in variants}) == 1 + len(variants)
    w8, _ = q.build_recipe(dict(base, scheme="W8A8"), ["lm_head"], "oneshot", digest)
    assert "group_size" not in w8


def test_source_digest_prefers_the_verified_stamp(tmp_path):
    rev = publish_source(tmp_path)
    d = q.source_digest(str(rev))
    assert d["kind"] == "verified-stamp"
    (rev / "extra.txt").write_text("x")
    assert q.source_digest(str(rev))["sha256"] == d["sha256"]
    other = make_model(tmp_path / "plain")
    first = q.source_digest(str(other))
    assert first["kind"] == "listing"
    (other / "config.json").write_text('{"model_type": "qwen2", "changed": 1}\n')
    assert q.source_digest(str(other))["sha256"] != first["sha256"]


@pytest.mark.parametrize(("source", "setup", "needle"), [
    ("tiny", None, "is not published in the model store"),
    ("../etc", None, "neither an absolute directory nor a model store name"),
    ("/nonexistent/model", None, "is not a directory"),
    ("/ABS", "noconfig", "has no config.json"),
])
def test_resolve_source_errors(tmp_path, source, setup, needle):
    if setup == "noconfig":
        (tmp_path / "noconfig").mkdir()
        source = str(tmp_path / "noconfig")
    with pytest.raises(q.QuantizeError, match=needle) as exc:
        q.resolve_source(source, str(tmp_path / "store"))
    assert exc.value.kind == "source"


@pytest.mark.parametrize(("override", "needle"), [
    ({"scheme": "W3A16"}, "scheme must be one of"),
    ({"method": "awq"}, "method must be one of"),
    ({"pipeline": "fast"}, "pipeline must be one of"),
    ({"name": "current"}, "one directory name"),
    ({"name": "a/b"}, "one directory name"),
    ({"group_size": 100}, "group_size must be 32, 64, 128 or 256"),
    ({"method": "gptq"}, "method gptq needs calibration_path"),
    ({"method": "gptq", "calibration_path": "/nonexistent.jsonl"}, "does not exist on the host"),
])
def test_validate_params(tmp_path, override, needle):
    with pytest.raises(q.QuantizeError, match=needle):
        q.validate_params(params(tmp_path, **override))


def test_plan_from_model_store_source(tmp_path):
    rev = publish_source(tmp_path)
    p = q.plan(params(tmp_path))
    assert p["source_path"] == str(rev)
    assert p["pipeline"] == "oneshot" and not p["published"] and p["current_target"] == ""
    assert p["published_path"] == str(tmp_path / "store" / "tiny-w4a16" / p["recipe_hash"][:12])
    assert p["modules"] == {"linear": len(MODULES), "kept": ["lm_head"], "quantized": len(MODULES) - 1}
    job = p["job"]
    assert job["ignore"] == ["lm_head"] and job["model_free_extra_ignore"] == ["re:.*\\.embed_tokens$"]
    assert job["generate_tokens"] == 16 and job["staging"].endswith("/.staging-" + p["revision"])
    assert q.plan(params(tmp_path))["recipe_hash"] == p["recipe_hash"]
    assert q.plan(params(tmp_path, ignore=["lm_head", "q_proj", "k_proj", "v_proj"]))["recipe_hash"] != p["recipe_hash"]
    big = q.plan(params(tmp_path, model_free_min_bytes=1, generate_max_bytes=1))
    assert big["pipeline"] == "model_free" and big["job"]["generate_tokens"] == 0


def test_plan_refuses_bad_ignore_before_anything(tmp_path):
    publish_source(tmp_path)
    with pytest.raises(q.QuantizeError, match="add k_proj, v_proj"):
        q.plan(params(tmp_path, ignore=["lm_head", "q_proj"]))
    assert not (tmp_path / "store" / "tiny-w4a16").exists()


def test_plan_gptq_hashes_the_calibration_file(tmp_path):
    publish_source(tmp_path)
    cal = tmp_path / "cal.jsonl"
    cal.write_text('{"text": "one"}\n')
    kw = {"method": "gptq", "calibration_path": str(cal), "calibration_samples": 4, "calibration_max_seq_length": 64}
    first = q.plan(params(tmp_path, **kw))
    assert first["recipe"]["calibration"]["samples"] == 4
    cal.write_text('{"text": "two"}\n')
    assert q.plan(params(tmp_path, **kw))["recipe_hash"] != first["recipe_hash"]


# --------------------------------------------------------------------------
# Output checks, publishing, pruning
# --------------------------------------------------------------------------


def write_output(path, kept, ignore, scheme="W4A16", group=128, tensors=None, config=None):
    make_model(path, tensors if tensors is not None else quantized_tensors(kept, scheme, group))
    (path / "config.json").write_text(json.dumps({"model_type": "qwen2",
                                                  "quantization_config": config or qconfig(ignore, scheme, group)}))


SOURCE = {n: {"dtype": d, "shape": s} for n, (d, s) in qwen2_tensors().items()}
RECIPE = {"scheme": "W4A16", "group_size": 128, "ignore": ["lm_head"]}
QKV_KEPT = {f"model.layers.{i}.self_attn.{x}_proj" for i in range(LAYERS) for x in "qkv"}


def _tensors_without(name):
    t = quantized_tensors({"lm_head"})
    del t[name]
    return t


@pytest.mark.parametrize(("case", "recipe", "write", "needles"), [
    ("good", RECIPE, {"kept": {"lm_head"}, "ignore": ["lm_head"]}, []),
    ("good qkv", dict(RECIPE, ignore=["lm_head", *QKV]),
     {"kept": {"lm_head"} | QKV_KEPT, "ignore": ["lm_head", *QKV]}, []),
    ("good w8a8", dict(RECIPE, scheme="W8A8"), {"kept": {"lm_head"}, "ignore": ["lm_head"], "scheme": "W8A8"}, []),
    ("group", RECIPE, {"kept": {"lm_head"}, "ignore": ["lm_head"], "group": 64}, ["group_size is 64, not 128"]),
    ("ignore", RECIPE, {"kept": {"lm_head"}, "ignore": []}, ["quantization_config.ignore is []"]),
    ("qkv not kept", dict(RECIPE, ignore=["lm_head", *QKV]), {"kept": {"lm_head"}, "ignore": ["lm_head", *QKV]},
     ["6 layers should be kept in 16-bit but are not"]),
    ("not packed", RECIPE, {"kept": {"lm_head"}, "ignore": ["lm_head"],
                            "tensors": _tensors_without("model.layers.1.mlp.down_proj.weight_packed")},
     ["1 layers are not stored quantized as W4A16, e.g. model.layers.1.mlp.down_proj"]),
    ("lm_head packed", RECIPE, {"kept": set(), "ignore": ["lm_head"]}, ["should be kept in 16-bit", "lm_head"]),
    ("embeddings", RECIPE, {"kept": {"lm_head"}, "ignore": ["lm_head"],
                            "tensors": _tensors_without("model.embed_tokens.weight")}, ["model.embed_tokens"]),
    ("format", dict(RECIPE, scheme="W8A8"), {"kept": {"lm_head"}, "ignore": ["lm_head"]},
     ["format is 'pack-quantized', not 'int-quantized'", "num_bits is 4, not 8", "not stored quantized as W8A8"]),
])
def test_check_output(tmp_path, case, recipe, write, needles):
    write = dict(write)
    write_output(tmp_path / "out", **write)
    problems = q.check_output(str(tmp_path / "out"), SOURCE, recipe)
    if not needles:
        assert problems == [], case
    for needle in needles:
        assert any(needle in p for p in problems), (case, problems)


def test_check_output_without_quantization_config(tmp_path):
    make_model(tmp_path / "out")
    assert q.check_output(str(tmp_path / "out"), SOURCE, RECIPE) == ["config.json has no quantization_config"]


def _planned(tmp_path, **kw):
    publish_source(tmp_path)
    p = q.plan(params(tmp_path, **kw))
    os.makedirs(p["paths"]["model_dir"], exist_ok=True)
    return p


REPORT = {"wall_seconds": 5.0, "peak_rss_bytes": 500 * 2**20, "generated_tokens": 13, "versions": {"llmcompressor": "0.14.0.1"}}


def test_publish_renames_stamps_and_sets_modes(tmp_path):
    p = _planned(tmp_path)
    write_output(tmp_path / "stage", {"lm_head"}, ["lm_head"])
    os.rename(tmp_path / "stage", p["paths"]["staging"])
    (tmp_path / "stage-file").write_text("")
    uid, gid = os.getuid(), os.getgid()
    stamp = q.publish(p, REPORT, uid, gid, 0o640, 0o750)
    out = p["paths"]["output"]
    assert not os.path.exists(p["paths"]["staging"]) and os.path.isdir(out)
    on_disk = json.load(open(os.path.join(out, q.STAMP_NAME)))
    assert on_disk == stamp and stamp["recipe_hash"] == p["recipe_hash"] and stamp["peak_rss_bytes"] == REPORT["peak_rss_bytes"]
    assert stamp["output_bytes"] > 0 and stamp["kept_16bit"] == ["lm_head"]
    assert oct(os.stat(out).st_mode & 0o777) == "0o750"
    assert oct(os.stat(os.path.join(out, "model.safetensors")).st_mode & 0o777) == "0o640"
    assert q.plan(params(tmp_path))["published"]


def test_publish_refuses_a_wrong_output_and_leaves_the_old_one(tmp_path):
    p = _planned(tmp_path)
    old = tmp_path / "store" / "tiny-w4a16" / "0123456789ab"
    old.mkdir()
    (old / q.STAMP_NAME).write_text("{}")
    write_output(tmp_path / "stage", set(), ["lm_head"])
    os.rename(tmp_path / "stage", p["paths"]["staging"])
    with pytest.raises(q.QuantizeError, match="nothing was published") as exc:
        q.publish(p, REPORT, os.getuid(), os.getgid(), 0o640, 0o750)
    assert exc.value.kind == "verify"
    assert os.path.isdir(p["paths"]["staging"]) and not os.path.exists(p["paths"]["output"])
    assert (old / q.STAMP_NAME).read_text() == "{}"


def test_publish_needs_the_generation_check_and_a_staging_dir(tmp_path):
    p = _planned(tmp_path)
    with pytest.raises(q.QuantizeError, match="does not exist") as exc:
        q.publish(p, REPORT, os.getuid(), os.getgid(), 0o640, 0o750)
    assert exc.value.kind == "publish"
    write_output(tmp_path / "stage", {"lm_head"}, ["lm_head"])
    os.rename(tmp_path / "stage", p["paths"]["staging"])
    with pytest.raises(q.QuantizeError, match="no generation check"):
        q.publish(p, dict(REPORT, generated_tokens=0), os.getuid(), os.getgid(), 0o640, 0o750)


def test_publish_replaces_an_unstamped_directory(tmp_path):
    p = _planned(tmp_path)
    os.makedirs(p["paths"]["output"])
    (tmp_path / "junk").write_text("x")
    os.rename(tmp_path / "junk", os.path.join(p["paths"]["output"], "junk"))
    write_output(tmp_path / "stage", {"lm_head"}, ["lm_head"])
    os.rename(tmp_path / "stage", p["paths"]["staging"])
    q.publish(p, REPORT, os.getuid(), os.getgid(), 0o640, 0o750)
    assert not os.path.exists(os.path.join(p["paths"]["output"], "junk"))
    assert not [n for n in os.listdir(p["paths"]["model_dir"]) if n.startswith(".replaced-")]


@pytest.mark.parametrize(("entries", "keep", "protect", "removed"), [
    ([("a", 1), ("b", 2), ("c", 3)], 1, {"c"}, ["a"]),
    ([("a", 1), ("b", 2), ("c", 3)], 0, {"c", "a"}, ["b"]),
    ([("a", 1), ("b", 2), ("c", 3)], 5, {"c"}, []),
    ([("a", 1), ("b", 2), ("c", 3), ("d", 4)], 1, {"a", "b"}, ["c"]),
    ([], 1, {"x"}, []),
    ([("a", 1)], -1, set(), ["a"]),
])
def test_prune_list(entries, keep, protect, removed):
    assert q.prune_list(entries, keep, protect) == removed


def test_published_outputs_lists_only_stamped_directories(tmp_path):
    (tmp_path / "aaa").mkdir()
    (tmp_path / "aaa" / q.STAMP_NAME).write_text("{}")
    (tmp_path / "bbb").mkdir()
    (tmp_path / ".staging-ccc").mkdir()
    (tmp_path / ".staging-ccc" / q.STAMP_NAME).write_text("{}")
    os.symlink("aaa", tmp_path / "current")
    assert [n for n, _ in q.published_outputs(str(tmp_path))] == ["aaa"]
    assert q.published_outputs(str(tmp_path / "missing")) == []


# --------------------------------------------------------------------------
# The two modules, run by ansible on localhost
# --------------------------------------------------------------------------

@pytest.mark.skipif(not os.path.exists(ANSIBLE), reason="ansible is not installed beside this python")
def test_modules_plan_publish_and_refuse(tmp_path):
    publish_source(tmp_path)
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    args = {"name": "tiny-w4a16", "source": "tiny", "store": str(tmp_path / "store")}
    rc, plan = run_ansible_module(tmp_path, "quantize_plan", args, "--check")
    assert rc == 0 and not plan["changed"] and not plan["published"] and plan["ignore"] == ["lm_head"]
    pub = dict(args, owner=user, group=group)
    rc, res = run_ansible_module(tmp_path, "quantize_publish", pub, "--check", "--diff")
    assert rc == 0 and res["changed"] and not os.path.exists(plan["published_path"])
    rc, res = run_ansible_module(tmp_path, "quantize_publish", pub)
    assert rc != 0 and res["error_kind"] == "publish" and "report" in res["msg"]
    os.makedirs(plan["paths"]["model_dir"])  # the role creates it before the worker runs
    write_output(tmp_path / "stage", {"lm_head"}, ["lm_head"])
    os.rename(tmp_path / "stage", plan["paths"]["staging"])
    with open(plan["paths"]["report"], "w") as f:
        json.dump(REPORT, f)
    rc, res = run_ansible_module(tmp_path, "quantize_publish", pub)
    assert rc == 0 and res["changed"] and res["stamp"]["recipe_hash"] == plan["recipe_hash"]
    assert os.path.isdir(plan["published_path"]) and not os.path.exists(plan["paths"]["report"])
    rc, res = run_ansible_module(tmp_path, "quantize_publish", pub)
    assert rc == 0 and not res["changed"]
    rc, res = run_ansible_module(tmp_path, "quantize_plan", dict(args, ignore=["lm_head", "q_proj"]))
    assert rc != 0 and res["error_kind"] == "fused" and res["msg"].startswith("tiny-w4a16: q_proj/k_proj/v_proj")

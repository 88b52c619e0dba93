"""Verify quantize after converge and side_effect (see molecule.yml).

tiny-w4a16 was first quantized with lm_head kept (oneshot), then with q/k/v kept
as well (model_free); current points at the second, the first is kept.
tiny-gptq is GPTQ with lm_head kept.
"""

import json

import pytest

STORE = "/var/lib/llm-onprem/models"
PY = "/opt/llm-onprem/envs/quant/bin/python"
QKV = ["re:.*\\.q_proj$", "re:.*\\.k_proj$", "re:.*\\.v_proj$"]

HEADERS = r"""
import json, os, struct, sys
d = sys.argv[1]
out = {}
for fn in sorted(os.listdir(d)):
    if fn.endswith(".safetensors"):
        with open(os.path.join(d, fn), "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            out.update({k: v["dtype"] for k, v in json.loads(f.read(n)).items() if k != "__metadata__"})
print(json.dumps(out))
"""

GENERATE = r"""
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer
d = sys.argv[1]
tok = AutoTokenizer.from_pretrained(d)
model = AutoModelForCausalLM.from_pretrained(d, dtype="auto")
text = tok.apply_chat_template([{"role": "user", "content": "Say hello."}], tokenize=False, add_generation_prompt=True)
ids = tok(text, return_tensors="pt", add_special_tokens=False)
out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
print(out.shape[1] - ids["input_ids"].shape[1])
"""


def stamp(host, path):
    return json.loads(host.file(f"{path}/llm-onprem-quantize.json").content_string)


def revisions(host, name):
    found = host.check_output(f"find {STORE}/{name} -mindepth 1 -maxdepth 1 -type d -not -name '.*' -printf '%f\\n'")
    return sorted(found.split())


@pytest.fixture(scope="module")
def outputs(host):
    """{label: directory}: the current and the earlier tiny-w4a16 recipe, and tiny-gptq."""
    current = host.file(f"{STORE}/tiny-w4a16/current").linked_to
    older = [r for r in revisions(host, "tiny-w4a16") if f"{STORE}/tiny-w4a16/{r}" != current]
    assert len(older) == 1
    return {
        "qkv": current,
        "lm_head": f"{STORE}/tiny-w4a16/{older[0]}",
        "gptq": host.file(f"{STORE}/tiny-gptq/current").linked_to,
    }


@pytest.mark.parametrize(("label", "ignore", "method", "pipeline"), [
    ("qkv", ["lm_head", *QKV], "rtn", "model_free"),
    ("lm_head", ["lm_head"], "rtn", "oneshot"),
    ("gptq", ["lm_head"], "gptq", "oneshot"),
])
def test_stamp_records_recipe_time_and_memory(host, outputs, label, ignore, method, pipeline):
    path = outputs[label]
    s = stamp(host, path)
    assert path.rsplit("/", 1)[1] == s["recipe_hash"][:12]
    assert s["recipe"] == dict(s["recipe"], scheme="W4A16", group_size=128, ignore=ignore, method=method, pipeline=pipeline)
    assert s["source"]["digest"]["kind"] == "verified-stamp"
    assert s["source"]["path"] == f"{STORE}/tiny/r1"
    assert s["versions"]["llmcompressor"] == "0.14.0.1"
    assert 0 < s["wall_seconds"] < 600
    assert 100 * 2**20 < s["peak_rss_bytes"] < 8 * 2**30
    assert s["generated_tokens"] > 0
    assert 2 * 2**20 < s["output_bytes"] < 5 * 2**20  # bf16 source: 5.3 MB
    if method == "gptq":
        assert s["recipe"]["calibration"]["samples"] == 16


@pytest.mark.parametrize("label", ["qkv", "lm_head", "gptq"])
def test_quantization_config(host, outputs, label):
    cfg = json.loads(host.file(f"{outputs[label]}/config.json").content_string)["quantization_config"]
    assert cfg["quant_method"] == "compressed-tensors" and cfg["format"] == "pack-quantized"
    (group,) = cfg["config_groups"].values()
    assert group["weights"]["num_bits"] == 4 and group["weights"]["group_size"] == 128
    assert group["weights"]["strategy"] == "group" and group["weights"]["symmetric"]
    assert "lm_head" in cfg["ignore"]
    assert ("re:.*\\.q_proj$" in cfg["ignore"]) == (label == "qkv")


@pytest.mark.parametrize("label", ["qkv", "lm_head", "gptq"])
def test_packed_and_kept_layers(host, outputs, label):
    t = json.loads(host.check_output(f"python3 -c '{HEADERS}' {outputs[label]}"))
    assert t["lm_head.weight"] == "BF16" and t["model.embed_tokens.weight"] == "BF16"
    for layer in (0, 1):
        p = f"model.layers.{layer}"
        for m in ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "self_attn.o_proj"):
            assert t[f"{p}.{m}.weight_packed"] == "I32" and f"{p}.{m}.weight" not in t
            assert t[f"{p}.{m}.weight_scale"] == "BF16" and t[f"{p}.{m}.weight_shape"] == "I64"
        for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            if label == "qkv":
                assert t[f"{p}.{m}.weight"] == "BF16" and f"{p}.{m}.weight_packed" not in t
            else:
                assert t[f"{p}.{m}.weight_packed"] == "I32"


@pytest.mark.parametrize("label", ["qkv", "gptq"])
def test_loads_and_generates(host, outputs, label):
    cmd = host.run(f"HF_HUB_OFFLINE=1 {PY} -c '{GENERATE}' {outputs[label]}")
    assert cmd.rc == 0, cmd.stderr[-2000:]
    assert int(cmd.stdout.strip().splitlines()[-1]) > 0


@pytest.mark.parametrize("label", ["qkv", "lm_head", "gptq"])
def test_owner_and_modes(host, outputs, label):
    d = host.file(outputs[label])
    assert d.user == "llm-onprem" and d.group == "llm-onprem" and d.mode == 0o750
    for name in ("config.json", "model.safetensors", "llm-onprem-quantize.json", "tokenizer.json"):
        f = host.file(f"{outputs[label]}/{name}")
        assert f.user == "llm-onprem" and f.group == "llm-onprem" and f.mode == 0o640, name


def test_no_leftovers(host):
    left = host.check_output(f"find {STORE} -maxdepth 2 \\( -name '.staging-*' -o -name '.quantize-*.json' -o -name '.replaced-*' \\)")
    assert left == ""


def test_worker_installed_root_owned(host):
    f = host.file("/opt/llm-onprem/libexec/quantize_worker.py")
    assert f.user == "root" and f.mode == 0o755


def test_source_model_arrived_over_http_resumed_and_refetched(host):
    """prepare.yml's fetch: the dropped transfer resumed with Range, the corrupted file fetched again."""
    log = [json.loads(line) for line in host.file("/srv/requests.log").content_string.splitlines()]
    weights = [r["range"] for r in log if r["path"] == "/tiny/r1/model.safetensors"]
    assert weights[0] is None
    assert "bytes=1000000-" in weights[1:], weights
    assert len([r for r in log if r["path"] == "/tiny/r1/tokenizer.json"]) == 2
    faults = json.loads(host.file("/srv/faults.json").content_string)
    assert faults["drop"]["/tiny/r1/model.safetensors"]["times"] == 0
    assert faults["corrupt"]["/tiny/r1/tokenizer.json"] == 0
    manifest = json.loads(host.file("/srv/artifacts/tiny/r1/manifest.json").content_string)
    assert len(manifest["files"]) == 6
    assert host.file(f"{STORE}/tiny/current").linked_to == f"{STORE}/tiny/r1"
    for entry in manifest["files"]:
        published = host.file(f"{STORE}/tiny/r1/{entry['path']}")
        assert published.size == entry["size"]
        assert published.sha256sum == entry["sha256"], entry["path"]

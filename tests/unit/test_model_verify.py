"""Unit tests of module_utils/model_verify.py (the periodic re-hash behind llm-onprem-model-verify.service)
and of the script the model_store role installs beside it (roles/model_store/files/llm_onprem_model_verify.py).

Every store here is published by model_fetch itself (a local source), so the stamps are the ones
model_fetch writes; each case then applies one kind of damage to the published copy.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "module_utils"))

import model_fetch as mf
import model_verify as mv

SCRIPT = ROOT / "roles" / "model_store" / "files" / "llm_onprem_model_verify.py"
FILES = {
    "config.json": b'{"model_type": "qwen2"}\n',
    "tokenizer.json": b"t" * 5000,
    "weights/w1.bin": bytes(range(256)) * 40,
    "weights/w2.bin": b"\x00" * 7000,
}
NOW = 1_760_000_000.25


def publish(store, src_root, name, revision, files=FILES):
    """Publish one revision through model_fetch (local source) and return its published path."""
    src = src_root / f"{name}-{revision}"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    result = mf.fetch({"store": str(store), "name": name, "source": "local", "revision": revision, "path": str(src),
                       "free_space_margin": 0})
    assert result["changed"] and os.path.isdir(result["published_path"])
    return Path(result["published_path"])


def flip_byte(path, offset=10):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def _corrupt(pub, store):
    flip_byte(pub / "weights/w1.bin")


def _missing(pub, store):
    (pub / "tokenizer.json").unlink()


def _wrong_size(pub, store):
    with open(pub / "weights/w2.bin", "ab") as f:
        f.write(b"\x00")


def _two_damaged(pub, store):
    _corrupt(pub, store)
    _missing(pub, store)


def _directory_gone(pub, store):
    for p in sorted(pub.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    pub.rmdir()


def _stamp_not_json(pub, store):
    Path(str(pub) + ".verified.json").write_text("{not json")


def _stamp_other_revision(pub, store):
    stamp = Path(str(pub) + ".verified.json")
    stamp.write_text(json.dumps(dict(json.loads(stamp.read_text()), revision="v9")))


def _stamp_bad_digest(pub, store):
    stamp = Path(str(pub) + ".verified.json")
    doc = json.loads(stamp.read_text())
    doc["files"][0]["sha256"] = "xyz"
    stamp.write_text(json.dumps(doc))


def _extra_file_and_noise(pub, store):
    # Not checked: files the stamp does not list, hidden entries, the current link, lost+found.
    (pub / "notes.txt").write_text("added by hand")
    (pub.parent / ".staging-v2").mkdir()
    (pub.parent / ".staging-v2.json").write_text("{}")
    (pub.parent / "current").symlink_to("v1")
    (store / "lost+found").mkdir(mode=0o700)
    (store / ".trash").mkdir()


# (case id, damage to the published tiny@v1, expected mismatched (None = not reported), exit code, success)
CASES = [
    ("all-match", None, 0, 0, 1),
    ("one-corrupted", _corrupt, 1, 1, 1),
    ("one-missing", _missing, 1, 1, 1),
    ("wrong-size", _wrong_size, 1, 1, 1),
    ("two-damaged", _two_damaged, 2, 1, 1),
    ("published-directory-gone", _directory_gone, 4, 1, 1),
    ("unreadable-manifest", _stamp_not_json, None, 2, 0),
    ("manifest-of-other-revision", _stamp_other_revision, None, 2, 0),
    ("manifest-bad-digest", _stamp_bad_digest, None, 2, 0),
    ("unlisted-files-ignored", _extra_file_and_noise, 0, 0, 1),
]


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    return root


@pytest.mark.parametrize(("case_id", "damage", "mismatched", "code", "success"), CASES, ids=[c[0] for c in CASES])
def test_run(tmp_path, store, case_id, damage, mismatched, code, success):
    pub = publish(store, tmp_path / "src", "tiny", "v1")
    publish(store, tmp_path / "src", "tiny-local", "r1")  # an undamaged neighbour, always reported
    if damage:
        damage(pub, store)
    metrics = tmp_path / "out" / mv.METRICS_FILE_NAME
    metrics.parent.mkdir()
    got_code, log = mv.run(str(store), str(metrics), clock=lambda: NOW)
    assert got_code == code, log
    values = parse(metrics.read_text())
    tiny = ("tiny", "v1")
    if mismatched is None:
        assert tiny not in values["llm_onprem_model_files_mismatched"]
        assert any(line.startswith("error: tiny@v1: ") and "verified.json" in line for line in log), log
    else:
        assert values["llm_onprem_model_files_mismatched"][tiny] == mismatched
        assert values["llm_onprem_model_files_verified"][tiny] == 4
        assert sum(line.startswith("mismatch: tiny@v1: ") for line in log) == mismatched, log
    assert values["llm_onprem_model_files_mismatched"][("tiny-local", "r1")] == 0
    assert values["llm_onprem_model_files_verified"][("tiny-local", "r1")] == 4
    assert values["llm_onprem_model_verify_success"][()] == success
    assert values["llm_onprem_model_verify_last_run_timestamp_seconds"][()] == NOW


def parse(text):
    """{metric: {(model, revision) or (): value}} from the text format (labels of this contract only)."""
    out = {name: {} for name, _help in mv.METRICS}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        if "{" in series:
            name, labels = series[:-1].split("{", 1)
            pairs = dict(part.split("=", 1) for part in labels.split('",'))
            key = (pairs["model"].strip('"'), pairs["revision"].strip('"'))
        else:
            name, key = series, ()
        out[name][key] = float(value)
    return out


def test_unlistable_model_directory_is_an_error(tmp_path, store, monkeypatch):
    publish(store, tmp_path / "src", "tiny", "v1")
    (store / "other").mkdir()
    real_scandir = os.scandir

    def scandir(path):  # what an account without read permission on <store>/other gets
        if os.path.basename(path) == "other":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(mv.os, "scandir", scandir)
    code, log = mv.run(str(store), str(tmp_path / "m.prom"), clock=lambda: NOW)
    assert code == 2 and log[0] == f"error: cannot list {store}/other: Permission denied"
    values = parse((tmp_path / "m.prom").read_text())
    assert values["llm_onprem_model_verify_success"][()] == 0
    assert values["llm_onprem_model_files_mismatched"] == {("tiny", "v1"): 0}  # the readable rest is still reported


@pytest.mark.parametrize(("case_id", "setup", "code", "success", "series"), [
    ("empty-store", lambda s: None, 0, 1, 0),
    ("store-missing", lambda s: s.rmdir(), 2, 0, 0),
], ids=lambda v: v if isinstance(v, str) else "")
def test_store_without_revisions(tmp_path, store, case_id, setup, code, success, series):
    setup(store)
    got, log = mv.run(str(store), str(tmp_path / "m.prom"), clock=lambda: NOW)
    values = parse((tmp_path / "m.prom").read_text())
    assert got == code, log
    assert values["llm_onprem_model_verify_success"][()] == success
    assert len(values["llm_onprem_model_files_verified"]) == series


def test_revision_pruned_during_the_run_is_not_reported(tmp_path, store):
    pub = publish(store, tmp_path / "src", "tiny", "v1")

    def check_then_prune(published, manifest, mode, chunk_size):
        problems = mf.check_published(published, manifest, mode, chunk_size)
        _directory_gone(pub, store)
        Path(str(pub) + ".verified.json").unlink()
        return problems

    code, log = mv.run(str(store), str(tmp_path / "m.prom"), clock=lambda: NOW, check=check_then_prune)
    assert code == 0 and log == []
    assert parse((tmp_path / "m.prom").read_text())["llm_onprem_model_files_verified"] == {}


def test_revision_republished_during_the_run_is_hashed_again(tmp_path, store):
    pub = publish(store, tmp_path / "src", "tiny", "v1")
    stamp = Path(str(pub) + ".verified.json")
    calls = []

    def check_while_fetch_repairs(published, manifest, mode, chunk_size):
        calls.append(published)
        if len(calls) == 1:  # the first pass sees a damaged file; model_fetch repairs it and rewrites the stamp
            flip_byte(pub / "weights/w1.bin")
            problems = mf.check_published(published, manifest, mode, chunk_size)
            flip_byte(pub / "weights/w1.bin")
            stamp.write_text(stamp.read_text() + " ")
            return problems
        return mf.check_published(published, manifest, mode, chunk_size)

    code, _log = mv.run(str(store), str(tmp_path / "m.prom"), clock=lambda: NOW, check=check_while_fetch_repairs)
    assert len(calls) == 2 and code == 0
    assert parse((tmp_path / "m.prom").read_text())["llm_onprem_model_files_mismatched"][("tiny", "v1")] == 0


def test_file_the_account_cannot_read_is_an_error(tmp_path, store):
    publish(store, tmp_path / "src", "tiny", "v1")

    def denied(published, manifest, mode, chunk_size):
        raise PermissionError(13, "Permission denied", os.path.join(published, "weights/w1.bin"))

    code, log = mv.run(str(store), str(tmp_path / "m.prom"), clock=lambda: NOW, check=denied)
    assert code == 2
    assert log == [f"error: tiny@v1: cannot read {store}/tiny/v1/weights/w1.bin: Permission denied"]


def test_metrics_file_not_writable_is_an_error(tmp_path, store):
    code, log = mv.run(str(store), str(tmp_path / "missing-dir" / "m.prom"), clock=lambda: NOW)
    assert code == 2 and log[-1].startswith("error: cannot write ")


# ---------------------------------------------------------------------------
# The text format
# ---------------------------------------------------------------------------

EXPECTED = """\
# HELP llm_onprem_model_files_mismatched Files of a published model revision that are missing, of the wrong size or whose \
sha256 differs from its manifest.
# TYPE llm_onprem_model_files_mismatched gauge
llm_onprem_model_files_mismatched{model="a",revision="r1"} 0
llm_onprem_model_files_mismatched{model="b",revision="r2"} 3
# HELP llm_onprem_model_files_verified Files of a published model revision checked against its manifest.
# TYPE llm_onprem_model_files_verified gauge
llm_onprem_model_files_verified{model="a",revision="r1"} 4
llm_onprem_model_files_verified{model="b",revision="r2"} 17
# HELP llm_onprem_model_verify_last_run_timestamp_seconds Unix time the last model file verification finished.
# TYPE llm_onprem_model_verify_last_run_timestamp_seconds gauge
llm_onprem_model_verify_last_run_timestamp_seconds 1760000000.250
# HELP llm_onprem_model_verify_success 1 if the last model file verification completed (even with mismatches), \
0 if it could not run.
# TYPE llm_onprem_model_verify_success gauge
llm_onprem_model_verify_success 1
"""


def _result(name, revision, verified, mismatched, error=None):
    return {"name": name, "revision": revision, "verified": verified, "mismatched": mismatched, "problems": [],
            "error": error}


def test_render_exact_text():
    results = [_result("b", "r2", 17, 3), _result("a", "r1", 4, 0), _result("c", "r3", 0, 0, error="unreadable")]
    assert mv.render_metrics(results, True, NOW) == EXPECTED


def test_render_failed_run_keeps_the_families():
    text = mv.render_metrics([], False, NOW)
    assert text.count("# HELP ") == 4 and text.count("# TYPE ") == 4
    assert text.endswith("llm_onprem_model_verify_success 0\n")


@pytest.mark.parametrize(("value", "escaped"), [
    ("plain-1.5", "plain-1.5"),
    ('say "hi"', 'say \\"hi\\"'),
    ("back\\slash", "back\\\\slash"),
    ("two\nlines", "two\\nlines"),
    ('\\"\n', '\\\\\\"\\n'),
    ("Qwen2.5+int4_é", "Qwen2.5+int4_é"),
])
def test_label_escaping(value, escaped):
    assert mv.escape_label(value) == escaped
    line = [ln for ln in mv.render_metrics([_result(value, "r", 1, 0)], True, NOW).splitlines()
            if ln.startswith("llm_onprem_model_files_verified{")][0]
    assert line == f'llm_onprem_model_files_verified{{model="{escaped}",revision="r"}} 1'


def test_rendered_text_passes_promtool(tmp_path):
    """The same text parser node-exporter's textfile collector uses (Prometheus expfmt), where promtool is unpacked."""
    proc = subprocess.run([str(ROOT / "tests/harness/prom-tools.sh")], capture_output=True, text=True, check=False)
    tools = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    if "promtool" not in tools:
        reason = f"promtool not available (tests/harness/prom-tools.sh rc {proc.returncode}): {proc.stderr[-2000:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    text = mv.render_metrics([_result('odd "name"\\x', "r1", 4, 1), _result("a", "r1", 4, 0)], True, NOW)
    check = subprocess.run([tools["promtool"], "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


# ---------------------------------------------------------------------------
# Atomic write
# ---------------------------------------------------------------------------


def test_write_replaces_atomically(tmp_path):
    target = tmp_path / mv.METRICS_FILE_NAME
    target.write_text("old\n")
    inode = target.stat().st_ino
    mv.write_text_atomic(str(target), "new\n")
    assert target.read_text() == "new\n"
    assert target.stat().st_ino != inode  # a new file renamed over the old one, never rewritten in place
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == [mv.METRICS_FILE_NAME]


def test_write_failure_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / mv.METRICS_FILE_NAME
    target.write_text("old\n")
    seen = []

    def failing_replace(src, dst):
        seen.append(os.path.basename(src))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mv.os, "replace", failing_replace)
    with pytest.raises(OSError):
        mv.write_text_atomic(str(target), "new\n")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [mv.METRICS_FILE_NAME]
    # The temp file was in the same directory, hidden and not *.prom: the collector never reads it.
    assert seen and seen[0].startswith(".") and not seen[0].endswith(".prom")


# ---------------------------------------------------------------------------
# The installed script: exit status and journal lines
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("case_id", "damage", "code"), [
    ("match", None, 0),
    ("corrupted", _corrupt, 1),
    ("unreadable-manifest", _stamp_not_json, 2),
], ids=lambda v: v if isinstance(v, str) else "")
def test_script_exit_status(tmp_path, store, case_id, damage, code):
    pub = publish(store, tmp_path / "src", "tiny", "v1")
    if damage:
        damage(pub, store)
    # As the unit runs it: python3 -I, with model_verify.py and model_fetch.py beside the script (links here).
    proc = subprocess.run([sys.executable, "-I", str(SCRIPT), "--store", str(store), "--metrics-file", str(tmp_path / "m.prom")],
                          capture_output=True, text=True, check=False, cwd=tmp_path, env={"PATH": os.environ["PATH"]})
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert (tmp_path / "m.prom").exists()
    if code == 1:
        assert "mismatch: tiny@v1: weights/w1.bin: sha256 mismatch" in proc.stderr
    if code == 0:
        assert proc.stdout == "tiny@v1: 4 files checked, 0 mismatched\n"


def test_installed_code_is_module_utils():
    """The role installs module_utils' own files (links), not copies that could drift."""
    for name in ("model_fetch.py", "model_verify.py"):
        link = SCRIPT.parent / name
        assert link.is_symlink() and link.resolve() == ROOT / "module_utils" / name

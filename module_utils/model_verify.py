# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Periodic re-hash of the published model files, exported as node-exporter textfile metrics.

Plain functions, standard library only. The model_store role installs this file beside
module_utils/model_fetch.py and a thin script (roles/model_store/files/llm_onprem_model_verify.py)
on the host, where llm-onprem-model-verify.service runs it from a timer; the unit tests
(tests/unit/test_model_verify.py) call the functions directly. Reading a stamp and hashing are
model_fetch's own (validate_manifest, read_json_file, check_published in full mode): a
published copy is judged here exactly as model_fetch judges it with verify_existing: full.

What is checked: every stamp ``<store>/<name>/<revision>.verified.json`` that model_fetch wrote
when it published ``<store>/<name>/<revision>/``; each file the stamp lists must be present,
of its size and of its sha256. Hidden entries (staging, replaced copies), the ``current`` link
and files the stamp does not list are not looked at.

Exit codes of ``run``: 0 nothing mismatched, 1 a mismatch was found, 2 the run could not
complete (a stamp that cannot be read, a model directory that cannot be listed, the metrics
file that cannot be written).
"""

from __future__ import annotations

import os
import time

try:  # as a module_utils of a module on a managed host
    from ansible.module_utils.model_fetch import (
        CHUNK_SIZE,
        COMPONENT_RE,
        FetchError,
        check_published,
        read_json_file,
        validate_manifest,
    )
except ImportError:  # installed beside the verify script, and in the unit tests (module_utils/ on sys.path)
    from model_fetch import (
        CHUNK_SIZE,
        COMPONENT_RE,
        FetchError,
        check_published,
        read_json_file,
        validate_manifest,
    )

STAMP_SUFFIX = ".verified.json"
METRICS_FILE_NAME = "llm-onprem-model-verify.prom"
EXIT_OK, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2
# Extra passes over a revision that model_fetch re-published while it was being hashed.
MAX_PASSES = 3
# mke2fs's directory at the root of a filesystem: present when the store is its own mount.
NOT_MODELS = ("lost+found",)

METRICS = (
    ("llm_onprem_model_files_mismatched",
     "Files of a published model revision that are missing, of the wrong size or whose sha256 differs from its manifest."),
    ("llm_onprem_model_files_verified", "Files of a published model revision checked against its manifest."),
    ("llm_onprem_model_verify_last_run_timestamp_seconds", "Unix time the last model file verification finished."),
    ("llm_onprem_model_verify_success",
     "1 if the last model file verification completed (even with mismatches), 0 if it could not run."),
)


def find_stamps(store):
    """The stamps under ``store``: ([(name, revision, stamp_path, published_path)], [error]), sorted.

    A model directory that cannot be listed is an error (the run is then incomplete); a
    missing store is one too. Entries that are not model directories are skipped.
    """
    found, errors = [], []
    try:
        models = sorted(os.scandir(store), key=lambda d: d.name)
    except OSError as exc:
        return [], [f"cannot list the model store {store}: {exc.strerror or exc}"]
    for model in models:
        if model.name in NOT_MODELS or not COMPONENT_RE.match(model.name) or not model.is_dir(follow_symlinks=False):
            continue
        try:
            entries = sorted(os.scandir(model.path), key=lambda d: d.name)
        except OSError as exc:
            errors.append(f"cannot list {model.path}: {exc.strerror or exc}")
            continue
        for entry in entries:
            if not entry.name.endswith(STAMP_SUFFIX) or not entry.is_file(follow_symlinks=False):
                continue
            revision = entry.name[: -len(STAMP_SUFFIX)]
            if not COMPONENT_RE.match(revision):
                continue
            found.append((model.name, revision, entry.path, os.path.join(model.path, revision)))
    return found, errors


def read_stamp(stamp_path, revision):
    """The manifest a stamp records (model_fetch's validation), or raise FetchError."""
    stamp = read_json_file(stamp_path)
    if not isinstance(stamp, dict):
        raise FetchError("manifest", f"{stamp_path}: missing, unreadable or not JSON")
    try:
        return validate_manifest({k: v for k, v in stamp.items() if k != "verified_at"}, expected_revision=revision)
    except FetchError as exc:
        raise FetchError(exc.kind, f"{stamp_path}: {exc.message}") from None


def _stamp_id(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def verify_revision(name, revision, stamp_path, published, chunk_size=CHUNK_SIZE, check=check_published):
    """Re-hash one published revision against its stamp.

    Returns a result dict (name, revision, verified, mismatched, problems, error), or None
    when the revision disappeared during the run (pruned by model_fetch's role). When
    model_fetch re-published the revision meanwhile (the stamp changed), it is hashed again.
    """
    result = {"name": name, "revision": revision, "verified": 0, "mismatched": 0, "problems": [], "error": None}
    for _ in range(MAX_PASSES):
        before = _stamp_id(stamp_path)
        if before is None:
            return None
        try:
            manifest = read_stamp(stamp_path, revision)
        except FetchError as exc:
            if _stamp_id(stamp_path) is None:
                return None
            result["error"] = exc.message
            return result
        try:
            problems = check(published, manifest, "full", chunk_size)
        except OSError as exc:  # a file the account cannot read, or a read error of the disk
            result["error"] = f"cannot read {exc.filename or published}: {exc.strerror or exc}"
            return result
        after = _stamp_id(stamp_path)
        if after is None:
            return None
        if after == before:
            result.update(verified=len(manifest["files"]), mismatched=len(problems), problems=problems)
            return result
    result["error"] = f"{stamp_path} changed during each of {MAX_PASSES} passes (a fetch is rewriting it); try again later"
    return result


def escape_label(value):
    """A label value in the Prometheus text format: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(results, success, finished_at):
    """The textfile-collector document for one run (every family with # HELP and # TYPE)."""
    helps = dict(METRICS)
    rows = sorted((r for r in results if r.get("error") is None), key=lambda r: (r["name"], r["revision"]))
    lines = []
    for metric, key in (("llm_onprem_model_files_mismatched", "mismatched"), ("llm_onprem_model_files_verified", "verified")):
        lines += [f"# HELP {metric} {helps[metric]}", f"# TYPE {metric} gauge"]
        for r in rows:
            lines.append(f'{metric}{{model="{escape_label(r["name"])}",revision="{escape_label(r["revision"])}"}} {int(r[key])}')
    metric = "llm_onprem_model_verify_last_run_timestamp_seconds"
    lines += [f"# HELP {metric} {helps[metric]}", f"# TYPE {metric} gauge", f"{metric} {finished_at:.3f}"]
    metric = "llm_onprem_model_verify_success"
    lines += [f"# HELP {metric} {helps[metric]}", f"# TYPE {metric} gauge", f"{metric} {1 if success else 0}"]
    return "\n".join(lines) + "\n"


def write_text_atomic(path, text, mode=0o644):
    """Write ``text`` through a temp file in the same directory and a rename.

    The temp name starts with a dot and does not end in .prom, so the textfile collector
    never reads a half-written file; it is removed if anything fails.
    """
    d = os.path.dirname(path) or "."
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def exit_code(results, errors):
    """2 when the run is incomplete, else 1 when a file mismatched, else 0."""
    if errors or any(r["error"] for r in results):
        return EXIT_ERROR
    if any(r["mismatched"] for r in results):
        return EXIT_MISMATCH
    return EXIT_OK


def run(store, metrics_file, clock=time.time, chunk_size=CHUNK_SIZE, check=check_published):
    """Verify every published revision under ``store`` and write ``metrics_file``.

    Returns (exit code, [log line]): one line per revision and one per problem, for the journal.
    """
    stamps, errors = find_stamps(store)
    results = []
    for name, revision, stamp_path, published in stamps:
        r = verify_revision(name, revision, stamp_path, published, chunk_size=chunk_size, check=check)
        if r is not None:
            results.append(r)
    log = [f"error: {e}" for e in errors]
    for r in results:
        if r["error"]:
            log.append(f"error: {r['name']}@{r['revision']}: {r['error']}")
            continue
        log.append(f"{r['name']}@{r['revision']}: {r['verified']} files checked, {r['mismatched']} mismatched")
        log += [f"mismatch: {r['name']}@{r['revision']}: {p}" for p in r["problems"]]
    code = exit_code(results, errors)
    text = render_metrics(results, code != EXIT_ERROR, clock())
    try:
        write_text_atomic(metrics_file, text)
    except OSError as exc:
        log.append(f"error: cannot write {metrics_file}: {exc.strerror or exc}")
        return EXIT_ERROR, log
    return code, log

"""Unit and end-to-end tests of module_utils/model_fetch.py (and one run of library/model_fetch.py).

End-to-end tests serve generated files from an http.server on 127.0.0.1 (random port) whose
misbehaviour (dropped connections, ignored Range, corrupted or truncated bodies, HTTP errors)
is scripted per test. No test touches the internet.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ANSIBLE, run_ansible_module

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "module_utils"))

import model_fetch as mf

REV = "v1"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SHA_A = "a" * 64


def sha(data):
    return hashlib.sha256(data).hexdigest()


def make_files(seed=1):
    """A small model: config, tokenizer, two weight shards in a subdirectory (about 1.3 MiB)."""
    rnd = __import__("random").Random(seed)
    return {
        "config.json": b'{"model_type": "qwen2", "hidden_size": 64}\n',
        "tokenizer.json": bytes(rnd.getrandbits(8) for _ in range(20_000)),
        "weights/model-00001-of-00002.safetensors": rnd.randbytes(700_000),
        "weights/model-00002-of-00002.safetensors": rnd.randbytes(600_000),
        "empty.txt": b"",
    }


def manifest_for(files, revision=REV):
    return {
        "manifest_version": 1,
        "revision": revision,
        "files": [{"path": p, "size": len(d), "sha256": sha(d)} for p, d in sorted(files.items())],
    }


# --------------------------------------------------------------------------
# A scriptable local artifact server
# --------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        path = self.path.split("?", 1)[0]
        rng = self.headers.get("Range")
        srv.log.append({"path": path, "range": rng, "auth": self.headers.get("Authorization")})
        if path in srv.status:
            code = srv.status[path]
            body = b"nope"
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if path.startswith("/api/models/") and srv.api_json is not None:
            data = srv.api_json
        elif path == "/m/manifest.json":
            data = srv.manifest_bytes
        else:
            rel = path[len("/m/") :] if path.startswith("/m/") else None
            if rel is None:
                for prefix in srv.hub_prefixes:
                    if path.startswith(prefix):
                        rel = path[len(prefix) :]
            rel = rel and __import__("urllib.parse").parse.unquote(rel)
            if rel not in srv.files:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = srv.files[rel]
            if srv.corrupt.get(rel, 0) > 0:
                srv.corrupt[rel] -= 1
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            if rel in srv.truncate:
                data = data[: srv.truncate[rel]]
        start = 0
        if rng and not srv.ignore_range and path != "/m/manifest.json" and not path.startswith("/api/"):
            start = int(rng.split("=", 1)[1].split("-", 1)[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        drop = srv.drop.get(path.removeprefix("/m/"))
        if drop and drop["times"] > 0:
            drop["times"] -= 1
            self.wfile.write(body[: drop["after"]])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            srv.sent += min(len(body), drop["after"])
            return
        self.wfile.write(body)
        srv.sent += len(body)


class Server:
    def __init__(self, files, manifest=None):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        h = self.httpd
        h.files = dict(files)
        h.manifest_bytes = json.dumps(manifest or manifest_for(files)).encode()
        h.status, h.drop, h.corrupt, h.truncate = {}, {}, {}, {}
        h.ignore_range = False
        h.api_json = None
        h.hub_prefixes = []
        h.log = []
        h.sent = 0
        self.thread = threading.Thread(target=h.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{h.server_address[1]}"

    def __getattr__(self, name):
        return getattr(self.httpd, name)

    def set_manifest(self, obj):
        self.httpd.manifest_bytes = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj

    def file_requests(self):
        return [r for r in self.httpd.log if r["path"] != "/m/manifest.json"]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def files():
    return make_files()


@pytest.fixture
def server(files):
    s = Server(files)
    yield s
    s.close()


@pytest.fixture
def store(tmp_path):
    return str(tmp_path / "store")


def cfg_http(server, store, **kw):
    cfg = {
        "name": "tiny",
        "revision": REV,
        "source": "http",
        "store": store,
        "manifest_url": server.url + "/m/manifest.json",
        "retries": 2,
        "retry_delay": 0,
        "timeout": 10,
        "free_space_margin": 0,
    }
    cfg.update(kw)
    return cfg


def published_ok(store, files, name="tiny", rev=REV):
    base = Path(store) / name / rev
    for p, d in files.items():
        assert (base / p).read_bytes() == d, p
    got = sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())
    assert got == sorted(files)
    stamp = json.loads((Path(store) / name / (rev + ".verified.json")).read_text())
    assert mf.manifest_key(mf.validate_manifest({k: v for k, v in stamp.items() if k != "verified_at"})) == (
        mf.manifest_key(mf.validate_manifest(manifest_for(files, rev)))
    )


# --------------------------------------------------------------------------
# Manifest parsing and validation (table-driven)
# --------------------------------------------------------------------------

GOOD_PATHS = [
    "config.json",
    "a/b/c.safetensors",
    "weird name (1).bin",
    "ünïcode.txt",
    "..hidden-ok",
    "a..b",
]
BAD_PATHS = [
    ("", "non-empty"),
    (None, "non-empty"),
    ("/etc/passwd", "absolute"),
    ("../x", "traversal"),
    ("a/../../x", "traversal"),
    ("a/./b", "traversal"),
    ("a//b", "traversal"),
    ("a/", "traversal"),
    ("a\\..\\b", "backslash"),
    ("a\x00b", "control"),
    ("a\nb", "control"),
    ("x" * 300, "too long"),
]


@pytest.mark.parametrize("path", GOOD_PATHS)
def test_safe_relpath_accepts(path):
    assert mf.safe_relpath(path) == path


@pytest.mark.parametrize(("path", "needle"), BAD_PATHS)
def test_safe_relpath_refuses(path, needle):
    with pytest.raises(mf.FetchError) as ei:
        mf.safe_relpath(path)
    assert ei.value.kind == "manifest"
    assert needle in ei.value.message


def _m(**over):
    base = {
        "manifest_version": 1,
        "revision": "r1",
        "files": [
            {"path": "b.bin", "size": 3, "sha256": "AB" * 32},
            {"path": "a.json", "size": 0, "sha256": SHA_A},
        ],
    }
    base.update(over)
    return base


def test_validate_manifest_normalises():
    m = mf.validate_manifest(_m(name="tiny"), expected_revision="r1")
    assert [e["path"] for e in m["files"]] == ["a.json", "b.bin"]
    assert m["files"][1]["sha256"] == "ab" * 32
    assert m["name"] == "tiny"
    assert mf.manifest_total(m) == 3


BAD_MANIFESTS = [
    ([], "manifest", "JSON object"),
    (_m(manifest_version=2), "manifest", "manifest_version"),
    (
        {k: v for k, v in _m().items() if k != "manifest_version"},
        "manifest",
        "manifest_version",
    ),
    (_m(extra=1), "manifest", "unknown keys"),
    (_m(revision="../up"), "input", "directory name"),
    (_m(revision=".hidden"), "input", "directory name"),
    (_m(revision="a/b"), "input", "directory name"),
    (_m(revision=""), "input", "directory name"),
    (_m(files=[]), "manifest", "non-empty list"),
    (_m(files={"a": 1}), "manifest", "non-empty list"),
    (_m(files=["a"]), "manifest", "must be an object"),
    (
        _m(files=[{"path": "a", "size": 1, "sha256": SHA_A, "md5": "x"}]),
        "manifest",
        "unknown keys",
    ),
    (
        _m(files=[{"path": "a", "size": -1, "sha256": SHA_A}]),
        "manifest",
        "non-negative",
    ),
    (
        _m(files=[{"path": "a", "size": True, "sha256": SHA_A}]),
        "manifest",
        "non-negative",
    ),
    (
        _m(files=[{"path": "a", "size": "1", "sha256": SHA_A}]),
        "manifest",
        "non-negative",
    ),
    (_m(files=[{"path": "a", "size": 1, "sha256": "abc"}]), "manifest", "64 hex"),
    (_m(files=[{"path": "a", "size": 1, "sha256": "g" * 64}]), "manifest", "64 hex"),
    (_m(files=[{"path": "a", "size": 1}]), "manifest", "64 hex"),
    (
        _m(
            files=[
                {"path": "a", "size": 1, "sha256": SHA_A},
                {"path": "a", "size": 1, "sha256": SHA_A},
            ]
        ),
        "manifest",
        "twice",
    ),
    (
        _m(
            files=[
                {"path": "a", "size": 1, "sha256": SHA_A},
                {"path": "a/b", "size": 1, "sha256": SHA_A},
            ]
        ),
        "manifest",
        "both as a file and as a directory",
    ),
    (
        _m(files=[{"path": "../../etc/cron.d/x", "size": 1, "sha256": SHA_A}]),
        "manifest",
        "traversal",
    ),
    (_m(files=[{"path": "/abs", "size": 1, "sha256": SHA_A}]), "manifest", "absolute"),
]


@pytest.mark.parametrize(("obj", "kind", "needle"), BAD_MANIFESTS)
def test_validate_manifest_refuses(obj, kind, needle):
    with pytest.raises(mf.FetchError) as ei:
        mf.validate_manifest(obj)
    assert ei.value.kind == kind
    assert needle in ei.value.message


def test_validate_manifest_wrong_revision():
    with pytest.raises(mf.FetchError) as ei:
        mf.validate_manifest(_m(), expected_revision="r2")
    assert ei.value.kind == "revision"
    assert "'r1'" in ei.value.message and "'r2'" in ei.value.message


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        ("[1]", "JSON object"),
    ],
)
def test_parse_manifest_refuses(data, needle):
    with pytest.raises(mf.FetchError) as ei:
        mf.parse_manifest(data)
    assert needle in ei.value.message


def test_parse_manifest_round_trip():
    m = mf.parse_manifest(json.dumps(_m()).encode(), expected_revision="r1")
    assert m["revision"] == "r1" and len(m["files"]) == 2


@pytest.mark.parametrize(
    ("allow", "ignore", "expected"),
    [
        (None, None, ["a.json", "b.bin", "figures/x.png", "w/m.safetensors"]),
        (["*.json", "*.safetensors"], None, ["a.json", "w/m.safetensors"]),
        (None, ["figures/*"], ["a.json", "b.bin", "w/m.safetensors"]),
        (["*"], ["*.bin", "*.png"], ["a.json", "w/m.safetensors"]),
        (["nothing"], None, []),
    ],
)
def test_filter_entries(allow, ignore, expected):
    entries = [{"path": p} for p in ["a.json", "b.bin", "figures/x.png", "w/m.safetensors"]]
    assert [e["path"] for e in mf.filter_entries(entries, allow, ignore)] == expected


@pytest.mark.parametrize("value", ["ok", "v1.2", "A_b-c+d", "0" * 40])
def test_check_component_accepts(value):
    assert mf.check_component(value, "revision") == value


@pytest.mark.parametrize("value", ["", ".", "..", ".x", "-x", "a/b", "a b", None, 3, "x" * 201])
def test_check_component_refuses(value):
    with pytest.raises(mf.FetchError) as ei:
        mf.check_component(value, "revision")
    assert ei.value.kind == "input"


# --------------------------------------------------------------------------
# Checksums, resume and disk arithmetic
# --------------------------------------------------------------------------


def test_hash_file_sha256_and_git_oid(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"hello\n")
    entry = {"size": 6, "git_sha1": "x"}
    d = mf.hash_file(str(p), entry, chunk_size=2)
    assert d["sha256"] == "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    # `git hash-object` of "hello\n"
    assert d["git_sha1"] == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert mf.hash_file(str(p), limit=5)["sha256"] == sha(b"hello")
    assert mf.sha256_file(str(p)) == sha(b"hello\n")


@pytest.mark.parametrize(
    ("entry", "digests", "ok"),
    [
        ({"sha256": "aa"}, {"sha256": "aa"}, True),
        ({"sha256": "aa"}, {"sha256": "bb"}, False),
        ({"sha256": None, "git_sha1": "11"}, {"sha256": "x", "git_sha1": "11"}, True),
        ({"sha256": None, "git_sha1": "11"}, {"sha256": "x", "git_sha1": "12"}, False),
        ({"sha256": "aa", "git_sha1": "11"}, {"sha256": "aa", "git_sha1": "12"}, False),
        ({"sha256": None}, {"sha256": "aa"}, False),
    ],
)
def test_digest_matches(entry, digests, ok):
    assert mf.digest_matches(entry, digests) is ok


@pytest.mark.parametrize(
    ("expected", "partial", "offset"),
    [
        (100, 0, 0),
        (100, 40, 40),
        (100, 100, 100),
        (100, 101, 0),
        (0, 0, 0),
        (0, 5, 0),
        (100, -1, 0),
    ],
)
def test_resume_offset(expected, partial, offset):
    assert mf.resume_offset(expected, partial) == offset


@pytest.mark.parametrize(
    ("partials", "verified", "needed"),
    [
        ({}, set(), 1000 + 500 + 0),
        ({"a": 400}, set(), 600 + 500),
        ({"a": 400, "b": 500}, set(), 600 + 0),
        ({"a": 1200}, set(), 1000 + 500),  # longer than expected: starts over
        ({"a": 1000, "b": 500}, {"a", "b"}, 0),
        ({}, {"a"}, 500),
    ],
)
def test_bytes_still_needed(partials, verified, needed):
    entries = [
        {"path": "a", "size": 1000},
        {"path": "b", "size": 500},
        {"path": "c", "size": 0},
    ]
    assert mf.bytes_still_needed(entries, partials, verified) == needed


@pytest.mark.parametrize(
    ("needed", "free", "margin", "ok"),
    [
        (100, 1000, 0, True),
        (100, 200, 100, True),
        (100, 199, 100, False),
        (0, 0, 1 << 30, True),  # nothing to download: no space needed
        (1 << 40, 1 << 30, 0, False),
    ],
)
def test_check_disk_space(needed, free, margin, ok):
    if ok:
        mf.check_disk_space(needed, free, margin, "/store")
    else:
        with pytest.raises(mf.FetchError) as ei:
            mf.check_disk_space(needed, free, margin, "/store")
        assert ei.value.kind == "disk_space"
        assert "/store" in ei.value.message and "free_space_margin" in ei.value.message


def test_disk_free_walks_up_to_existing_parent(tmp_path):
    assert mf.disk_free(str(tmp_path / "not" / "yet")) == mf.disk_free(str(tmp_path)) > 0


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 << 30, "5.0 GiB")],
)
def test_human(n, text):
    assert mf.human(n) == text


# --------------------------------------------------------------------------
# Stamp and skip logic
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stamp", "ok"),
    [
        (dict(_m(), verified_at=1.0, name="tiny", source={"type": "http"}), True),
        (_m(), True),
        (_m(revision="r2"), False),
        (_m(files=[{"path": "b.bin", "size": 3, "sha256": "ab" * 32}]), False),
        (
            _m(
                files=[
                    {"path": "b.bin", "size": 4, "sha256": "ab" * 32},
                    {"path": "a.json", "size": 0, "sha256": SHA_A},
                ]
            ),
            False,
        ),
        (None, False),
        ("garbage", False),
        ({"manifest_version": 1}, False),
    ],
)
def test_stamp_matches(stamp, ok):
    assert mf.stamp_matches(stamp, mf.validate_manifest(_m())) is ok


def test_stamp_matches_git_oid_entries():
    wanted = {
        "revision": COMMIT,
        "files": [{"path": "c.json", "size": 6, "sha256": None, "git_sha1": "1" * 40}],
    }
    stamp = {
        "manifest_version": 1,
        "revision": COMMIT,
        "verified_at": 5.0,
        "files": [{"path": "c.json", "size": 6, "sha256": SHA_A, "git_sha1": "1" * 40}],
    }
    assert mf.stamp_matches(stamp, wanted)
    mf.fill_sha256_from_stamp(stamp, wanted)
    assert wanted["files"][0]["sha256"] == SHA_A
    stamp["files"][0]["git_sha1"] = "2" * 40
    assert not mf.stamp_matches(stamp, wanted)
    del stamp["files"][0]["git_sha1"]
    assert not mf.stamp_matches(stamp, wanted)


@pytest.mark.parametrize("git", ["x" * 40, "1" * 39, 5])
def test_manifest_git_sha1_validated(git):
    with pytest.raises(mf.FetchError) as ei:
        mf.validate_manifest(_m(files=[{"path": "a", "size": 1, "sha256": SHA_A, "git_sha1": git}]))
    assert "git_sha1" in ei.value.message


def test_check_published_modes(tmp_path):
    fs = {"a": b"1234", "d/b": b"xyz"}
    for p, d in fs.items():
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_bytes(d)
    m = mf.validate_manifest(manifest_for(fs, "r"))
    assert mf.check_published(str(tmp_path), m, "stamp") == []
    assert mf.check_published(str(tmp_path), m, "full") == []
    (tmp_path / "a").write_bytes(b"1235")  # same size, different bytes
    assert mf.check_published(str(tmp_path), m, "stamp") == []
    assert mf.check_published(str(tmp_path), m, "full") == ["a: sha256 mismatch"]
    (tmp_path / "d/b").write_bytes(b"xy")
    assert "d/b: size 2, expected 3" in mf.check_published(str(tmp_path), m, "stamp")
    (tmp_path / "d/b").unlink()
    assert "d/b: missing" in mf.check_published(str(tmp_path), m, "stamp")


def test_store_paths():
    p = mf.store_paths("/s", "m", "r")
    assert p["published"] == "/s/m/r"
    assert p["stamp"] == "/s/m/r.verified.json"
    assert p["staging"] == "/s/m/.staging-r"


def test_read_json_file_tolerates_damage(tmp_path):
    (tmp_path / "bad").write_text("{")
    assert mf.read_json_file(str(tmp_path / "bad")) is None
    assert mf.read_json_file(str(tmp_path / "missing")) is None


# --------------------------------------------------------------------------
# Error mapping and progress
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cls", "kind"),
    [
        (404, mf.FetchError, "not_found"),
        (410, mf.FetchError, "not_found"),
        (401, mf.FetchError, "unauthorized"),
        (403, mf.FetchError, "unauthorized"),
        (500, mf.TransientError, "transfer"),
        (503, mf.TransientError, "transfer"),
        (429, mf.TransientError, "transfer"),
        (418, mf.FetchError, "transfer"),
    ],
)
def test_classify_http_error(code, cls, kind):
    err = mf.classify_http_error(code, "https://user:secret@host/x")
    assert type(err) is cls and err.kind == kind
    assert "secret" not in str(err) and str(code) in str(err)


def test_redact_url():
    assert mf.redact_url("https://u:p@h:8443/a?b") == "https://h:8443/a?b"
    assert mf.redact_url("http://h/a") == "http://h/a"


def _exc(name, bases=(Exception,), **attrs):
    return type(name, bases, attrs)("boom\nsecond line")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (_exc("RevisionNotFoundError"), "revision"),
        (_exc("GatedRepoError"), "unauthorized"),
        (_exc("RepositoryNotFoundError"), "not_found"),
        (
            _exc("HfHubHTTPError", response=SimpleNamespace(status_code=401)),
            "unauthorized",
        ),
        (
            _exc("HfHubHTTPError", response=SimpleNamespace(status_code=503)),
            "unreachable",
        ),
        (_exc("ConnectError"), "unreachable"),
        (_exc("ReadTimeout"), "unreachable"),
        (_exc("ValueError"), "source"),
    ],
)
def test_hub_error_mapping(exc, kind):
    err = mf.hub_error(exc, "org/m", COMMIT)
    assert err.kind == kind
    assert "second line" not in err.message


def test_progress_status_file_throttled(tmp_path):
    now = [100.0]
    status = tmp_path / "status.json"
    p = mf.Progress(str(status), total_bytes=1000, files_total=2, clock=lambda: now[0])
    p.phase("downloading", "a")
    p.advance(100)
    assert json.loads(status.read_text())["bytes_done"] == 0  # throttled: written less than once a second
    now[0] += 2.0
    p.advance(300)
    s = mf.read_status(str(status))
    assert s["bytes_done"] == 400 and s["bytes_transferred"] == 400
    assert s["current_file"] == "a" and s["state"] == "running"
    assert s["rate_bytes_per_s"] == 200.0 and s["eta_s"] == 3.0
    p.rewind(50)
    p.advance(10, transferred=False)
    final = p.finish("done", "ok")
    assert final["bytes_done"] == 360 and final["bytes_transferred"] == 400
    assert json.loads(status.read_text())["state"] == "done"


# --------------------------------------------------------------------------
# End to end over HTTP
# --------------------------------------------------------------------------


def test_http_fetch_publishes_and_second_run_skips(server, store, files):
    total = sum(len(d) for d in files.values())
    r = mf.fetch(cfg_http(server, store))
    assert r["changed"] and not r["skipped"]
    assert r["bytes_transferred"] == total == r["bytes_total"]
    assert r["published_path"] == os.path.join(store, "tiny", REV)
    assert sorted(e["path"] for e in r["manifest"]["files"]) == sorted(files)
    assert not os.path.exists(r["staging_path"])
    published_ok(store, files)
    status = json.loads(Path(r["status_file"]).read_text())
    assert status["state"] == "done" and status["bytes_done"] == total
    mode = os.stat(os.path.join(r["published_path"], "config.json")).st_mode & 0o777
    assert mode == 0o640
    n_requests = len(server.file_requests())
    r2 = mf.fetch(cfg_http(server, store))
    assert not r2["changed"] and r2["skipped"] and r2["bytes_transferred"] == 0
    assert len(server.file_requests()) == n_requests  # no file was requested again


def test_check_mode_writes_nothing(server, store, files):
    r = mf.fetch(cfg_http(server, store), check_mode=True)
    assert r["changed"]
    assert sorted(r["would_fetch"]) == sorted(files)
    assert r["bytes_to_transfer"] == sum(len(d) for d in files.values())
    assert not os.path.exists(store)
    assert server.file_requests() == []


def test_interrupted_transfer_resumes_with_range(server, store, files):
    big = "weights/model-00001-of-00002.safetensors"
    server.drop[big] = {"after": 300_000, "times": 1}
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_http(server, store, retries=0))
    assert ei.value.kind == "transfer" and big in ei.value.message
    staged = Path(store, "tiny", ".staging-" + REV, big)
    assert staged.stat().st_size == 300_000  # partial kept
    assert not Path(store, "tiny", REV).exists()  # nothing published
    status = json.loads(Path(store, "tiny", f".fetch-{REV}.status.json").read_text())
    assert status["state"] == "failed" and big in status["message"]

    total = sum(len(d) for d in files.values())
    r = mf.fetch(cfg_http(server, store))
    assert big in r["files_resumed"]
    assert r["bytes_transferred"] < total
    # files that completed before the interruption are reused from the journal, the big one resumes
    assert r["bytes_transferred"] == total - 300_000 - sum(len(files[p]) for p in r["files_reused"])
    assert {"path": "/m/" + big, "range": "bytes=300000-", "auth": None} in server.log
    published_ok(store, files)


def test_dropped_connection_retried_within_one_run(server, store, files):
    big = "weights/model-00002-of-00002.safetensors"
    server.drop[big] = {"after": 100_000, "times": 2}
    r = mf.fetch(cfg_http(server, store, retries=3))
    assert r["retries_used"] == 2
    assert r["bytes_transferred"] == sum(len(d) for d in files.values())  # every byte once
    ranges = [x["range"] for x in server.log if x["path"] == "/m/" + big]
    assert ranges == [None, "bytes=100000-", "bytes=200000-"]
    published_ok(store, files)


def test_range_ignored_restarts_file(server, store, files):
    big = "weights/model-00001-of-00002.safetensors"
    server.drop[big] = {"after": 250_000, "times": 1}
    with pytest.raises(mf.FetchError):
        mf.fetch(cfg_http(server, store, retries=0))
    server.httpd.ignore_range = True
    r = mf.fetch(cfg_http(server, store))
    assert big in r["files_range_ignored"]
    assert big not in r["files_resumed"]
    sent_for_big = [x for x in server.log if x["path"] == "/m/" + big]
    assert sent_for_big[-1]["range"] == "bytes=250000-"
    published_ok(store, files)


def test_corrupted_file_refetched(server, store, files):
    shard = "weights/model-00002-of-00002.safetensors"
    server.corrupt[shard] = 1
    r = mf.fetch(cfg_http(server, store))
    assert r["files_refetched"] == [shard]
    assert r["retries_used"] == 1
    published_ok(store, files)


def test_persistent_corruption_never_published(server, store, files, tmp_path):
    # an older revision is published first and must survive the failure untouched
    old = dict(files, **{"config.json": b'{"old": true}\n'})
    server.set_manifest(manifest_for(old, "v0"))
    server.files.update(old)
    mf.fetch(cfg_http(server, store, revision="v0"))
    before = Path(store, "tiny", "v0", "config.json").read_bytes()

    server.files.update(files)
    server.set_manifest(manifest_for(files))
    shard = "weights/model-00002-of-00002.safetensors"
    server.corrupt[shard] = 99
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_http(server, store, retries=2))
    assert ei.value.kind == "checksum" and "3 attempts" in ei.value.message
    assert not Path(store, "tiny", REV).exists()
    assert not Path(store, "tiny", ".staging-" + REV, shard).exists()  # bad bytes removed
    assert Path(store, "tiny", ".staging-" + REV, "config.json").exists()  # good ones kept for resume
    assert Path(store, "tiny", "v0", "config.json").read_bytes() == before
    assert Path(store, "tiny", "v0.verified.json").exists()


def test_truncated_file_on_server(server, store, files):
    shard = "weights/model-00001-of-00002.safetensors"
    server.truncate[shard] = 1000
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_http(server, store, retries=1))
    assert ei.value.kind == "transfer" and "1000 of 700000" in ei.value.message
    assert not Path(store, "tiny", REV).exists()


def test_server_sends_more_than_manifest(server, store, files):
    shard = "config.json"
    server.files[shard] = files[shard] + b"extra"
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_http(server, store, retries=1))
    assert ei.value.kind == "checksum"
    assert not Path(store, "tiny", REV).exists()


@pytest.mark.parametrize(
    ("where", "code", "kind"),
    [
        ("/m/manifest.json", 404, "not_found"),
        ("/m/manifest.json", 401, "unauthorized"),
        ("/m/tokenizer.json", 404, "not_found"),
        ("/m/tokenizer.json", 403, "unauthorized"),
        ("/m/tokenizer.json", 500, "transfer"),
    ],
)
def test_http_errors(server, store, where, code, kind):
    server.status[where] = code
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_http(server, store, retries=1))
    assert ei.value.kind == kind
    assert str(code) in ei.value.message
    assert not Path(store, "tiny", REV).exists()


def test_missing_file_on_server(server, store, files):
    del server.files["tokenizer.json"]
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_http(server, store))
    assert ei.value.kind == "not_found" and "404" in ei.value.message


def test_unreachable_source(store):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = {
        "name": "tiny",
        "revision": REV,
        "source": "http",
        "store": store,
        "manifest_url": f"http://127.0.0.1:{port}/m/manifest.json",
        "retries": 1,
        "retry_delay": 0,
        "timeout": 5,
    }
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg)
    assert ei.value.kind == "unreachable"
    assert f"127.0.0.1:{port}" in ei.value.message
    assert not os.path.exists(store)


def test_wrong_revision_leaves_published_untouched(server, store, files):
    mf.fetch(cfg_http(server, store))
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_http(server, store, revision="v2"))
    assert ei.value.kind == "revision"
    published_ok(store, files)
    assert not Path(store, "tiny", "v2").exists()


def test_disk_space_refusal_before_any_download(server, store, files):
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(
            cfg_http(server, store, free_space_margin=1 << 20),
            free_bytes=lambda path: 1 << 20,
        )
    assert ei.value.kind == "disk_space"
    assert server.file_requests() == []
    assert not os.path.exists(os.path.join(store, "tiny", ".staging-" + REV))


def test_disk_space_counts_only_missing_bytes(server, store, files):
    big = "weights/model-00001-of-00002.safetensors"
    server.drop[big] = {"after": 500_000, "times": 1}
    with pytest.raises(mf.FetchError):
        mf.fetch(cfg_http(server, store, retries=0))
    seen = []
    total = sum(len(d) for d in files.values())
    r = mf.fetch(
        cfg_http(server, store),
        free_bytes=lambda path: seen.append(path) or 10 << 30,
        check_mode=True,
    )
    # journal-verified small files cost nothing; the partial shard only its missing tail
    assert r["bytes_to_transfer"] == (700_000 - 500_000) + 600_000 < total
    assert r["would_fetch"] == [big, "weights/model-00002-of-00002.safetensors"]
    r = mf.fetch(cfg_http(server, store), free_bytes=lambda path: seen.append(path) or 10 << 30)
    assert seen == [os.path.join(store, "tiny")]


def test_path_traversal_manifest_refused(server, store, tmp_path):
    server.set_manifest(
        {
            "manifest_version": 1,
            "revision": REV,
            "files": [{"path": "../../evil", "size": 1, "sha256": SHA_A}],
        }
    )
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_http(server, store))
    assert ei.value.kind == "manifest" and "traversal" in ei.value.message
    assert not os.path.exists(store)


def test_manifest_sha256_pin(server, store):
    good = hashlib.sha256(server.manifest_bytes).hexdigest()
    mf.fetch(cfg_http(server, store, manifest_sha256=good), check_mode=True)
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_http(server, store, manifest_sha256="0" * 64))
    assert ei.value.kind == "checksum" and "manifest_sha256" in ei.value.message


def test_patterns_select_files(server, store, files):
    r = mf.fetch(cfg_http(server, store, allow_patterns=["*.json"], ignore_patterns=["tokenizer*"]))
    assert [e["path"] for e in r["manifest"]["files"]] == ["config.json"]
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_http(server, store, allow_patterns=["*.gguf"]))
    assert ei.value.kind == "input"


def test_verify_existing_full_repairs_damaged_copy(server, store, files):
    mf.fetch(cfg_http(server, store))
    shard = Path(store, "tiny", REV, "weights/model-00002-of-00002.safetensors")
    shard.chmod(0o644)
    data = bytearray(shard.read_bytes())
    data[10] ^= 0x01
    shard.write_bytes(bytes(data))  # same size: only a re-hash sees it
    assert mf.fetch(cfg_http(server, store))["skipped"]
    r = mf.fetch(cfg_http(server, store, verify_existing="full"))
    assert r["changed"] and r["replaced_damaged_copy"]
    assert r["published_problems"] == ["weights/model-00002-of-00002.safetensors: sha256 mismatch"]
    published_ok(store, files)
    leftovers = [p for p in os.listdir(os.path.join(store, "tiny")) if p.startswith(".replaced-")]
    assert leftovers == []


def test_truncated_published_file_detected_without_rehash(server, store, files):
    mf.fetch(cfg_http(server, store))
    shard = Path(store, "tiny", REV, "tokenizer.json")
    shard.chmod(0o644)
    shard.write_bytes(files["tokenizer.json"][:100])
    r = mf.fetch(cfg_http(server, store))
    assert r["changed"] and r["published_problems"] == ["tokenizer.json: size 100, expected 20000"]
    published_ok(store, files)


def test_missing_stamp_is_rewritten_after_full_check(server, store, files):
    r = mf.fetch(cfg_http(server, store))
    os.unlink(r["stamp_path"])
    n = len(server.file_requests())
    r2 = mf.fetch(cfg_http(server, store))
    assert r2["changed"] and r2["stamp_only"] and r2["bytes_transferred"] == 0
    assert len(server.file_requests()) == n
    published_ok(store, files)


def test_changed_source_content_replaces_copy_without_rehash(server, store, files, monkeypatch):
    mf.fetch(cfg_http(server, store))
    new = dict(files, **{"config.json": b'{"model_type": "qwen2", "fixed": true}\n'})
    server.files.update(new)
    server.set_manifest(manifest_for(new))
    hashed = []
    real = mf.hash_file
    monkeypatch.setattr(mf, "hash_file", lambda path, *a, **k: hashed.append(path) or real(path, *a, **k))
    r = mf.fetch(cfg_http(server, store))
    assert r["published_problems"] == ["stamp differs from the source's manifest"] and r["replaced_damaged_copy"]
    assert not [p for p in hashed if "/.staging-" not in p]  # the old published copy was not re-hashed
    published_ok(store, new)


def test_stray_staging_files_removed_before_publish(server, store, files):
    staging = Path(store, "tiny", ".staging-" + REV)
    (staging / "old").mkdir(parents=True)
    (staging / "old" / "leftover.bin").write_bytes(b"x")
    mf.fetch(cfg_http(server, store))
    published_ok(store, files)


def test_concurrent_fetch_refused(server, store):
    import fcntl

    Path(store, "tiny").mkdir(parents=True)
    fd = os.open(os.path.join(store, "tiny", ".fetch.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(mf.FetchError) as ei:
            mf.fetch(cfg_http(server, store))
        assert ei.value.kind == "busy"
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("over", "kind"),
    [
        ({"name": "../x"}, "input"),
        ({"revision": ""}, "input"),
        ({"revision": "a/b"}, "input"),
        ({"store": "relative"}, "input"),
        ({"verify_existing": "maybe"}, "input"),
        ({"retries": -1}, "input"),
        ({"source": "ftp"}, "input"),
        ({"manifest_url": "ftp://x/m.json"}, "input"),
    ],
)
def test_bad_input(server, store, over, kind):
    cfg = cfg_http(server, store)
    cfg.update(over)
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg)
    assert ei.value.kind == kind


# --------------------------------------------------------------------------
# Local / NFS source
# --------------------------------------------------------------------------


def write_tree(root, files):
    for p, d in files.items():
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_bytes(d)


def cfg_local(src, store, **kw):
    cfg = {
        "name": "tiny",
        "revision": REV,
        "source": "local",
        "path": str(src),
        "store": store,
        "retries": 1,
        "retry_delay": 0,
        "free_space_margin": 0,
    }
    cfg.update(kw)
    return cfg


def test_local_source_computes_manifest(tmp_path, store, files):
    src = tmp_path / "src"
    write_tree(src, files)
    r = mf.fetch(cfg_local(src, store))
    assert r["manifest"]["source"] == {"type": "local", "path": str(src)}
    published_ok(store, files)
    assert mf.fetch(cfg_local(src, store))["skipped"]


def test_local_source_with_manifest_and_resume(tmp_path, store, files):
    src = tmp_path / "src"
    write_tree(src, files)
    (src / mf.DEFAULT_MANIFEST_NAME).write_text(json.dumps(manifest_for(files)))
    big = "weights/model-00001-of-00002.safetensors"
    staged = Path(store, "tiny", ".staging-" + REV, big)
    staged.parent.mkdir(parents=True)
    staged.write_bytes(files[big][:123_456])
    r = mf.fetch(cfg_local(src, store))
    assert big in r["files_resumed"]
    assert r["bytes_transferred"] == sum(len(d) for d in files.values()) - 123_456
    published_ok(store, files)


def test_local_source_manifest_wrong_revision(tmp_path, store, files):
    src = tmp_path / "src"
    write_tree(src, files)
    (src / mf.DEFAULT_MANIFEST_NAME).write_text(json.dumps(manifest_for(files, "v9")))
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_local(src, store))
    assert ei.value.kind == "revision"


def test_local_source_missing_file(tmp_path, store, files):
    src = tmp_path / "src"
    write_tree(src, files)
    (src / mf.DEFAULT_MANIFEST_NAME).write_text(json.dumps(manifest_for(files)))
    (src / "tokenizer.json").unlink()
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_local(src, store))
    assert ei.value.kind == "not_found" and "tokenizer.json" in ei.value.message


def test_local_source_corrupt_file_never_published(tmp_path, store, files):
    src = tmp_path / "src"
    write_tree(src, files)
    (src / mf.DEFAULT_MANIFEST_NAME).write_text(json.dumps(manifest_for(files)))
    (src / "config.json").write_bytes(b"X" * len(files["config.json"]))
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_local(src, store))
    assert ei.value.kind == "checksum"
    assert not Path(store, "tiny", REV).exists()


def test_local_source_symlink_escape_refused(tmp_path, store, files):
    src = tmp_path / "src"
    write_tree(src, files)
    secret = tmp_path / "secret"
    secret.write_text("s")
    (src / "link").symlink_to(secret)
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_local(src, store))
    assert ei.value.kind == "manifest" and "outside" in ei.value.message


def test_local_source_absent(tmp_path, store):
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_local(tmp_path / "nfs-not-mounted", store))
    assert ei.value.kind == "unreachable" and "mounted" in ei.value.message


# --------------------------------------------------------------------------
# Hub source (fake huggingface_hub adapter, bytes from the local server)
# --------------------------------------------------------------------------


def git_oid(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """Stands in for HubAdapter: model_info with files metadata, and resolve URLs on the test server."""

    def __init__(self, server, files, commit=COMMIT, lfs=("weights/",), error=None):
        self.server, self.files, self.commit, self.error = server, files, commit, error
        self.lfs = lfs
        self.calls = []
        server.hub_prefixes.append(f"/org/tiny/resolve/{commit}/")

    def model_info(self, repo_id, revision):
        self.calls.append((repo_id, revision))
        if self.error:
            raise self.error
        siblings = []
        for p, d in sorted(self.files.items()):
            if p.startswith(self.lfs):
                siblings.append(
                    SimpleNamespace(
                        rfilename=p,
                        size=len(d),
                        blob_id="f" * 40,
                        lfs=SimpleNamespace(size=len(d), sha256=sha(d), pointer_size=130),
                    )
                )
            else:
                siblings.append(SimpleNamespace(rfilename=p, size=len(d), blob_id=git_oid(d), lfs=None))
        return SimpleNamespace(sha=self.commit, siblings=siblings)

    def file_url(self, repo_id, filename, revision):
        return f"{self.server.url}/{repo_id}/resolve/{revision}/{filename}"


def cfg_hub(store, **kw):
    cfg = {
        "name": "tiny",
        "revision": COMMIT,
        "source": "hub",
        "repo_id": "org/tiny",
        "store": store,
        "retries": 1,
        "retry_delay": 0,
        "free_space_margin": 0,
        "token": "hf_secret",
    }
    cfg.update(kw)
    return cfg


def test_hub_source_lfs_and_git_oids(server, store, files):
    hub = FakeHub(server, files)
    r = mf.fetch(cfg_hub(store), hub_adapter=hub)
    assert r["revision"] == COMMIT
    assert hub.calls == [("org/tiny", COMMIT)]
    published_ok(store, files, rev=COMMIT)
    # small files verified by git oid get their sha256 recorded in the stamp
    assert {e["path"]: e["sha256"] for e in r["manifest"]["files"]}["config.json"] == sha(files["config.json"])
    auth = {x["auth"] for x in server.log}
    assert auth == {"Bearer hf_secret"}
    assert "hf_secret" not in json.dumps(r)
    assert mf.fetch(cfg_hub(store), hub_adapter=hub)["skipped"]


def test_hub_source_corrupt_small_file_detected_by_git_oid(server, store, files):
    hub = FakeHub(server, files)
    server.corrupt["config.json"] = 1
    r = mf.fetch(cfg_hub(store), hub_adapter=hub)
    assert r["files_refetched"] == ["config.json"]
    published_ok(store, files, rev=COMMIT)


def test_hub_branch_refused_unless_allowed(server, store, files):
    hub = FakeHub(server, files)
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_hub(store, revision="main"), hub_adapter=hub)
    assert ei.value.kind == "revision" and "allow_branch" in ei.value.message
    assert hub.calls == []
    r = mf.fetch(cfg_hub(store, revision="main", allow_branch=True), hub_adapter=hub)
    assert r["revision"] == COMMIT and r["published_path"].endswith("/" + COMMIT)


def test_hub_commit_mismatch(server, store, files):
    hub = FakeHub(server, files, commit="f" * 40)
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_hub(store), hub_adapter=hub)
    assert ei.value.kind == "revision"


def test_hub_errors_mapped(server, store, files):
    hub = FakeHub(server, files, error=_exc("RevisionNotFoundError"))
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_hub(store), hub_adapter=hub)
    assert ei.value.kind == "revision"


def hub_api_json(files, commit=COMMIT, lfs=("weights/",)):
    """The hub's /api/models/<repo>/revision/<rev>?blobs=true answer, for the real huggingface_hub."""
    siblings = []
    for p, d in sorted(files.items()):
        sib = {"rfilename": p, "size": len(d), "blobId": git_oid(d)}
        if p.startswith(lfs):
            sib["blobId"] = "f" * 40
            sib["lfs"] = {"sha256": sha(d), "size": len(d), "pointerSize": 134}
        siblings.append(sib)
    return json.dumps({"_id": "x", "id": "org/tiny", "modelId": "org/tiny", "sha": commit, "private": False, "siblings": siblings}).encode()


def test_hub_source_with_real_huggingface_hub(server, store, files):
    """Runs only where huggingface_hub is installed: the real HfApi against the local fake hub."""
    pytest.importorskip("huggingface_hub")
    server.httpd.api_json = hub_api_json(files)
    server.hub_prefixes.append(f"/org/tiny/resolve/{COMMIT}/")
    r = mf.fetch(cfg_hub(store, endpoint=server.url))
    assert r["revision"] == COMMIT
    published_ok(store, files, rev=COMMIT)
    api_calls = [x for x in server.log if x["path"].startswith("/api/models/org/tiny/revision/" + COMMIT)]
    assert api_calls and api_calls[0]["auth"] == "Bearer hf_secret"


@pytest.mark.parametrize(
    ("sibling", "needle"),
    [
        ({"rfilename": "a.bin", "size": None, "lfs": None, "blob_id": "1" * 40}, "no size"),
        ({"rfilename": "a.bin", "size": 3, "lfs": None, "blob_id": None}, "neither an LFS sha256 nor a git blob id"),
        ({"rfilename": "a.bin", "size": 3, "lfs": {"sha256": "xyz", "size": 3}, "blob_id": "1" * 40}, "malformed sha256"),
        ({"rfilename": "../a.bin", "size": 3, "lfs": None, "blob_id": "1" * 40}, "traversal"),
    ],
)
def test_hub_incomplete_metadata(store, sibling, needle):
    class Hub:
        def model_info(self, repo_id, revision):
            return {"sha": COMMIT, "siblings": [sibling]}

    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_hub(store), hub_adapter=Hub())
    assert needle in ei.value.message
    assert ei.value.kind in ("source", "manifest")


def test_disk_full_during_download_keeps_staging(server, store, files, monkeypatch):
    real = mf.transfer_file
    calls = []

    def filling_disk(source, entry, dest, progress, *args, **kwargs):
        calls.append(entry["path"])
        if entry["path"].startswith("weights/"):
            with open(dest, "ab") as f:
                f.write(b"x" * 10)
            raise OSError(28, "No space left on device")
        return real(source, entry, dest, progress, *args, **kwargs)

    monkeypatch.setattr(mf, "transfer_file", filling_disk)
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_http(server, store))
    assert ei.value.kind == "disk_space" and "staging is kept" in ei.value.message
    assert Path(store, "tiny", ".staging-" + REV, "config.json").exists()
    assert not Path(store, "tiny", REV).exists()


def test_publish_failure_is_an_io_error(server, store, files, monkeypatch):
    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", dst)

    monkeypatch.setattr(mf.os, "rename", refuse)
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_http(server, store))
    assert ei.value.kind == "io" and "Permission denied" in ei.value.message
    monkeypatch.undo()
    r = mf.fetch(cfg_http(server, store))  # everything was verified in staging: nothing is downloaded again
    assert r["bytes_transferred"] == 0 and sorted(r["files_reused"]) == sorted(files)
    published_ok(store, files)


def test_hub_without_huggingface_hub(monkeypatch, store):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_hub(store))
    assert ei.value.kind == "dependency" and "pip install huggingface_hub" in ei.value.message


@pytest.mark.parametrize("repo_id", ["", "noslash", "a/b/c", "../x", None])
def test_hub_bad_repo_id(store, repo_id):
    with pytest.raises(mf.FetchError) as ei:
        mf.fetch(cfg_hub(store, repo_id=repo_id))
    assert ei.value.kind == "input"


def test_token_not_sent_to_other_host_on_redirect():
    seen = {}

    class Redirect(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            seen[self.headers.get("Host")] = self.headers.get("Authorization")
            if self.path == "/start":
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{self.server.server_address[1]}/cdn")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        port = httpd.server_address[1]
        client = mf.HttpClient(timeout=5, token="hf_secret")
        assert client.get_bytes(f"http://127.0.0.1:{port}/start") == b"ok"
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert seen[f"127.0.0.1:{port}"] == "Bearer hf_secret"
    assert seen[f"localhost:{port}"] is None


# --------------------------------------------------------------------------
# The Ansible module itself, once, through ansible's own runner
# --------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists(ANSIBLE), reason="ansible is not installed in this environment")
def test_ansible_module_check_then_fetch(server, store, files, tmp_path):
    args = cfg_http(server, store, mode="0644")
    rc, res = run_ansible_module(tmp_path, "model_fetch", args, "--check", "--diff")
    assert rc == 0 and res["changed"] and not os.path.exists(store)
    assert "absent" in res["diff"][0]["before"] if isinstance(res["diff"], list) else res["diff"]["before"]
    rc, res = run_ansible_module(tmp_path, "model_fetch", args)
    assert rc == 0 and res["changed"] and res["bytes_transferred"] == sum(len(d) for d in files.values())
    published_ok(store, files)
    rc, res = run_ansible_module(tmp_path, "model_fetch", args)
    assert rc == 0 and not res["changed"] and res["skipped"]
    server.status["/m/manifest.json"] = 404
    rc, res = run_ansible_module(tmp_path, "model_fetch", dict(args, revision="v2"))
    assert rc != 0 and res["failed"] and res["error_kind"] == "not_found"

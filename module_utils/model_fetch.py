"""Verified, resumable model fetch: the pure logic behind library/model_fetch.py.

Standard library only (runs with the target host's system python3.11+).
``huggingface_hub`` is imported lazily, and only for the ``hub`` source.

Layout under the model store (``store``)::

    <store>/<name>/<revision>/                 published, verified copy (read by vLLM)
    <store>/<name>/<revision>.verified.json    stamp: the manifest the copy matched
    <store>/<name>/.staging-<revision>/        download area, kept on error for resume
    <store>/<name>/.staging-<revision>.json    journal of files already verified in staging
    <store>/<name>/.fetch.lock                 one fetch per model at a time

The manifest format is described in docs/model-fetch.md.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import hashlib
import http.client
import json
import os
import re
import shutil
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

MANIFEST_VERSION = 1
DEFAULT_STORE = "/var/lib/llm-onprem/models"
DEFAULT_MANIFEST_NAME = "llm-onprem-manifest.json"
DEFAULT_HUB_ENDPOINT = "https://huggingface.co"
CHUNK_SIZE = 1 << 20
STATUS_INTERVAL_S = 1.0
VERIFY_MODES = ("stamp", "full")
SOURCES = ("hub", "http", "local")

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
GIT_SHA1_RE = COMMIT_RE
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Revisions and names become directory names: one path component, no dot-files.
COMPONENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class FetchError(Exception):
    """A fetch failure an operator can act on.

    ``kind`` is one of: input, manifest, revision, not_found, unauthorized,
    unreachable, transfer, checksum, disk_space, busy, dependency, io, source.
    """

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


class TransientError(Exception):
    """A failure worth retrying (dropped connection, timeout, HTTP 5xx/429)."""

    def __init__(self, message, kind="transfer"):
        super().__init__(message)
        self.kind = kind
        self.message = message


class ChecksumError(Exception):
    """The bytes of one file do not match the manifest (corrupt or truncated)."""


# --------------------------------------------------------------------------
# Manifest parsing and validation
# --------------------------------------------------------------------------


def safe_relpath(path):
    """Return ``path`` if it is a safe relative POSIX path inside the model dir.

    Refuses absolute paths, ``..``/``.``/empty components, backslashes, NUL and
    control characters: a manifest must never write outside the staging dir.
    """
    if not isinstance(path, str) or not path:
        raise FetchError("manifest", f"manifest file path must be a non-empty string, got {path!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise FetchError("manifest", f"manifest file path {path!r} contains control characters")
    if "\\" in path:
        raise FetchError("manifest", f"manifest file path {path!r} contains a backslash; use '/'")
    if path.startswith("/"):
        raise FetchError(
            "manifest",
            f"manifest file path {path!r} is absolute; paths must be relative",
        )
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise FetchError(
                "manifest",
                f"manifest file path {path!r} has an empty, '.' or '..' component (path traversal refused)",
            )
    if len(path.encode("utf-8")) > 4096 or any(len(p.encode("utf-8")) > 255 for p in parts):
        raise FetchError("manifest", f"manifest file path {path!r} is too long")
    return path


def check_component(value, what):
    """Check a name or revision used as one directory name."""
    if not isinstance(value, str) or not COMPONENT_RE.match(value):
        raise FetchError(
            "input",
            f"{what} {value!r} is not usable as a directory name: use letters, digits, '.', '_', '+', '-', "
            "not starting with '.' or '-', at most 200 characters",
        )
    return value


def _file_entry(raw, index):
    if not isinstance(raw, dict):
        raise FetchError(
            "manifest",
            f"manifest files[{index}] must be an object with path, size, sha256",
        )
    unknown = set(raw) - {"path", "size", "sha256", "git_sha1"}
    if unknown:
        raise FetchError(
            "manifest",
            f"manifest files[{index}] has unknown keys: {', '.join(sorted(unknown))}",
        )
    path = safe_relpath(raw.get("path"))
    size = raw.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise FetchError(
            "manifest",
            f"manifest entry {path!r}: size must be a non-negative integer, got {size!r}",
        )
    digest = raw.get("sha256")
    if not isinstance(digest, str) or not SHA256_RE.match(digest.lower()):
        raise FetchError(
            "manifest",
            f"manifest entry {path!r}: sha256 must be 64 hex characters, got {digest!r}",
        )
    entry = {"path": path, "size": size, "sha256": digest.lower()}
    git = raw.get("git_sha1")
    if git is not None:
        if not isinstance(git, str) or not GIT_SHA1_RE.match(git):
            raise FetchError(
                "manifest",
                f"manifest entry {path!r}: git_sha1 must be 40 hex characters, got {git!r}",
            )
        entry["git_sha1"] = git
    return entry


def check_path_set(paths):
    """Refuse duplicate paths and a path that is both a file and a directory."""
    seen = set()
    for p in paths:
        if p in seen:
            raise FetchError("manifest", f"manifest lists {p!r} twice")
        seen.add(p)
    for p in paths:
        parts = p.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in seen:
                raise FetchError(
                    "manifest",
                    f"manifest lists {prefix!r} both as a file and as a directory of {p!r}",
                )


def validate_manifest(obj, expected_revision=None):
    """Validate a decoded manifest and return a normalised copy (files sorted by path).

    Format (version 1)::

        {"manifest_version": 1, "revision": "<rev>",
         "files": [{"path": "config.json", "size": 660, "sha256": "<64 hex>"}, ...]}
    """
    if not isinstance(obj, dict):
        raise FetchError("manifest", "manifest must be a JSON object")
    version = obj.get("manifest_version")
    if version != MANIFEST_VERSION:
        raise FetchError(
            "manifest",
            f"manifest_version must be {MANIFEST_VERSION}, got {version!r} (unknown manifest format)",
        )
    unknown = set(obj) - {"manifest_version", "revision", "files", "name", "source"}
    if unknown:
        raise FetchError(
            "manifest",
            "manifest has unknown keys: {}".format(", ".join(sorted(unknown))),
        )
    revision = obj.get("revision")
    check_component(revision, "manifest revision")
    if expected_revision is not None and revision != expected_revision:
        raise FetchError(
            "revision",
            f"wrong revision: the source's manifest is for revision {revision!r} but {expected_revision!r} was requested; "
            "pin the revision the source actually serves",
        )
    files = obj.get("files")
    if not isinstance(files, list) or not files:
        raise FetchError("manifest", "manifest files must be a non-empty list")
    entries = [_file_entry(raw, i) for i, raw in enumerate(files)]
    check_path_set([e["path"] for e in entries])
    out = {
        "manifest_version": MANIFEST_VERSION,
        "revision": revision,
        "files": sorted(entries, key=lambda e: e["path"]),
    }
    for key in ("name", "source"):
        if isinstance(obj.get(key), str):
            out[key] = obj[key]
    return out


def parse_manifest(data, expected_revision=None):
    """Parse manifest JSON (str or bytes) and validate it."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FetchError("manifest", f"manifest is not UTF-8: {exc}") from None
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise FetchError("manifest", f"manifest is not valid JSON: {exc}") from None
    return validate_manifest(obj, expected_revision)


def filter_entries(entries, allow_patterns=None, ignore_patterns=None):
    """Keep entries whose path matches any allow pattern and no ignore pattern (fnmatch)."""
    out = []
    for e in entries:
        path = e["path"]
        if allow_patterns and not any(fnmatch.fnmatchcase(path, pat) for pat in allow_patterns):
            continue
        if ignore_patterns and any(fnmatch.fnmatchcase(path, pat) for pat in ignore_patterns):
            continue
        out.append(e)
    return out


def manifest_total(manifest):
    return sum(e["size"] for e in manifest["files"])


def manifest_key(manifest):
    """What a stamp must match: the revision and every (path, size, sha256)."""
    return (
        manifest["revision"],
        tuple((e["path"], e["size"], e["sha256"]) for e in manifest["files"]),
    )


# --------------------------------------------------------------------------
# Checksums, resume and disk arithmetic
# --------------------------------------------------------------------------


def git_blob_sha1_prefix(size):
    return b"blob %d\0" % size


def new_hashers(entry):
    """sha256 always; git blob sha1 too when the entry is verified by git oid (hub non-LFS files)."""
    hashers = {"sha256": hashlib.sha256()}
    if entry.get("git_sha1"):
        h = hashlib.sha1()  # noqa: S324 - git object id (hub non-LFS files), not a security boundary
        h.update(git_blob_sha1_prefix(entry["size"]))
        hashers["git_sha1"] = h
    return hashers


def hash_file(path, entry=None, chunk_size=CHUNK_SIZE, limit=None):
    """Hash a file (optionally only its first ``limit`` bytes); return {algo: hex}."""
    hashers = new_hashers(entry or {})
    remaining = limit
    with open(path, "rb") as f:
        while True:
            want = chunk_size if remaining is None else min(chunk_size, remaining)
            if want == 0:
                break
            block = f.read(want)
            if not block:
                break
            for h in hashers.values():
                h.update(block)
            if remaining is not None:
                remaining -= len(block)
    return {k: h.hexdigest() for k, h in hashers.items()}


def sha256_file(path, chunk_size=CHUNK_SIZE):
    return hash_file(path, chunk_size=chunk_size)["sha256"]


def digest_matches(entry, digests):
    """True when the computed digests satisfy what the manifest entry pins."""
    if entry.get("sha256") and digests.get("sha256") != entry["sha256"]:
        return False
    if entry.get("git_sha1") and digests.get("git_sha1") != entry["git_sha1"]:
        return False
    return bool(entry.get("sha256") or entry.get("git_sha1"))


def resume_offset(expected_size, partial_size):
    """Where to resume a partial file: its size, or 0 (start over) if it is longer than expected."""
    if partial_size <= 0 or partial_size > expected_size:
        return 0
    return partial_size


def bytes_still_needed(entries, partial_sizes, verified):
    """Bytes to transfer: for each file not yet verified, its size minus a usable partial prefix."""
    total = 0
    for e in entries:
        if e["path"] in verified:
            continue
        total += e["size"] - resume_offset(e["size"], partial_sizes.get(e["path"], 0))
    return total


def required_free_bytes(needed, margin):
    return needed + margin if needed > 0 else 0


def check_disk_space(needed, free, margin, where):
    """Raise FetchError('disk_space') if ``free`` cannot hold ``needed`` + ``margin`` bytes."""
    required = required_free_bytes(needed, margin)
    if required and free < required:
        raise FetchError(
            "disk_space",
            f"not enough free space in {where}: {human(needed)} still to download plus a {human(margin)} margin "
            f"needs {human(required)}, only {human(free)} free; "
            "free space or lower free_space_margin",
        )


def disk_free(path):
    """Free bytes for an unprivileged writer on the filesystem holding ``path`` (or its nearest existing parent)."""
    p = os.path.abspath(path)
    while not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    st = os.statvfs(p)
    return st.f_bavail * st.f_frsize


def human(n):
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{int(n)} B"  # pragma: no cover


# --------------------------------------------------------------------------
# Store layout, stamp and skip logic
# --------------------------------------------------------------------------


def store_paths(store, name, revision):
    model_dir = os.path.join(store, name)
    return {
        "model_dir": model_dir,
        "published": os.path.join(model_dir, revision),
        "stamp": os.path.join(model_dir, revision + ".verified.json"),
        "staging": os.path.join(model_dir, ".staging-" + revision),
        "journal": os.path.join(model_dir, ".staging-" + revision + ".json"),
        "lock": os.path.join(model_dir, ".fetch.lock"),
        "status": os.path.join(model_dir, ".fetch-" + revision + ".status.json"),
    }


def read_json_file(path):
    """Read a JSON file; None if it is missing or unreadable (a damaged stamp is simply not trusted)."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):
        return None


def entry_matches(stamped, wanted):
    """A stamped entry satisfies a wanted one: same path and size, and the same digest
    for every digest the wanted entry pins (sha256, and/or git_sha1 for hub non-LFS files)."""
    if stamped["path"] != wanted["path"] or stamped["size"] != wanted["size"]:
        return False
    return digest_matches(wanted, stamped)


def stamp_matches(stamp, manifest):
    """True when a stamp (a previously verified manifest) equals the manifest now wanted."""
    if not isinstance(stamp, dict):
        return False
    try:
        body = validate_manifest({k: v for k, v in stamp.items() if k != "verified_at"})
    except FetchError:
        return False
    if body["revision"] != manifest["revision"] or len(body["files"]) != len(manifest["files"]):
        return False
    return all(entry_matches(s, w) for s, w in zip(body["files"], manifest["files"], strict=True))


def stamp_is_valid(stamp):
    """True when a stamp parses as a manifest (whatever it describes)."""
    if not isinstance(stamp, dict):
        return False
    try:
        validate_manifest({k: v for k, v in stamp.items() if k != "verified_at"})
    except FetchError:
        return False
    return True


def fill_sha256_from_stamp(stamp, manifest):
    """Hub files pinned only by git oid take the sha256 recorded when they were verified."""
    by_path = {e["path"]: e for e in stamp["files"]}
    for e in manifest["files"]:
        if not e.get("sha256"):
            e["sha256"] = by_path[e["path"]]["sha256"]


def check_published(published, manifest, mode, chunk_size=CHUNK_SIZE):
    """Check a published copy. ``stamp`` mode: every file present with its size (cheap).
    ``full`` mode: every file re-hashed. Returns a list of problems (empty = good)."""
    problems = []
    for e in manifest["files"]:
        path = os.path.join(published, e["path"])
        try:
            st = os.stat(path)
        except OSError:
            problems.append("{}: missing".format(e["path"]))
            continue
        if st.st_size != e["size"]:
            problems.append(f"{e['path']}: size {st.st_size}, expected {e['size']}")
            continue
        if mode == "full":
            digests = hash_file(path, e, chunk_size)
            if not digest_matches(e, digests):
                problems.append("{}: sha256 mismatch".format(e["path"]))
            elif not e.get("sha256"):
                e["sha256"] = digests["sha256"]
    return problems


def write_json_atomic(path, obj, mode=0o644, uid=None, gid=None):
    """Write JSON through a temp file in the same directory and an atomic rename."""
    d = os.path.dirname(path) or "."
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    chown(tmp, uid, gid)
    os.replace(tmp, path)


def chown(path, uid, gid):
    if uid is None and gid is None:
        return
    os.chown(
        path,
        -1 if uid is None else uid,
        -1 if gid is None else gid,
        follow_symlinks=False,
    )


# --------------------------------------------------------------------------
# Progress / status file
# --------------------------------------------------------------------------


class Progress:
    """Tracks bytes and writes a JSON status file (at most once a second) that an async task can poll."""

    def __init__(
        self,
        path,
        total_bytes,
        files_total,
        clock=time.monotonic,
        interval=STATUS_INTERVAL_S,
        uid=None,
        gid=None,
    ):
        self.path = path
        self.clock = clock
        self.interval = interval
        self.uid = uid
        self.gid = gid
        self.started = clock()
        self.last_write = None
        self.state = {
            "state": "running",
            "phase": "starting",
            "pid": os.getpid(),
            "bytes_total": total_bytes,
            "bytes_done": 0,
            "bytes_transferred": 0,
            "files_total": files_total,
            "files_done": 0,
            "current_file": None,
            "rate_bytes_per_s": 0.0,
            "eta_s": None,
            "message": "",
        }

    def _refresh(self):
        elapsed = max(self.clock() - self.started, 1e-6)
        s = self.state
        s["elapsed_s"] = round(elapsed, 3)
        s["rate_bytes_per_s"] = round(s["bytes_transferred"] / elapsed, 1)
        left = s["bytes_total"] - s["bytes_done"]
        s["eta_s"] = round(left / s["rate_bytes_per_s"], 1) if s["rate_bytes_per_s"] > 0 and left > 0 else None
        s["updated"] = time.time()

    def write(self, force=False):
        now = self.clock()
        if not force and self.last_write is not None and now - self.last_write < self.interval:
            return
        self.last_write = now
        self._refresh()
        if self.path:
            try:
                write_json_atomic(self.path, self.state, uid=self.uid, gid=self.gid)
            except OSError:
                pass  # progress is best effort; the fetch itself must not fail on it

    def phase(self, phase, current_file=None):
        self.state["phase"] = phase
        self.state["current_file"] = current_file
        self.write(force=True)

    def advance(self, n, transferred=True):
        self.state["bytes_done"] += n
        if transferred:
            self.state["bytes_transferred"] += n
        self.write()

    def rewind(self, n):
        """A partial file was discarded (range ignored, corrupt): its bytes are no longer done."""
        self.state["bytes_done"] = max(0, self.state["bytes_done"] - n)

    def file_done(self):
        self.state["files_done"] += 1
        self.write()

    def finish(self, state, message=""):
        self.state["state"] = state
        self.state["phase"] = state
        self.state["message"] = message
        self.state["current_file"] = None
        self.write(force=True)
        return dict(self.state)


def read_status(path):
    """Read a status file written by Progress (None if absent)."""
    return read_json_file(path)


# --------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------


def classify_http_error(code, url, reason=""):
    """Map an HTTP status to an operator-facing error (FetchError) or a retryable TransientError."""
    where = redact_url(url)
    if code in (404, 410):
        return FetchError(
            "not_found",
            f"HTTP {code} from {where}: the file or revision is not on the source; check the URL, the revision and the manifest",
        )
    if code in (401, 403):
        return FetchError(
            "unauthorized",
            f"HTTP {code} from {where}: access denied; check the token or the server's credentials (gated models need an accepted licence)",
        )
    if code in (408, 429) or 500 <= code <= 599:
        return TransientError(f"HTTP {code} {reason} from {where}")
    return FetchError("transfer", f"HTTP {code} {reason} from {where}")


def redact_url(url):
    """Drop user:password from a URL before it appears in a message."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        parts = parts._replace(netloc=netloc)
    return urllib.parse.urlunsplit(parts)


class _SameHostAuthRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects; keep Authorization only when the redirect stays on the same host
    (the hub redirects large files to a CDN with a signed URL: the token must not follow)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            auth = req.unredirected_hdrs.get("Authorization")
            if auth and urllib.parse.urlsplit(newurl).netloc == urllib.parse.urlsplit(req.full_url).netloc:
                new.add_unredirected_header("Authorization", auth)
        return new


class HttpClient:
    """Tiny urllib wrapper: ranged GETs with error mapping."""

    def __init__(self, timeout=60, validate_certs=True, ca_path=None, token=None):
        self.timeout = timeout
        self.token = token
        if validate_certs:
            ctx = ssl.create_default_context(cafile=ca_path) if ca_path else ssl.create_default_context()
        else:
            ctx = ssl._create_unverified_context()  # noqa: S323 - the operator chose validate_certs: false
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), _SameHostAuthRedirect())

    def open(self, url, offset=0):
        req = urllib.request.Request(
            url,
            headers={
                "User-Agent": "llm-onprem-model-fetch/1",
                "Accept-Encoding": "identity",
            },
        )
        if offset:
            req.add_header("Range", f"bytes={offset}-")
        if self.token:
            req.add_unredirected_header("Authorization", f"Bearer {self.token}")
        try:
            return self.opener.open(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416:
                return None
            raise classify_http_error(exc.code, url, exc.reason) from None
        except urllib.error.URLError as exc:
            raise TransientError(f"cannot reach {redact_url(url)}: {exc.reason}", kind="unreachable") from None
        except (OSError, http.client.HTTPException) as exc:
            raise TransientError(f"cannot reach {redact_url(url)}: {exc}", kind="unreachable") from None

    def get_bytes(self, url, limit=64 << 20):
        resp = self.open(url)
        if resp is None:
            raise FetchError("transfer", f"HTTP 416 from {redact_url(url)} for a plain GET")
        with resp:
            try:
                data = resp.read(limit + 1)
            except (OSError, http.client.HTTPException) as exc:
                raise TransientError(f"reading {redact_url(url)} failed: {exc}") from None
        if len(data) > limit:
            raise FetchError(
                "manifest",
                f"{redact_url(url)} is larger than {human(limit)}; not a manifest",
            )
        return data

    def open_at(self, url, offset, size):
        """Open ``url`` to read from ``offset``. Returns (stream, start); ``start`` is 0 when the
        server ignored the Range header (the file must then be restarted)."""
        resp = self.open(url, offset)
        if resp is None:  # 416: the range is past the end; start over with the whole file
            resp = self.open(url, 0)
            if resp is None:
                raise FetchError("transfer", f"HTTP 416 from {redact_url(url)} for a plain GET")
            return resp, 0
        status = getattr(resp, "status", 200)
        if offset and status == 206:
            m = CONTENT_RANGE_RE.match(resp.headers.get("Content-Range", "").strip())
            if not m or int(m.group(1)) != offset:
                resp.close()
                raise TransientError(f"server answered Range bytes={offset}- with Content-Range {resp.headers.get('Content-Range')!r}")
            return resp, offset
        if status not in (200, 206):
            resp.close()
            raise FetchError("transfer", f"unexpected HTTP {status} from {redact_url(url)}")
        return resp, 0


class HttpSource:
    """An HTTP(S) artifact server: a manifest URL, files at <base_url>/<path>."""

    kind = "http"

    def __init__(self, manifest_url, base_url=None, manifest_sha256=None, client=None):
        if not manifest_url or urllib.parse.urlsplit(manifest_url).scheme not in (
            "http",
            "https",
        ):
            raise FetchError(
                "input",
                f"manifest_url must be an http:// or https:// URL, got {manifest_url!r}",
            )
        self.manifest_url = manifest_url
        self.base_url = (base_url or manifest_url.rsplit("/", 1)[0]).rstrip("/")
        self.manifest_sha256 = manifest_sha256.lower() if manifest_sha256 else None
        self.client = client or HttpClient()

    def describe(self):
        return {
            "type": "http",
            "manifest_url": redact_url(self.manifest_url),
            "base_url": redact_url(self.base_url),
        }

    def manifest(self, revision):
        data = self.client.get_bytes(self.manifest_url)
        if self.manifest_sha256 and hashlib.sha256(data).hexdigest() != self.manifest_sha256:
            raise FetchError(
                "checksum",
                f"the manifest at {redact_url(self.manifest_url)} does not match manifest_sha256 {self.manifest_sha256}",
            )
        return parse_manifest(data, expected_revision=revision)

    def url_for(self, entry):
        return self.base_url + "/" + urllib.parse.quote(entry["path"])

    def open_at(self, entry, offset):
        return self.client.open_at(self.url_for(entry), offset, entry["size"])


class LocalSource:
    """A local or NFS directory, with a manifest file or a manifest computed by hashing it."""

    kind = "local"

    def __init__(
        self,
        path,
        manifest_path=None,
        manifest_name=DEFAULT_MANIFEST_NAME,
        chunk_size=CHUNK_SIZE,
    ):
        if not path or not os.path.isabs(path):
            raise FetchError("input", f"path must be an absolute directory path, got {path!r}")
        self.root = path
        self.manifest_path = manifest_path
        self.manifest_name = manifest_name
        self.chunk_size = chunk_size

    def describe(self):
        return {"type": "local", "path": self.root}

    def _resolve(self, rel):
        full = os.path.join(self.root, rel)
        real = os.path.realpath(full)
        root = os.path.realpath(self.root)
        if os.path.commonpath([real, root]) != root:
            raise FetchError(
                "manifest",
                f"{rel} resolves outside the source directory {self.root} (symlink refused)",
            )
        return real

    def manifest(self, revision):
        if not os.path.isdir(self.root):
            raise FetchError(
                "unreachable",
                f"source directory {self.root} does not exist or is not a directory (is the NFS share mounted?)",
            )
        mpath = self.manifest_path or os.path.join(self.root, self.manifest_name)
        if self.manifest_path or os.path.exists(mpath):
            try:
                with open(mpath, "rb") as f:
                    data = f.read(64 << 20)
            except OSError as exc:
                raise FetchError("not_found", f"cannot read manifest {mpath}: {exc.strerror}") from None
            return parse_manifest(data, expected_revision=revision)
        return self.compute_manifest(revision)

    def compute_manifest(self, revision):
        """Hash every regular file under the source (symlinks must stay inside it)."""
        files = []
        root = os.path.realpath(self.root)
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if d not in (".git",) and not d.startswith(".staging-"))
            for fn in sorted(filenames):
                full = os.path.join(dirpath, fn)
                rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                if rel == self.manifest_name:
                    continue
                real = self._resolve(rel)
                if not os.path.isfile(real):
                    continue
                safe_relpath(rel)
                files.append(
                    {
                        "path": rel,
                        "size": os.path.getsize(real),
                        "sha256": sha256_file(real, self.chunk_size),
                    }
                )
        if not files:
            raise FetchError("not_found", f"source directory {root} holds no files")
        return validate_manifest(
            {
                "manifest_version": MANIFEST_VERSION,
                "revision": revision,
                "files": files,
            },
            revision,
        )

    def open_at(self, entry, offset):
        real = self._resolve(entry["path"])
        try:
            f = open(real, "rb")  # noqa: SIM115 - the caller owns and closes the stream
        except FileNotFoundError:
            raise FetchError(
                "not_found",
                "{} is listed in the manifest but missing from {}".format(entry["path"], self.root),
            ) from None
        except OSError as exc:
            raise TransientError(f"cannot read {real}: {exc.strerror}", kind="unreachable") from None
        if offset:
            f.seek(offset)
        return f, offset


def import_huggingface_hub():
    """Import huggingface_hub lazily: only the hub source needs it."""
    try:
        import huggingface_hub
    except ImportError:
        raise FetchError(
            "dependency",
            "source 'hub' needs the Python package huggingface_hub in the interpreter that runs this module; "
            "install it (pip install huggingface_hub) or use source 'http' or 'local'",
        ) from None
    return huggingface_hub


class HubAdapter:
    """The two hub calls model_fetch needs, behind a small interface (tests inject a fake)."""

    def __init__(self, endpoint=None, token=None):
        hub = import_huggingface_hub()
        self.hub = hub
        self.api = hub.HfApi(endpoint=endpoint, token=token or False)
        self.endpoint = endpoint

    def model_info(self, repo_id, revision):
        return self.api.model_info(repo_id, revision=revision, files_metadata=True)

    def file_url(self, repo_id, filename, revision):
        return self.hub.hf_hub_url(repo_id, filename, revision=revision, endpoint=self.endpoint)


def _get(obj, key):
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def hub_error(exc, repo_id, revision):
    """Map a huggingface_hub exception to a FetchError by class name (no hard import of the classes)."""
    names = {c.__name__ for c in type(exc).__mro__}
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "RevisionNotFoundError" in names:
        return FetchError("revision", f"revision {revision} not found in {repo_id} on the hub: {text}")
    if "GatedRepoError" in names:
        return FetchError(
            "unauthorized",
            f"{repo_id} is gated: accept its licence and pass a token ({text})",
        )
    if "RepositoryNotFoundError" in names:
        return FetchError(
            "not_found",
            f"repository {repo_id} not found on the hub, or the token cannot see it ({text})",
        )
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    if isinstance(code, int):
        err = classify_http_error(code, f"the hub API for {repo_id}")
        if isinstance(err, FetchError):
            return err
        return FetchError("unreachable", f"hub API for {repo_id} answered HTTP {code}: {text}")
    if any("Connect" in n or "Timeout" in n or n in ("OSError", "ConnectionError") for n in names):
        return FetchError("unreachable", f"cannot reach the hub for {repo_id}: {text}")
    return FetchError("source", f"hub error for {repo_id}@{revision}: {type(exc).__name__}: {text}")


class HubSource:
    """The Hugging Face hub (or a mirror): metadata from huggingface_hub, bytes over ranged HTTP."""

    kind = "hub"

    def __init__(
        self,
        repo_id,
        endpoint=None,
        token=None,
        allow_branch=False,
        client=None,
        adapter=None,
    ):
        if not isinstance(repo_id, str) or not re.match(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", repo_id or ""):
            raise FetchError("input", f"repo_id must look like 'org/name', got {repo_id!r}")
        self.repo_id = repo_id
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_HUB_ENDPOINT).rstrip("/")
        self.allow_branch = allow_branch
        self.client = client or HttpClient(token=token)
        self.adapter = adapter
        self.token = token
        self.commit = None

    def describe(self):
        return {
            "type": "hub",
            "repo_id": self.repo_id,
            "endpoint": redact_url(self.endpoint),
        }

    def manifest(self, revision):
        if not COMMIT_RE.match(revision) and not self.allow_branch:
            raise FetchError(
                "revision",
                f"revision {revision!r} is not a 40-hex commit id; pin a commit (branch and tag names move) or set allow_branch: true",
            )
        adapter = self.adapter or HubAdapter(endpoint=self.endpoint, token=self.token)
        try:
            info = adapter.model_info(self.repo_id, revision)
        except FetchError:
            raise
        except Exception as exc:  # noqa: BLE001 - third-party exceptions are mapped by class name
            raise hub_error(exc, self.repo_id, revision) from None
        commit = _get(info, "sha")
        if not isinstance(commit, str) or not COMMIT_RE.match(commit):
            raise FetchError(
                "source",
                f"the hub did not report a commit id for {self.repo_id}@{revision}",
            )
        if COMMIT_RE.match(revision) and commit != revision:
            raise FetchError(
                "revision",
                f"wrong revision: asked for {revision}, the hub resolved {commit}",
            )
        self.commit = commit
        self._adapter = adapter
        entries = []
        for s in _get(info, "siblings") or []:
            path = safe_relpath(_get(s, "rfilename"))
            lfs = _get(s, "lfs")
            size = _get(s, "size")
            if size is None:
                size = _get(lfs, "size")
            if not isinstance(size, int) or size < 0:
                raise FetchError(
                    "source",
                    f"the hub gave no size for {path} (files metadata missing)",
                )
            sha = _get(lfs, "sha256")
            entry = {
                "path": path,
                "size": size,
                "sha256": sha.lower() if isinstance(sha, str) else None,
            }
            if entry["sha256"] is None:
                blob = _get(s, "blob_id")
                if not isinstance(blob, str) or not re.match(r"^[0-9a-f]{40}$", blob):
                    raise FetchError(
                        "source",
                        f"the hub gave neither an LFS sha256 nor a git blob id for {path}",
                    )
                entry["git_sha1"] = blob
            elif not SHA256_RE.match(entry["sha256"]):
                raise FetchError("source", f"the hub gave a malformed sha256 for {path}")
            entries.append(entry)
        if not entries:
            raise FetchError("not_found", f"{self.repo_id}@{commit} lists no files")
        check_path_set([e["path"] for e in entries])
        return {
            "manifest_version": MANIFEST_VERSION,
            "revision": commit,
            "files": sorted(entries, key=lambda e: e["path"]),
        }

    def open_at(self, entry, offset):
        url = self._adapter.file_url(self.repo_id, entry["path"], self.commit)
        return self.client.open_at(url, offset, entry["size"])


# --------------------------------------------------------------------------
# Transfer of one file
# --------------------------------------------------------------------------


def transfer_file(source, entry, dest, progress, chunk_size=CHUNK_SIZE, prior_credit=0):
    """Bring ``dest`` to the full file, resuming from its current length when possible.

    Returns a dict: transferred (bytes read from the source), resumed_from, range_ignored, digests.
    Raises TransientError (connection dropped: partial kept) or ChecksumError (bad bytes: file removed).
    """
    size = entry["size"]
    partial = os.path.getsize(dest) if os.path.exists(dest) else 0
    offset = resume_offset(size, partial)
    if offset != partial:
        with open(dest, "r+b") as f:
            f.truncate(offset)
    credit = prior_credit
    hashers = new_hashers(entry)
    if offset:
        # The prefix already on disk is hashed once so the digest covers the whole file in one pass.
        with open(dest, "rb") as f:
            left = offset
            while left:
                block = f.read(min(chunk_size, left))
                if not block:
                    break
                left -= len(block)
                for h in hashers.values():
                    h.update(block)
        if credit < offset:
            progress.advance(offset - credit, transferred=False)
            credit = offset
    info = {"transferred": 0, "resumed_from": offset, "range_ignored": False}
    if offset < size or (size == 0 and not os.path.exists(dest)):
        stream, start = source.open_at(entry, offset) if size else (None, 0)
        if start != offset:
            info["range_ignored"] = True
            info["resumed_from"] = 0
            progress.rewind(credit)
            credit = 0
            offset = 0
            hashers = new_hashers(entry)
        buf = bytearray(chunk_size)
        view = memoryview(buf)
        mode = "ab" if offset else "wb"
        with open(dest, mode) as out:
            if stream is not None:
                try:
                    remaining = size - offset
                    while remaining > 0:
                        try:
                            n = stream.readinto(view[: min(chunk_size, remaining)])
                        except (OSError, http.client.HTTPException) as exc:
                            raise TransientError(f"connection lost while reading {entry['path']} after {size - remaining} of {size} bytes: {exc}") from None
                        if not n:
                            break
                        out.write(view[:n])
                        for h in hashers.values():
                            h.update(view[:n])
                        remaining -= n
                        info["transferred"] += n
                        progress.advance(n)
                    if remaining > 0:
                        out.flush()
                        raise TransientError(f"source closed {entry['path']} after {size - remaining} of {size} bytes")
                    extra = b""
                    try:
                        extra = stream.read(1)
                    except (OSError, http.client.HTTPException):
                        extra = b""
                    if extra:
                        raise ChecksumError(f"{entry['path']}: the source sent more than the manifest's {size} bytes")
                finally:
                    stream.close()
    digests = {k: h.hexdigest() for k, h in hashers.items()}
    info["digests"] = digests
    info["credit"] = credit + info["transferred"]
    if os.path.getsize(dest) != size:
        raise ChecksumError(f"{entry['path']}: {os.path.getsize(dest)} bytes on disk, manifest says {size}")
    if not digest_matches(entry, digests):
        raise ChecksumError(
            "{}: checksum mismatch (got sha256 {}, expected {})".format(
                entry["path"],
                digests["sha256"],
                entry.get("sha256") or "git " + entry.get("git_sha1", ""),
            )
        )
    return info


# --------------------------------------------------------------------------
# The fetch
# --------------------------------------------------------------------------


def _mkdir(path, mode, uid, gid):
    if not os.path.isdir(path):
        os.makedirs(path, mode)
        os.chmod(path, mode)
        chown(path, uid, gid)


def _rmtree(path):
    if os.path.lexists(path):
        shutil.rmtree(path)


def _staging_state(paths, manifest):
    """Sizes of partial files in staging and the set of files the journal says are verified (unchanged since)."""
    journal = read_json_file(paths["journal"]) or {}
    journal_files = journal.get("files", {}) if journal.get("revision") == manifest["revision"] else {}
    partial, verified = {}, set()
    for e in manifest["files"]:
        full = os.path.join(paths["staging"], e["path"])
        try:
            st = os.stat(full)
        except OSError:
            continue
        partial[e["path"]] = st.st_size
        j = journal_files.get(e["path"])
        if (
            isinstance(j, dict)
            and j.get("size") == e["size"] == st.st_size
            and j.get("mtime_ns") == st.st_mtime_ns
            and j.get("sha256") == (e.get("sha256") or j.get("sha256"))
            and (not e.get("git_sha1") or j.get("git_sha1") == e["git_sha1"])
        ):
            verified.add(e["path"])
    return partial, verified, journal_files


def _clean_strays(staging, wanted):
    """Remove files in staging that the manifest does not list (left by an older attempt)."""
    for dirpath, dirnames, filenames in os.walk(staging, topdown=False):
        for fn in filenames:
            rel = os.path.relpath(os.path.join(dirpath, fn), staging).replace(os.sep, "/")
            if rel not in wanted:
                os.unlink(os.path.join(dirpath, fn))
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                os.unlink(full)
            elif not os.listdir(full):
                os.rmdir(full)


def _lock(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise FetchError("busy", f"another model_fetch holds {path}; wait for it to finish") from None
        raise
    return fd


def build_source(cfg, client=None, hub_adapter=None):
    src = cfg.get("source")
    if src not in SOURCES:
        raise FetchError(
            "input",
            "source must be one of {}, got {!r}".format(", ".join(SOURCES), src),
        )
    if client is None:
        client = HttpClient(
            timeout=cfg.get("timeout", 60),
            validate_certs=cfg.get("validate_certs", True),
            ca_path=cfg.get("ca_path"),
            token=cfg.get("token") if src == "hub" else None,
        )
    if src == "hub":
        return HubSource(
            cfg.get("repo_id"),
            endpoint=cfg.get("endpoint"),
            token=cfg.get("token"),
            allow_branch=cfg.get("allow_branch", False),
            client=client,
            adapter=hub_adapter,
        )
    if src == "http":
        return HttpSource(
            cfg.get("manifest_url"),
            base_url=cfg.get("base_url"),
            manifest_sha256=cfg.get("manifest_sha256"),
            client=client,
        )
    return LocalSource(cfg.get("path"), manifest_path=cfg.get("manifest_path"))


def _with_retries(fn, retries, delay, sleep, on_retry=None):
    attempt = 0
    while True:
        try:
            return fn()
        except TransientError as exc:
            if attempt >= retries:
                raise
            attempt += 1
            if on_retry:
                on_retry(exc, attempt)
            sleep(delay * attempt)


def public_manifest(manifest, name=None, source=None):
    """The manifest as written to the stamp and returned: path, size, sha256 per file."""
    out = {
        "manifest_version": MANIFEST_VERSION,
        "revision": manifest["revision"],
        "files": [],
    }
    for e in manifest["files"]:
        entry = {"path": e["path"], "size": e["size"], "sha256": e["sha256"]}
        if e.get("git_sha1"):
            entry["git_sha1"] = e["git_sha1"]
        out["files"].append(entry)
    if name:
        out["name"] = name
    if source:
        out["source"] = source
    return out


def fetch(
    cfg,
    check_mode=False,
    free_bytes=disk_free,
    sleep=time.sleep,
    clock=time.monotonic,
    client=None,
    hub_adapter=None,
    chunk_size=CHUNK_SIZE,
):
    """Fetch, verify and publish one model revision. ``cfg`` keys mirror the module's options.

    Returns the result dict of the module; raises FetchError with a message an operator can act on.
    """
    started = clock()
    store = cfg.get("store") or DEFAULT_STORE
    if not os.path.isabs(store):
        raise FetchError("input", f"store must be an absolute path, got {store!r}")
    name = check_component(cfg.get("name"), "name")
    revision = cfg.get("revision")
    if not isinstance(revision, str) or not revision:
        raise FetchError("input", "revision is required: pin the model version to fetch")
    if cfg.get("source") != "hub":
        check_component(revision, "revision")
    verify_existing = cfg.get("verify_existing", "stamp")
    if verify_existing not in VERIFY_MODES:
        raise FetchError("input", "verify_existing must be one of {}".format(", ".join(VERIFY_MODES)))
    retries = int(cfg.get("retries", 3))
    delay = float(cfg.get("retry_delay", 2.0))
    margin = int(cfg.get("free_space_margin", 1 << 30))
    if retries < 0 or delay < 0 or margin < 0:
        raise FetchError("input", "retries, retry_delay and free_space_margin must not be negative")
    uid, gid = cfg.get("uid"), cfg.get("gid")
    file_mode = cfg.get("mode", 0o640)
    dir_mode = cfg.get("directory_mode", 0o750)

    source = build_source(cfg, client=client, hub_adapter=hub_adapter)
    try:
        manifest = _with_retries(lambda: source.manifest(revision), retries, delay, sleep)
    except TransientError as exc:
        kind = "unreachable" if exc.kind == "unreachable" else "transfer"
        raise FetchError(kind, f"cannot read the manifest after {retries + 1} attempts: {exc}") from None
    revision = manifest["revision"]  # the hub may resolve an allowed branch to its commit
    check_component(revision, "revision")
    wanted = filter_entries(manifest["files"], cfg.get("allow_patterns"), cfg.get("ignore_patterns"))
    if not wanted:
        raise FetchError(
            "input",
            f"allow_patterns/ignore_patterns leave no file of {revision} to fetch",
        )
    manifest = dict(manifest, files=wanted)
    paths = store_paths(store, name, revision)
    status_path = cfg.get("status_file") or paths["status"]
    total = manifest_total(manifest)
    result = {
        "changed": False,
        "skipped": False,
        "name": name,
        "revision": revision,
        "published_path": paths["published"],
        "stamp_path": paths["stamp"],
        "staging_path": paths["staging"],
        "status_file": status_path,
        "bytes_total": total,
        "bytes_transferred": 0,
        "files_total": len(wanted),
        "files_fetched": [],
        "files_resumed": [],
        "files_range_ignored": [],
        "files_refetched": [],
        "files_reused": [],
        "retries_used": 0,
        "would_fetch": [],
        "bytes_to_transfer": 0,
    }

    # 1. Fast skip: the published copy carries a stamp equal to the wanted manifest.
    repair = False
    if os.path.isdir(paths["published"]):
        stamp = read_json_file(paths["stamp"])
        if stamp_matches(stamp, manifest):
            problems = check_published(paths["published"], manifest, verify_existing, chunk_size)
            if not problems:
                fill_sha256_from_stamp(stamp, manifest)
                result.update(
                    skipped=True,
                    manifest=public_manifest(manifest, name, source.describe()),
                    duration_s=round(clock() - started, 3),
                )
                return result
            result["published_problems"] = problems
        elif stamp_is_valid(stamp):
            # A valid stamp for other content: the source changed what this revision holds.
            # No need to hash the old copy to know it must be replaced.
            result["published_problems"] = ["stamp differs from the source's manifest"]
        else:
            problems = check_published(paths["published"], manifest, "full", chunk_size)
            if not problems:  # complete copy without a (readable) stamp: only the stamp is missing
                result["stamp_only"] = True
                result["changed"] = True
                result["manifest"] = public_manifest(manifest, name, source.describe())
                if not check_mode:
                    write_json_atomic(
                        paths["stamp"],
                        dict(result["manifest"], verified_at=time.time()),
                        mode=0o644,
                        uid=uid,
                        gid=gid,
                    )
                result["duration_s"] = round(clock() - started, 3)
                return result
            result["published_problems"] = problems
        repair = True

    # 2. Plan: what staging already holds.
    partial, verified, journal_files = _staging_state(paths, manifest)
    needed = bytes_still_needed(manifest["files"], partial, verified)
    result["bytes_to_transfer"] = needed
    result["would_fetch"] = [e["path"] for e in manifest["files"] if e["path"] not in verified]
    result["manifest"] = public_manifest(manifest, name, source.describe())
    result["changed"] = True
    result["replaced_damaged_copy"] = repair
    if check_mode:
        result["duration_s"] = round(clock() - started, 3)
        return result

    # 3. Disk space before any byte lands.
    check_disk_space(needed, free_bytes(paths["model_dir"]), margin, paths["model_dir"])

    _mkdir(store, 0o755, None, None)
    _mkdir(paths["model_dir"], dir_mode, uid, gid)
    lock_fd = _lock(paths["lock"])
    chown(paths["lock"], uid, gid)
    progress = Progress(status_path, total, len(wanted), clock=clock, uid=uid, gid=gid)
    try:
        _mkdir(paths["staging"], dir_mode, uid, gid)
        _clean_strays(paths["staging"], {e["path"] for e in manifest["files"]})
        journal = {"revision": revision, "files": dict(journal_files)}
        for e in manifest["files"]:
            dest = os.path.join(paths["staging"], e["path"])
            if e["path"] in verified:
                progress.advance(e["size"], transferred=False)
                progress.file_done()
                result["files_reused"].append(e["path"])
                continue
            parent = os.path.dirname(dest)
            rel_parent = os.path.relpath(parent, paths["staging"])
            if rel_parent != ".":
                cur = paths["staging"]
                for part in rel_parent.split(os.sep):
                    cur = os.path.join(cur, part)
                    _mkdir(cur, dir_mode, uid, gid)
            progress.phase("downloading", e["path"])
            state = {"credit": 0, "refetched": False}

            def one_attempt(e=e, dest=dest, state=state):
                try:
                    info = transfer_file(
                        source,
                        e,
                        dest,
                        progress,
                        chunk_size,
                        prior_credit=state["credit"],
                    )
                except ChecksumError as exc:
                    # Bad bytes are never kept: remove the file and fetch it again from the start.
                    size_now = os.path.getsize(dest) if os.path.exists(dest) else 0
                    if os.path.exists(dest):
                        os.unlink(dest)
                    progress.rewind(size_now)
                    state["credit"] = 0
                    state["refetched"] = True
                    raise TransientError(str(exc), kind="checksum") from None
                except TransientError:
                    state["credit"] = os.path.getsize(dest) if os.path.exists(dest) else 0
                    raise
                return info

            def on_retry(exc, attempt, e=e):
                result["retries_used"] += 1
                progress.state["message"] = f"retry {attempt} for {e['path']}: {exc}"
                progress.write(force=True)

            before = partial.get(e["path"], 0)
            try:
                info = _with_retries(one_attempt, retries, delay, sleep, on_retry)
            except TransientError as exc:
                kind = "checksum" if exc.kind == "checksum" else ("unreachable" if exc.kind == "unreachable" else "transfer")
                raise FetchError(kind, f"{e['path']}: giving up after {retries + 1} attempts: {exc}") from None
            if before and info["resumed_from"] and not state["refetched"]:
                result["files_resumed"].append(e["path"])
            if info["range_ignored"]:
                result["files_range_ignored"].append(e["path"])
            if state["refetched"]:
                result["files_refetched"].append(e["path"])
            result["files_fetched"].append(e["path"])
            os.chmod(dest, file_mode)
            chown(dest, uid, gid)
            st = os.stat(dest)
            journal["files"][e["path"]] = {
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "sha256": info["digests"]["sha256"],
                "git_sha1": info["digests"].get("git_sha1"),
            }
            e["sha256"] = info["digests"]["sha256"]
            write_json_atomic(paths["journal"], journal, uid=uid, gid=gid)
            progress.file_done()
        # Hub files verified by git oid now have their sha256 too.
        for e in manifest["files"]:
            if not e.get("sha256"):
                e["sha256"] = journal["files"][e["path"]]["sha256"]
        result["bytes_transferred"] = progress.state["bytes_transferred"]

        # 4. Publish atomically: rename staging into place, then write the stamp.
        progress.phase("publishing")
        _clean_strays(paths["staging"], {e["path"] for e in manifest["files"]})
        os.chmod(paths["staging"], dir_mode)
        chown(paths["staging"], uid, gid)
        pub_manifest = public_manifest(manifest, name, source.describe())
        if os.path.lexists(paths["published"]):
            if os.path.exists(paths["stamp"]):
                os.unlink(paths["stamp"])
            old = os.path.join(paths["model_dir"], f".replaced-{revision}-{os.getpid()}")
            os.rename(paths["published"], old)
            os.rename(paths["staging"], paths["published"])
            _rmtree(old)
        else:
            os.rename(paths["staging"], paths["published"])
        _fsync_dir(paths["model_dir"])
        write_json_atomic(
            paths["stamp"],
            dict(pub_manifest, verified_at=time.time()),
            mode=0o644,
            uid=uid,
            gid=gid,
        )
        if os.path.exists(paths["journal"]):
            os.unlink(paths["journal"])
        result["manifest"] = pub_manifest
        elapsed = max(clock() - started, 1e-6)
        result["duration_s"] = round(elapsed, 3)
        result["rate_bytes_per_s"] = round(result["bytes_transferred"] / elapsed, 1)
        progress.finish("done", "published {}".format(paths["published"]))
        return result
    except FetchError as exc:
        progress.finish("failed", exc.message)
        raise
    except OSError as exc:
        progress.finish("failed", str(exc))
        if exc.errno == errno.ENOSPC:
            raise FetchError(
                "disk_space",
                "the disk filled up while writing under {}: {}; staging is kept for resume".format(paths["model_dir"], exc),
            ) from None
        raise FetchError("io", "I/O error under {}: {}".format(paths["model_dir"], exc)) from None
    finally:
        os.close(lock_fd)


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

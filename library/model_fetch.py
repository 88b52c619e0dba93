#!/usr/bin/python
# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module model_fetch: thin wrapper over module_utils/model_fetch.py."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: model_fetch
short_description: Fetch a pinned model revision, verify every file's sha256 and publish it atomically
version_added: "1.0.0"
description:
  - Downloads one model revision into C(<store>/<name>/.staging-<revision>), verifies the size and
    sha256 of every file against a manifest, renames the staging directory to
    C(<store>/<name>/<revision>) and writes the manifest beside it as a verified stamp
    (C(<store>/<name>/<revision>.verified.json)).
  - "Sources: the Hugging Face hub or a mirror (O(source=hub), through C(huggingface_hub), sha256
    from the hub's LFS metadata, git blob id for small non-LFS files), an HTTP(S) artifact server with
    a manifest (O(source=http)), or a local or NFS directory (O(source=local)) with a manifest or a
    manifest computed by hashing it. The manifest format is documented in docs/model-fetch.md."
  - Partial files are resumed with HTTP Range requests; a server that ignores Range restarts that file.
    A corrupted or truncated file is removed and fetched again (O(retries)) and is never published.
  - When the published copy's stamp equals the source's manifest the module returns at once without
    re-hashing (O(verify_existing=stamp)), or re-hashes every file (O(verify_existing=full)).
  - Free disk space is checked before any download (bytes still needed plus O(free_space_margin)).
  - Progress (bytes done and total, current file, rate) is written as JSON to O(status_file) at most
    once a second, so an async task can poll it.
  - On any error the previously published revisions are untouched and the staging directory is kept
    so the next run resumes.
options:
  name:
    description: Model directory name under O(store) (one path component).
    type: str
    required: true
  revision:
    description:
      - The pinned revision; also the published directory name.
      - For O(source=hub) a 40-hex commit id (branch or tag names are refused unless O(allow_branch=true),
        and are then resolved to the commit, which names the directory).
      - For O(source=http) the manifest's C(revision) must equal it; for O(source=local) with a
        manifest file too.
    type: str
    required: true
  source:
    description: Where the files come from.
    type: str
    required: true
    choices: [hub, http, local]
  store:
    description: Root of the model store.
    type: path
    default: /var/lib/llm-onprem/models
  repo_id:
    description: Hub repository id (C(org/name)). Required with O(source=hub).
    type: str
  endpoint:
    description: Hub endpoint for a mirror; defaults to C(HF_ENDPOINT) or C(https://huggingface.co).
    type: str
  token:
    description: Hub access token (gated or private repositories). Sent only to the hub host.
    type: str
  allow_branch:
    description: Accept a branch or tag name as O(revision) for O(source=hub).
    type: bool
    default: false
  manifest_url:
    description: URL of the manifest JSON. Required with O(source=http).
    type: str
  manifest_sha256:
    description: Optional sha256 of the manifest document itself, pinning it over plain HTTP.
    type: str
  base_url:
    description: URL the manifest's paths are relative to; defaults to the manifest URL's directory.
    type: str
  path:
    description: Source directory. Required with O(source=local).
    type: path
  manifest_path:
    description:
      - Manifest file for O(source=local). Defaults to C(llm-onprem-manifest.json) in O(path) when it
        exists; otherwise a manifest is computed by hashing every file.
    type: path
  allow_patterns:
    description: Only files whose path matches one of these shell patterns (fnmatch) are fetched.
    type: list
    elements: str
  ignore_patterns:
    description: Files whose path matches one of these shell patterns are skipped.
    type: list
    elements: str
  verify_existing:
    description:
      - How to check an already published copy whose stamp matches the manifest.
      - V(stamp) checks that every file exists with its size; V(full) re-hashes every file and
        re-fetches damaged ones.
    type: str
    choices: [stamp, full]
    default: stamp
  retries:
    description: Extra attempts per file after a dropped connection, HTTP 5xx/429 or a checksum mismatch.
    type: int
    default: 3
  retry_delay:
    description: Seconds to wait before retry N (multiplied by N).
    type: float
    default: 2.0
  timeout:
    description: Socket timeout in seconds for each network operation.
    type: int
    default: 60
  validate_certs:
    description: Verify TLS certificates.
    type: bool
    default: true
  ca_path:
    description: CA bundle for a site-internal artifact server or mirror.
    type: path
  free_space_margin:
    description: Bytes that must stay free on the store's filesystem beyond what the download needs.
    type: int
    default: 1073741824
  status_file:
    description: Progress file (JSON); defaults to C(<store>/<name>/.fetch-<revision>.status.json).
    type: path
  owner:
    description: Owner of the model directory, files and stamp (the service account).
    type: str
  group:
    description: Group of the model directory, files and stamp.
    type: str
  mode:
    description: Mode of the model files.
    type: raw
    default: "0640"
  directory_mode:
    description: Mode of the model directories.
    type: raw
    default: "0750"
attributes:
  check_mode:
    support: full
    details: Reads the source's manifest and reports what would be fetched; writes nothing.
  diff_mode:
    support: partial
    details: Shows the published revision's path and file count before and after.
  platform:
    platforms: posix
notes:
  - Pure logic lives in module_utils/model_fetch.py (standard library only); C(huggingface_hub) is
    imported only for O(source=hub).
  - Run long fetches with C(async) and poll O(status_file); see roles/model_store.
author:
  - llm-onprem contributors
"""

EXAMPLES = r"""
- name: Fetch a pinned hub commit into the model store
  model_fetch:
    name: DeepSeek-R1-Distill-Qwen-7B
    source: hub
    repo_id: deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
    revision: 0123456789abcdef0123456789abcdef01234567
    token: "{{ vault_hf_token }}"
    ignore_patterns: ["figures/*", "*.md"]
    owner: llm-onprem
    group: llm-onprem

- name: Fetch from the site artifact server, pinning the manifest itself
  model_fetch:
    name: DeepSeek-R1-Distill-Qwen-32B-W4A16
    source: http
    manifest_url: https://artifacts.example.internal/models/r1-32b-w4a16/v3/manifest.json
    manifest_sha256: 4b1e0c6f8f2d4a5e9c3b7a1d2e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091
    revision: v3
    ca_path: /etc/ssl/certs/site-ca.pem

- name: Copy a model from an NFS share, computing its manifest
  model_fetch:
    name: DeepSeek-R1-Distill-Qwen-7B
    source: local
    path: /mnt/models/DeepSeek-R1-Distill-Qwen-7B
    revision: 2025-01-20

- name: Re-hash the published copy and repair it if damaged
  model_fetch:
    name: DeepSeek-R1-Distill-Qwen-7B
    source: local
    path: /mnt/models/DeepSeek-R1-Distill-Qwen-7B
    revision: 2025-01-20
    verify_existing: full
"""

RETURN = r"""
name:
  description: The model name.
  returned: always
  type: str
  sample: DeepSeek-R1-Distill-Qwen-7B
revision:
  description: The published revision (for the hub, the resolved commit id).
  returned: always
  type: str
  sample: 0123456789abcdef0123456789abcdef01234567
published_path:
  description: Directory holding the verified model (pass it to vLLM).
  returned: always
  type: str
  sample: /var/lib/llm-onprem/models/DeepSeek-R1-Distill-Qwen-7B/0123456789abcdef0123456789abcdef01234567
stamp_path:
  description: The verified stamp (the manifest the published copy matched).
  returned: always
  type: str
staging_path:
  description: The staging directory (kept after an error so the next run resumes).
  returned: always
  type: str
status_file:
  description: The progress file.
  returned: always
  type: str
manifest:
  description: The manifest of the published copy (manifest_version, revision, name, source, files with path, size, sha256).
  returned: always
  type: dict
skipped:
  description: True when the published copy was already verified and nothing was fetched.
  returned: always
  type: bool
stamp_only:
  description: True when the published copy was complete and only its stamp was (re)written.
  returned: when the stamp was missing or stale
  type: bool
bytes_total:
  description: Total size of the selected files.
  returned: always
  type: int
bytes_to_transfer:
  description: Bytes still to download when the run started (partial files in staging count as done).
  returned: always
  type: int
bytes_transferred:
  description: Bytes actually read from the source in this run (including re-sent bytes after a retry).
  returned: always
  type: int
files_total:
  description: Number of selected files.
  returned: always
  type: int
would_fetch:
  description: Files not yet verified in staging when the run started (what check mode would fetch).
  returned: always
  type: list
  elements: str
files_fetched:
  description: Files downloaded in this run.
  returned: always
  type: list
  elements: str
files_reused:
  description: Files already verified in staging by an earlier, interrupted run.
  returned: always
  type: list
  elements: str
files_resumed:
  description: Files continued from a partial download.
  returned: always
  type: list
  elements: str
files_range_ignored:
  description: Files restarted because the server ignored the Range header.
  returned: always
  type: list
  elements: str
files_refetched:
  description: Files fetched again after a checksum or size mismatch.
  returned: always
  type: list
  elements: str
retries_used:
  description: Retries spent in this run.
  returned: always
  type: int
replaced_damaged_copy:
  description: True when a damaged or unstamped published copy of the same revision was replaced.
  returned: when a fetch was needed
  type: bool
published_problems:
  description: What was wrong with an existing published copy of this revision.
  returned: when the published copy failed its check
  type: list
  elements: str
duration_s:
  description: Wall time of the module run in seconds.
  returned: always
  type: float
rate_bytes_per_s:
  description: Bytes transferred per second over the run.
  returned: after a fetch
  type: float
error_kind:
  description:
    - Error class on failure
    - One of input, manifest, revision, not_found, unauthorized, unreachable, transfer, checksum, disk_space, busy, dependency, io, source.
  returned: failure
  type: str
"""

import grp
import pwd

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.model_fetch import FetchError, fetch


def _mode(module, value, name):
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 8)
    except ValueError:
        module.fail_json(
            msg=f"{name} must be an octal mode such as '0640', got {value!r}",
            error_kind="input",
        )
        return None


def _ids(module):
    uid = gid = None
    owner, group = module.params["owner"], module.params["group"]
    try:
        if owner:
            uid = int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid
        if group:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError as exc:
        if module.check_mode:
            # Check mode writes nothing; the account may be created by an earlier task of the same run.
            return None, None
        module.fail_json(
            msg=f"owner/group {exc} does not exist on the host; create the service account first",
            error_kind="input",
        )
    return uid, gid


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "revision": {"type": "str", "required": True},
            "source": {
                "type": "str",
                "required": True,
                "choices": ["hub", "http", "local"],
            },
            "store": {"type": "path", "default": "/var/lib/llm-onprem/models"},
            "repo_id": {"type": "str"},
            "endpoint": {"type": "str"},
            "token": {"type": "str", "no_log": True},
            "allow_branch": {"type": "bool", "default": False},
            "manifest_url": {"type": "str"},
            "manifest_sha256": {"type": "str"},
            "base_url": {"type": "str"},
            "path": {"type": "path"},
            "manifest_path": {"type": "path"},
            "allow_patterns": {"type": "list", "elements": "str"},
            "ignore_patterns": {"type": "list", "elements": "str"},
            "verify_existing": {
                "type": "str",
                "default": "stamp",
                "choices": ["stamp", "full"],
            },
            "retries": {"type": "int", "default": 3},
            "retry_delay": {"type": "float", "default": 2.0},
            "timeout": {"type": "int", "default": 60},
            "validate_certs": {"type": "bool", "default": True},
            "ca_path": {"type": "path"},
            "free_space_margin": {"type": "int", "default": 1073741824},
            "status_file": {"type": "path"},
            "owner": {"type": "str"},
            "group": {"type": "str"},
            "mode": {"type": "raw", "default": "0640"},
            "directory_mode": {"type": "raw", "default": "0750"},
        },
        required_if=[
            ("source", "hub", ("repo_id",)),
            ("source", "http", ("manifest_url",)),
            ("source", "local", ("path",)),
        ],
        supports_check_mode=True,
    )
    cfg = dict(module.params)
    cfg["uid"], cfg["gid"] = _ids(module)
    cfg["mode"] = _mode(module, cfg["mode"], "mode")
    cfg["directory_mode"] = _mode(module, cfg["directory_mode"], "directory_mode")
    try:
        result = fetch(cfg, check_mode=module.check_mode)
    except FetchError as exc:
        module.fail_json(msg=exc.message, error_kind=exc.kind)
    if module._diff:
        files = len(result["manifest"]["files"])
        before = "absent" if result["changed"] else f"{result['published_path']} ({files} files, verified)"
        result["diff"] = {
            "before": f"{result['name']}@{result['revision']}: {before}\n",
            "after": f"{result['name']}@{result['revision']}: {result['published_path']} ({files} files, verified)\n",
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()

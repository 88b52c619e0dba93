#!/usr/bin/python
# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module nvidia_driver_key: install an apt repository key after checking its fingerprint."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nvidia_driver_key
short_description: Install an apt repository signing key, verified by checksum and OpenPGP fingerprint
description:
  - Downloads the key from O(url) on the managed host (or takes O(content), e.g. a file read
    on the control node), checks its checksum (optional) and the fingerprints of its primary
    keys (computed without gpg), and only then writes O(dest) (root, C(0644)) through a
    temporary file and an atomic rename, when the bytes differ.
  - A download error, a wrong checksum or an unexpected fingerprint fails before O(dest) is
    touched, so a working keyring stays as it was.
  - Armored keys must go to a C(.asc) file and binary keys to a C(.gpg) file (what apt's
    C(signed-by) expects).
version_added: "1.0.0"
author:
  - llm-onprem contributors
options:
  url:
    description: Where to download the key (http, https, file). Exactly one of O(url) and O(content).
    type: str
  content:
    description: The key itself (ASCII-armored). Exactly one of O(url) and O(content).
    type: str
  dest:
    description: Keyring path for apt's C(signed-by).
    type: path
    required: true
  fingerprints:
    description: Allowed primary key fingerprints (40 hex digits, spaces ignored); empty skips the check.
    type: list
    elements: str
    default: []
  checksum:
    description: C(ALGORITHM:HEX) of the key file (e.g. C(sha256:...)); empty skips the check.
    type: str
    default: ""
  timeout:
    description: Download timeout in seconds.
    type: int
    default: 30
extends_documentation_fragment: [url]
attributes:
  check_mode:
    support: full
    description: Downloads and verifies the key, reports whether O(dest) would change, writes nothing.
  diff_mode:
    support: full
    description: Shows the fingerprints before and after.
"""

EXAMPLES = r"""
- name: Install NVIDIA's CUDA repository key
  nvidia_driver_key:
    url: https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/3bf863cc.pub
    dest: /etc/apt/keyrings/llm-onprem-nvidia-cuda.asc
    fingerprints: [EB693B3035CD5710E231E123A4B469963BF863CC]
"""

RETURN = r"""
fingerprints:
  description: Fingerprints of the primary keys in the installed key.
  returned: success
  type: list
  elements: str
dest:
  description: The keyring path.
  returned: always
  type: str
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.nvidia_driver import check_key, key_fingerprints
from ansible.module_utils.urls import fetch_url, url_argument_spec


def download(module, url):
    resp, info = fetch_url(module, url, timeout=module.params["timeout"])
    if info.get("status") not in (200, None) or resp is None:
        module.fail_json(msg=(f"cannot download the repository key from {url}: {info.get('msg', 'no answer')} "
                              f"(status {info.get('status')}). Check the URL or the site mirror; "
                              f"{module.params['dest']} was not changed."), status=info.get("status"))
    return resp.read()


def main():
    spec = url_argument_spec()
    spec.update(
        url={"type": "str"},
        content={"type": "str"},
        dest={"type": "path", "required": True},
        fingerprints={"type": "list", "elements": "str", "default": []},
        checksum={"type": "str", "default": ""},
        timeout={"type": "int", "default": 30},
    )
    module = AnsibleModule(argument_spec=spec, required_one_of=[("url", "content")],
                           mutually_exclusive=[("url", "content")], supports_check_mode=True)
    p = module.params
    dest = p["dest"]
    source = p["url"] or "the given content"
    data = download(module, p["url"]) if p["url"] else p["content"].encode()
    ok, msg, found = check_key(data, p["fingerprints"], p["checksum"])
    if not ok:
        module.fail_json(msg=f"the repository key from {source} is refused: {msg}. {dest} was not changed.",
                         dest=dest)
    armored = b"-----BEGIN PGP" in data[:200]
    if armored and not dest.endswith(".asc") or not armored and not dest.endswith(".gpg"):
        module.fail_json(msg=(f"{dest}: apt reads ASCII-armored keys from .asc files and binary keys from .gpg "
                              f"files; this key is {'armored' if armored else 'binary'}"), dest=dest)
    try:
        with open(dest, "rb") as handle:
            old = handle.read()
    except FileNotFoundError:
        old = None
    try:
        old_prints = key_fingerprints(old) if old else []
    except ValueError:
        old_prints = ["(unreadable)"]
    st = os.stat(dest) if old is not None else None
    perms_ok = st is not None and st.st_uid == 0 and st.st_gid == 0 and (st.st_mode & 0o7777) == 0o644
    changed = old != data or not perms_ok
    result = {"changed": changed, "dest": dest, "fingerprints": found, "msg": msg}
    if module._diff:
        result["diff"] = {"before": "\n".join(old_prints) + ("\n" if old_prints else ""),
                          "after": "\n".join(found) + "\n", "before_header": dest, "after_header": dest}
    if changed and not module.check_mode:
        directory = os.path.dirname(dest)
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o755)
        if old != data:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".nvidia-key-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.chmod(tmp, 0o644)
                os.chown(tmp, 0, 0)
                module.atomic_move(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        os.chmod(dest, 0o644)
        os.chown(dest, 0, 0)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

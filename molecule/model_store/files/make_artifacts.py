#!/usr/bin/env python3
"""Generate the scenario's model revisions (a few MB of random weights) and their manifests.

Writes <root>/tiny/<rev>/ for each revision with config.json, tokenizer.json,
weights/w1.bin, weights/w2.bin and manifest.json (docs/model-fetch.md format),
plus <local>/ as a local-path source without a manifest. Idempotent: existing
trees are left as they are.
"""

import hashlib
import json
import os
import random
import sys


def write_tree(base, revision, seed, with_manifest=True):
    if os.path.exists(os.path.join(base, "config.json")):
        return
    rnd = random.Random(seed)  # noqa: S311 - test data, not secrets
    files = {
        "config.json": json.dumps({"model_type": "qwen2", "revision": revision}).encode() + b"\n",
        "tokenizer.json": rnd.randbytes(50_000),
        "weights/w1.bin": rnd.randbytes(3_000_000),
        "weights/w2.bin": rnd.randbytes(2_000_000),
    }
    for path, data in files.items():
        full = os.path.join(base, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
    if with_manifest:
        manifest = {
            "manifest_version": 1,
            "revision": revision,
            "files": [{"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for p, d in sorted(files.items())],
        }
        with open(os.path.join(base, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1)


def main():
    root, local = sys.argv[1], sys.argv[2]
    for i, rev in enumerate(["v1", "v2", "v3"]):
        write_tree(os.path.join(root, "tiny", rev), rev, seed=i + 1)
    write_tree(local, "r1", seed=42, with_manifest=False)


if __name__ == "__main__":
    main()

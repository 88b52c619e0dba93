"""Every module in library/ documents itself as ansible-doc reads it.

ansible-doc resolves documentation fragments (plugins/doc_fragments, through
ansible.cfg), so this is the check that the shared recipe options of
quantize_plan and quantize_publish really reach both modules' documentation,
and that each module's DOCUMENTATION is valid for ansible-doc.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import quantize

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DOC = str(Path(sys.executable).with_name("ansible-doc"))
MODULES = sorted(p.stem for p in (ROOT / "library").glob("*.py"))

# Options quantize_publish takes beyond the shared recipe (ARGUMENT_SPEC).
PUBLISH_ONLY = {"owner", "group", "mode", "directory_mode", "keep_old"}


@pytest.fixture(scope="module")
def docs():
    if not os.path.exists(ANSIBLE_DOC):
        pytest.skip("ansible-doc is not installed beside this python")
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    p = subprocess.run([ANSIBLE_DOC, "-t", "module", "-j", *MODULES], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_every_module_is_found(docs):
    assert sorted(docs) == MODULES


@pytest.mark.parametrize("name", MODULES)
def test_module_documentation(docs, name):
    doc = docs[name]["doc"]
    assert doc["module"] == name
    assert doc["short_description"]
    assert doc.get("options"), f"{name} documents no options"
    for option, spec in doc["options"].items():
        assert spec.get("description"), f"{name}: option {option} has no description"
    assert docs[name]["examples"].strip()
    assert docs[name]["return"], f"{name} documents no return values"


@pytest.mark.parametrize(("name", "extra"), [
    ("quantize_plan", set()),
    ("quantize_publish", PUBLISH_ONLY),
])
def test_quantize_modules_document_the_shared_recipe(docs, name, extra):
    options = docs[name]["doc"]["options"]
    assert set(options) == set(quantize.ARGUMENT_SPEC) | extra
    for option, spec in quantize.ARGUMENT_SPEC.items():
        assert options[option]["type"] == spec["type"], option
        assert options[option].get("default") == spec.get("default"), option
        assert options[option].get("choices") == spec.get("choices"), option

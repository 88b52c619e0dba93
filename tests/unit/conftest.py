"""Shared pytest setup for the unit tests of module_utils, library and bin.

* module_utils/ goes on sys.path so tests import ``gpu_facts`` and
  ``llm_sizing`` directly, and the same modules are registered as
  ``ansible.module_utils.<name>`` so the Ansible modules in library/ import
  them as they do on a managed host.
* ``gpu_hosts`` locates the real captured outputs in the sibling
  ``shared/`` checkout (``<repo>/../shared/fixtures/gpu-hosts``), the layout CI
  clones; ``local_gpu`` is tests/unit/fixtures/gpu (synthetic cases).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_UTILS = REPO_ROOT / "module_utils"
LIBRARY = REPO_ROOT / "library"
GPU_HOSTS = REPO_ROOT.parent / "shared" / "fixtures" / "gpu-hosts"
LOCAL_GPU = Path(__file__).resolve().parent / "fixtures" / "gpu"

if str(MODULE_UTILS) not in sys.path:
    sys.path.insert(0, str(MODULE_UTILS))

# The ansible command beside this python (the project venv's).
ANSIBLE = str(Path(sys.executable).with_name("ansible"))

_RC_RE = re.compile(r"^# rc=(-?\d+)\s*$", re.MULTILINE)


def register_module_utils():
    """Expose module_utils/*.py as ansible.module_utils.* (as ansible.cfg does)."""
    import ansible.module_utils as amu

    for name in ("gpu_facts", "llm_sizing", "llm_host_plan"):
        mod = importlib.import_module(name)
        sys.modules["ansible.module_utils." + name] = mod
        setattr(amu, name, mod)


def run_ansible_module(tmp_path, module, args, *extra):
    """Run a library/ module on localhost through ansible's own runner: (rc, task result).

    The project's ansible.cfg gives the module and module_utils paths; extra
    are more ansible arguments (``--check``, ``--diff``).
    """
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
        ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.json",
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "atmp"),
        ANSIBLE_REMOTE_TEMP=str(tmp_path / "rtmp"),
    )
    cmd = [ANSIBLE, "localhost", "-i", "localhost,", "-c", "local", "-m", module, "-a", json.dumps(args),
           "-e", f"ansible_python_interpreter={sys.executable}", *extra]
    p = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    return p.returncode, json.loads(p.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def read_capture(path):
    """Return (text, rc) of a captured output, with its trailing ``# rc=N`` line removed."""
    text = Path(path).read_text(encoding="utf-8")
    match = _RC_RE.search(text)
    if not match:
        return text, None
    return text[: match.start()], int(match.group(1))


@pytest.fixture(scope="session")
def gpu_hosts():
    if not GPU_HOSTS.is_dir():
        pytest.fail(f"shared fixtures not found at {GPU_HOSTS}: clone the shared repository beside this one")
    return GPU_HOSTS


@pytest.fixture(scope="session")
def h200(gpu_hosts):
    return gpu_hosts / "h200-ubuntu2404"


@pytest.fixture(scope="session")
def local_gpu():
    return LOCAL_GPU

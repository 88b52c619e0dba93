"""Unit tests for module_utils/nvidia_driver.py and the nvidia_driver_* modules.

Fixtures in tests/unit/fixtures/nvidia_driver/ are real captures: apt-cache
policy and dpkg-query from the molecule nvidia_driver container after the pin
(branch 535 over the newer 550 in the test mirror), the test mirror's throwaway
signing key with the fingerprint gpg printed, and Debian's archive keyring with
the fingerprints `gpg --show-keys --with-colons` printed. The loaded-driver
version comes from the shared H200 capture.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import subprocess
import sys
from pathlib import Path

import nvidia_driver as nd
import pytest
from conftest import LIBRARY, read_capture

FIX = Path(__file__).resolve().parent / "fixtures" / "nvidia_driver"
PIN_GLOBS = ["nvidia-*", "libnvidia-*", "libcuda1"]


def register():
    import ansible.module_utils as amu

    mod = importlib.import_module("nvidia_driver")
    sys.modules["ansible.module_utils.nvidia_driver"] = mod
    amu.nvidia_driver = mod


# ---------------------------------------------------------------------------
# versions and branches
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(("version", "upstream", "branch"), [
    ("580.159.04-1", "580.159.04", "580"),
    ("535.261.03-1", "535.261.03", "535"),
    ("535.216.03-2~bpo12+1", "535.216.03", "535"),
    ("1:550.163.01-2", "550.163.01", "550"),
    ("580.159.04", "580.159.04", "580"),
    ("20220217+3~deb12u1", "20220217+3~deb12u1", None),
    ("", None, None),
    (None, None, None),
])
def test_upstream_and_branch(version, upstream, branch):
    assert nd.upstream_version(version) == upstream
    assert nd.branch_of(version) == branch


@pytest.mark.parametrize(("version", "branch", "exact", "wanted"), [
    ("580.159.04", "580", "", True),
    ("580.159.04-1", "580", "580.159.04", True),
    ("580.95.05-1", "580", "580.159.04", False),
    ("575.51.03", "580", "", False),
    (None, "580", "", False),
])
def test_version_wanted(version, branch, exact, wanted):
    assert nd.version_wanted(version, branch, exact) is wanted


@pytest.mark.parametrize(("branch", "exact", "pattern"), [
    ("580", "", "580.*"),
    ("580", "580.159.04", "580.159.04-*"),
])
def test_pin_pattern(branch, exact, pattern):
    assert nd.pin_pattern(branch, exact) == pattern


@pytest.mark.parametrize(("branch", "cuda", "ok", "words"), [
    ("580", "13.0", True, "supports CUDA 13.0"),
    ("590", "13.0", True, "supports"),
    ("575", "13.0", False, "needs driver >= 580.65.06"),
    ("535", "13.0", False, "branch 580 or newer"),
    ("535", "12.2", True, "supports"),
    ("535", "12.4", False, "550.54.14"),
    ("580", "", True, "no CUDA requirement"),
    ("580", "14.2", False, "not in the role's driver table"),
    ("580", "13", False, "not in the role's driver table"),
])
def test_branch_supports_cuda(branch, cuda, ok, words):
    result, msg = nd.branch_supports_cuda(branch, cuda)
    assert result is ok and words in msg


def test_parse_proc_version_h200(h200):
    text, rc = read_capture(h200 / "proc-driver-version.txt")
    assert rc == 0
    assert nd.parse_proc_version(text) == "580.159.04"


@pytest.mark.parametrize(("text", "version"), [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.261.03  Wed Jun 4 2025\n", "535.261.03"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build\n", "580.159.04"),
    ("", None),
    ("garbage", None),
])
def test_parse_proc_version_table(text, version):
    assert nd.parse_proc_version(text) == version


# ---------------------------------------------------------------------------
# dpkg-query and apt-cache policy
# ---------------------------------------------------------------------------

def test_parse_dpkg_query_capture():
    text, rc = read_capture(FIX / "dpkg-query.txt")
    assert rc == 1  # one package was never installed
    assert nd.parse_dpkg_query(text) == {
        "libnvidia-ml1": "535.261.03-1",
        "nvidia-modprobe": "535.161.07-1~deb12u1",
        "nvidia-smi": "535.261.03-1",
    }


@pytest.mark.parametrize(("line", "expected"), [
    ("nvidia-smi\t535.261.03-1\tii \n", {"nvidia-smi": "535.261.03-1"}),
    ("nvidia-smi\t535.261.03-1\trc \n", {}),  # removed, config files left
    ("nvidia-smi\t535.261.03-1\tiF \n", {}),  # half configured
    ("nvidia-smi\t535.261.03-1\thi \n", {"nvidia-smi": "535.261.03-1"}),  # on hold
    ("libnvidia-ml1:amd64\t535.261.03-1\tii \n", {"libnvidia-ml1": "535.261.03-1"}),
    ("nvidia-smi\t\tun \n", {}),
])
def test_parse_dpkg_query_states(line, expected):
    assert nd.parse_dpkg_query(line) == expected


@pytest.fixture(scope="module")
def policy():
    text, rc = read_capture(FIX / "apt-policy-pinned.txt")
    assert rc == 0
    return nd.parse_apt_policy(text)


def test_parse_apt_policy_capture(policy):
    assert set(policy) == {"nvidia-smi", "libnvidia-ml1", "nvidia-modprobe", "nvidia-installer-cleanup"}
    smi = policy["nvidia-smi"]
    assert smi["installed"] == "535.261.03-1" and smi["candidate"] == "535.261.03-1"
    assert [(v["version"], v["priority"]) for v in smi["versions"]] == [("550.163.01-2", -1), ("535.261.03-1", 1001)]
    assert smi["versions"][1]["sources"] == ["http://10.88.0.63:8080/  Packages", "/var/lib/dpkg/status"]
    assert policy["nvidia-installer-cleanup"]["versions"][0]["priority"] == 500


def test_parse_apt_policy_none():
    text = "cuda-toolkit-13-0:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n"
    assert nd.parse_apt_policy(text) == {"cuda-toolkit-13-0": {"installed": None, "candidate": None, "versions": []}}


def test_build_wanted():
    wanted = nd.build_wanted(["nvidia-smi", "firmware-misc-nonfree", "nvidia-smi"], PIN_GLOBS, "535.*",
                             "driver branch 535", [{"name": "libnccl2", "version": "2.29.7-1+cuda13.0"}], ["dkms"])
    assert wanted == [
        {"name": "nvidia-smi", "pattern": "535.*", "label": "driver branch 535"},
        {"name": "firmware-misc-nonfree", "pattern": "", "label": ""},
        {"name": "libnccl2", "pattern": "2.29.7-1+cuda13.0", "label": "2.29.7-1+cuda13.0"},
        {"name": "dkms", "pattern": "", "label": ""},
    ]


@pytest.mark.parametrize(("wanted", "chosen", "problem"), [
    ([{"name": "nvidia-smi", "pattern": "535.*"}], {"nvidia-smi": "535.261.03-1"}, None),
    ([{"name": "nvidia-modprobe", "pattern": "535.161.07-1~deb12u1"}], {"nvidia-modprobe": "535.161.07-1~deb12u1"}, None),
    ([{"name": "nvidia-installer-cleanup", "pattern": ""}], {"nvidia-installer-cleanup": "20220217+3~deb12u1"}, None),
    ([{"name": "nvidia-smi", "pattern": "550.*", "label": "driver branch 550"}], {},
     "nvidia-smi: apt would take 535.261.03-1 although 550.163.01-2 matches driver branch 550 "
     "(check the pin file and other preferences)"),
    ([{"name": "nvidia-smi", "pattern": "580.*", "label": "driver branch 580"}], {},
     "nvidia-smi: no version matching driver branch 580 in the configured sources (apt offers: 550.163.01-2, 535.261.03-1)"),
    ([{"name": "cuda-toolkit-13-0", "pattern": "13.0.2-1"}], {}, "cuda-toolkit-13-0: no configured apt source has this package"),
])
def test_check_candidates(policy, wanted, chosen, problem):
    got, problems = nd.check_candidates(policy, wanted)
    assert got == chosen
    assert problems == ([problem] if problem else [])


@pytest.mark.parametrize(("wanted", "problem"), [
    ([{"name": "nvidia-smi", "pattern": "550.*"}], None),  # offered, though the pin blocks it
    ([{"name": "nvidia-smi", "pattern": "535.999.99-*", "label": "driver 535.999.99"}],
     "nvidia-smi: no version matching driver 535.999.99 in the configured sources (apt offers: 550.163.01-2, 535.261.03-1)"),
    ([{"name": "nvidia-kernel-open-dkms", "pattern": "535.*"}], "nvidia-kernel-open-dkms: no configured apt source has this package"),
])
def test_check_offered(policy, wanted, problem):
    assert nd.check_offered(policy, wanted) == ([problem] if problem else [])


def test_check_offered_dpkg_status_only():
    # A removed source: 550 is installed but no source offers anything else.
    policy = {"nvidia-smi": {"installed": "550.1-1", "candidate": "550.1-1", "versions": [
        {"version": "550.1-1", "priority": 100, "sources": ["/var/lib/dpkg/status"]}]}}
    assert nd.check_offered(policy, [{"name": "nvidia-smi", "pattern": "535.*", "label": "driver branch 535"}]) == [
        "nvidia-smi: no version matching driver branch 535 in the configured sources (apt offers: 550.1-1)"]
    policy["nvidia-smi"]["installed"] = None
    assert nd.check_offered(policy, [{"name": "nvidia-smi", "pattern": ""}]) == [
        "nvidia-smi: no configured apt source offers a version"]


# ---------------------------------------------------------------------------
# decisions
# ---------------------------------------------------------------------------

OK_580 = {"state": "ok", "driver_version": "580.159.04", "pci_gpus": [{"address": "0000:00:06.0"}], "has_gpu": True}
OK_575 = {"state": "ok", "driver_version": "575.51.03", "pci_gpus": [{"address": "0000:00:06.0"}], "has_gpu": True}
NO_SMI_GPU = {"state": "no_nvidia_smi", "driver_version": None, "pci_gpus": [{"address": "0000:00:06.0"}]}
NO_SMI_CPU = {"state": "no_nvidia_smi", "driver_version": None, "pci_gpus": []}
MISMATCH = {"state": "driver_mismatch", "driver_version": None, "pci_gpus": [{"address": "0000:00:06.0"}]}
NOT_LOADED = {"state": "driver_not_loaded", "driver_version": None, "pci_gpus": [{"address": "0000:00:06.0"}]}


@pytest.mark.parametrize(("gpu", "install", "exact", "container", "action", "words"), [
    (OK_580, "auto", "", False, "keep", "left alone"),
    (OK_580, "auto", "580.159.04", False, "keep", "580.159.04"),
    (OK_580, "auto", "580.95.05", False, "install", "is loaded but 580.95.05 (branch 580) is pinned"),
    (OK_575, "auto", "", False, "install", "575.51.03 is loaded but branch 580 is pinned"),
    (NO_SMI_GPU, "auto", "", False, "install", "1 NVIDIA GPU(s) on the PCI bus"),
    (NOT_LOADED, "auto", "", False, "install", "driver_not_loaded"),
    (MISMATCH, "auto", "", False, "install", "reboot is due"),
    (NO_SMI_CPU, "auto", "", False, "skip", "no NVIDIA GPU on this host"),
    (NO_SMI_CPU, "auto", "", True, "skip", "(a container)"),
    (NO_SMI_CPU, "always", "", True, "install", "without a visible GPU"),
    (OK_580, "never", "", False, "skip", "never"),
    (NO_SMI_GPU, "never", "", False, "skip", "never"),
])
def test_decide(gpu, install, exact, container, action, words):
    got, msg = nd.decide(gpu, install, "580", exact, container)
    assert got == action and words in msg


@pytest.mark.parametrize(("present", "container", "loaded", "installed", "needed", "words"), [
    (True, False, None, "580.159.04-1", True, "no NVIDIA kernel module is loaded"),
    (True, False, "575.51.03", "580.159.04-1", True, "loaded NVIDIA kernel module is 575.51.03 but 580.159.04"),
    (True, False, "580.159.04", "580.159.04-1", False, "is loaded"),
    (True, True, None, "580.159.04-1", False, "container"),
    (False, False, None, "580.159.04-1", False, "no NVIDIA device"),
    (True, False, None, None, False, "no NVIDIA driver package"),
])
def test_reboot_needed(present, container, loaded, installed, needed, words):
    got, msg = nd.reboot_needed(present, container, loaded, installed)
    assert got is needed and words in msg


# ---------------------------------------------------------------------------
# keys
# ---------------------------------------------------------------------------

def test_fingerprint_armored_key():
    data = (FIX / "test-mirror-key.asc").read_bytes()
    assert nd.key_fingerprints(data) == [(FIX / "test-mirror-key.fingerprint").read_text().strip()]


def test_fingerprints_binary_keyring():
    data = (FIX / "debian-archive-keyring.gpg").read_bytes()
    want = (FIX / "debian-archive-keyring.fingerprints").read_text().split()
    assert nd.key_fingerprints(data) == want


def test_check_key_ok_and_refusals():
    data = (FIX / "test-mirror-key.asc").read_bytes()
    fpr = (FIX / "test-mirror-key.fingerprint").read_text().strip()
    spaced = " ".join(fpr[i:i + 4] for i in range(0, 40, 4)).lower()
    assert nd.check_key(data, [spaced])[0]
    assert nd.check_key(data, [], "sha256:" + hashlib.sha256(data).hexdigest())[0]
    ok, msg, _ = nd.check_key(data, ["EB693B3035CD5710E231E123A4B469963BF863CC"])
    assert not ok and f"the key has fingerprint(s) {fpr}, not one of EB693B3035CD5710E231E123A4B469963BF863CC" == msg
    ok, msg, _ = nd.check_key(data, [fpr], "sha256:" + "0" * 64)
    assert not ok and msg.startswith("the key's sha256 is ")
    ok, msg, _ = nd.check_key(data, [fpr], "md9:abc")
    assert not ok and "ALGORITHM:HEX" in msg
    ok, msg, _ = nd.check_key(b"<html>404 Not Found</html>", [fpr])
    assert not ok and "not an OpenPGP packet" in msg
    ok, msg, _ = nd.check_key(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!\n-----END PGP PUBLIC KEY BLOCK-----\n", [fpr])
    assert not ok


# ---------------------------------------------------------------------------
# the modules, run as Ansible runs them (JSON arguments on stdin)
# ---------------------------------------------------------------------------

def run_module(name, args, tmp_path):
    register()
    argsfile = tmp_path / "args.json"
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    code = (
        "import sys, importlib, runpy\n"
        f"sys.path.insert(0, {str(Path(nd.__file__).parent)!r})\n"
        "import ansible.module_utils as amu\n"
        "mod = importlib.import_module('nvidia_driver')\n"
        "sys.modules['ansible.module_utils.nvidia_driver'] = mod\n"
        "amu.nvidia_driver = mod\n"
        f"sys.argv = ['m', {str(argsfile)!r}]\n"
        f"runpy.run_path({str(LIBRARY / (name + '.py'))!r}, run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    return json.loads(proc.stdout)


def test_state_module_skips_cpu_host(tmp_path):
    result = run_module("nvidia_driver_state", {"gpu": NO_SMI_CPU, "branch": "580", "packages": ["nvidia-smi"],
                                                "proc_version": str(tmp_path / "absent"), "required_cuda": "13.0"},
                        tmp_path)
    assert result["action"] == "skip" and not result["reboot_needed"] and result["installed"] == {}


def test_state_module_refuses_old_branch(tmp_path):
    result = run_module("nvidia_driver_state", {"gpu": NO_SMI_GPU, "branch": "535", "required_cuda": "13.0"},
                        tmp_path)
    assert result["failed"] and "driver branch 535 cannot run CUDA 13.0" in result["msg"]


def test_state_module_reads_proc_version(tmp_path, h200):
    result = run_module("nvidia_driver_state", {"gpu": OK_580, "branch": "580",
                                                "proc_version": str(h200 / "proc-driver-version.txt")}, tmp_path)
    assert result["action"] == "keep" and result["loaded_version"] == "580.159.04"


def test_key_module_check_and_write(tmp_path):
    key = (FIX / "test-mirror-key.asc").read_text()
    fpr = (FIX / "test-mirror-key.fingerprint").read_text().strip()
    dest = tmp_path / "keyrings" / "test.asc"
    bad = run_module("nvidia_driver_key", {"content": key, "dest": str(dest), "fingerprints": ["0" * 40]}, tmp_path)
    assert bad["failed"] and "was not changed" in bad["msg"] and not dest.exists()
    wrong_suffix = run_module("nvidia_driver_key", {"content": key, "dest": str(tmp_path / "k.gpg"),
                                                    "fingerprints": [fpr]}, tmp_path)
    assert wrong_suffix["failed"] and ".asc" in wrong_suffix["msg"]
    if hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() != 0:
        pytest.skip("writing a root-owned keyring needs root")
    good = run_module("nvidia_driver_key", {"content": key, "dest": str(dest), "fingerprints": [fpr]}, tmp_path)
    assert good["changed"] and good["fingerprints"] == [fpr] and dest.read_text() == key
    assert oct(dest.stat().st_mode & 0o777) == "0o644"
    again = run_module("nvidia_driver_key", {"content": key, "dest": str(dest), "fingerprints": [fpr]}, tmp_path)
    assert not again["changed"]


def test_key_module_unreachable_url(tmp_path):
    dest = tmp_path / "k.asc"
    result = run_module("nvidia_driver_key", {"url": "http://127.0.0.1:9/key.asc", "dest": str(dest), "timeout": 5},
                        tmp_path)
    assert result["failed"] and "cannot download the repository key from http://127.0.0.1:9/key.asc" in result["msg"]
    assert not dest.exists()

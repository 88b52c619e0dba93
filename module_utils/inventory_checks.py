# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Inventory checks that need no host: ranges, formats, names, enumerations, combinations.

Plain functions without Ansible imports, unit-tested in tests/unit/test_inventory_checks.py and,
through site.yml's first play, in tests/unit/test_inventory_mistakes.py. The filter plugin
plugins/filter/llm_onprem.py (``llm_onprem_inventory_errors``) runs them on the control node
from each role's tasks/validate_inventory.yml.

``inventory_errors(values, role, inventory_dir, group)`` returns one message per mistake. Each
message names the variable, its value (secrets only by their length), what is allowed and the
inventory file to edit. ``values`` holds the role's variables (and the other roles' variables the
combinations need); a variable that is not in ``values`` is not checked.

Each role has a table (``FIELDS``: variable -> rule) for single values and a function for the
entries of its lists and the combinations. A rule returns None for a good value, else the text
that follows "must be".
"""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.parse

try:  # as a module_utils of a module on a host
    from ansible.module_utils.gateway import MODEL_RE, parse_networks, upstream_model
    from ansible.module_utils.llm_host_plan import default_gpu_count, instance_share
    from ansible.module_utils.llm_sizing import FOUR_BIT, KEEPABLE_MODULES, WEIGHT_FORMATS
    from ansible.module_utils.nvidia_driver import branch_supports_cuda
except ImportError:  # on the control node (filter plugin) and in unit tests: module_utils/ is on sys.path
    from gateway import MODEL_RE, parse_networks, upstream_model
    from llm_host_plan import default_gpu_count, instance_share
    from llm_sizing import FOUR_BIT, KEEPABLE_MODULES, WEIGHT_FORMATS
    from nvidia_driver import branch_supports_cuda

# vLLM 0.32.0's reasoning parsers (vllm/reasoning/__init__.py of the pinned release); "" turns it off.
VLLM_REASONING_PARSERS = (
    "cohere_command3", "cohere_command4", "deepseek_r1", "deepseek_v3", "deepseek_v4", "deepseek_v41",
    "ernie45", "gemma4", "glm45", "glm47", "granite", "granite_thinking_parser", "hf", "holo2",
    "hunyuan_a13b", "hy_v3", "hy_v4", "inkling", "k2_horizon", "kimi_k2", "kimi_k3", "ling3", "mimo",
    "minicpmv", "minimax_m2", "minimax_m2_append_think", "minimax_m3", "mistral", "muse_glimmer",
    "nemotron_v3", "olmo3", "openai_gptoss", "plamo3", "poolside_v1", "qwen3", "seed_oss", "step3", "step3p5",
)
# Weight group sizes vLLM's 4-bit kernels take (the same list as module_utils/quantize.py's recipe check).
FOUR_BIT_GROUP_SIZES = (32, 64, 128, 256)
# vLLM arguments that llm_sizing's plan (both engines) or llm_service set; extra_args cannot repeat them.
RESERVED_VLLM_ARGS = (
    "--model", "--served-model-name", "--host", "--port", "--api-key", "--reasoning-parser",
    "--tensor-parallel-size", "--pipeline-parallel-size", "--max-model-len", "--max-num-seqs",
    "--max-num-batched-tokens", "--gpu-memory-utilization", "--kv-cache-dtype", "--enforce-eager",
    "--dtype", "--kv-cache-memory-bytes",
)
# Directories a model store must never be (it prunes what it does not know).
SYSTEM_DIRS = ("/", "/var", "/var/lib", "/usr", "/etc", "/home", "/tmp", "/opt", "/srv", "/root")  # noqa: S108 - refused, not used

COMPONENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
ACCOUNT_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
MODE_RE = re.compile(r"^0?[0-7]{3}$")
VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+)*([._+!-]?[A-Za-z0-9]+)*$")
PIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?==[0-9][A-Za-z0-9.+!_-]*$")
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]+$")
PYPI_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
GLOB_RE = re.compile(r"^[a-z0-9*][a-z0-9.+*-]*$")
# NCCL_SOCKET_IFNAME: interface names (at most 15 characters) or prefixes, comma-separated,
# optionally led by ^ (exclude) or = (exact); nothing a shell or an EnvironmentFile would read.
IFNAME_LIST_RE = re.compile(r"^[=^]?[A-Za-z0-9_.:@-]{1,15}(,[A-Za-z0-9_.:@-]{1,15})*$")
DNS_RE = re.compile(r"^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
HTTP_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]*$")
NGINX_SIZE_RE = re.compile(r"^[0-9]+[kKmMgG]?$")
KEY_RE = re.compile(r"^[A-Za-z0-9._+/=-]+$")
ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
NCCL_NAME_RE = re.compile(r"^NCCL_[A-Z0-9_]+$")
SYSCTL_NAME_RE = re.compile(r"^[a-z0-9_]+(\.[a-zA-Z0-9_-]+)+$")
SAFE_VALUE_RE = re.compile(r"^[^\"'\\$`\n\r]*$")

# Where each component's variables live in a site inventory (inventories/<site>/group_vars/<group>/<file>).
COMPONENT_FILES = {
    "preflight": "preflight.yml", "host_tuning": "host_tuning.yml", "nvidia_driver": "nvidia_driver.yml",
    "llm_runtime": "llm_runtime.yml", "model_store": "model_store.yml", "quantize": "quantize.yml",
    "llm_service": "llm_service.yml", "gateway": "gateway.yml",
}

# Secrets are shown by their length only.
SECRETS = ("gateway_api_keys", "gateway_upstream_api_key", "llm_service_api_key", "model_store_hub_token")


def show(name, value):
    """The value as a message shows it: JSON, or only the length of a secret."""
    if name in SECRETS:
        if isinstance(value, (list, tuple)):
            return f"a list of {len(value)} secret(s)"
        return f"a secret of {len(str(value))} characters"
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


# ---------------------------------------------------------------------------
# Rules: each returns None (good) or what the value must be.
# ---------------------------------------------------------------------------

def _as_int(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.match(r"^-?[0-9]+$", value.strip()):
        return int(value)
    return None


def _as_float(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def integer(lo, hi=None):
    """A whole number in [lo, hi] (hi None: no upper bound)."""
    want = f"an integer from {lo} to {hi}" if hi is not None else f"an integer of at least {lo}"

    def rule(value):
        num = _as_int(value)
        if num is None or num < lo or (hi is not None and num > hi):
            return want
        return None
    return rule


def number(lo, hi, lo_open=False, hi_open=False):
    """A number between lo and hi; an open end excludes the bound itself."""
    want = "a number {}{} and {}{}".format(
        "greater than " if lo_open else "from ", lo, "less than " if hi_open else "at most ", hi)

    def rule(value):
        num = _as_float(value)
        if num is None or num < lo or num > hi or (lo_open and num == lo) or (hi_open and num == hi):
            return want
        return None
    return rule


def one_of(choices, empty_ok=False):
    allowed = list(choices) + ([""] if empty_ok else [])
    want = "one of " + ", ".join(json.dumps(c) for c in allowed)

    def rule(value):
        return None if value in allowed else want
    return rule


def matches(pattern, want, empty_ok=False):
    regex = re.compile(pattern) if isinstance(pattern, str) else pattern

    def rule(value):
        if empty_ok and value == "":
            return None
        if not isinstance(value, str) or not regex.match(value):
            return want + (" (or empty)" if empty_ok else "")
        return None
    return rule


def abs_path(empty_ok=False):
    """An absolute path without '..', whitespace or control characters."""
    def rule(value):
        if empty_ok and value == "":
            return None
        if (not isinstance(value, str) or not value.startswith("/") or ".." in value.split("/")
                or re.search(r"[\s\x00-\x1f\"'\\$`;|&<>*?]", value)):
            return "an absolute path without '..', spaces or shell characters" + (" (or empty)" if empty_ok else "")
        return None
    return rule


def url(schemes=("http", "https", "file"), empty_ok=False):
    """A URL with one of the schemes and (except file://) a host."""
    want = "a URL starting with " + " or ".join(f"{s}://" for s in schemes) + " and naming a host"

    def rule(value):
        if empty_ok and value == "":
            return None
        if not isinstance(value, str) or re.search(r"\s", value):
            return want + (" (or empty)" if empty_ok else "")
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in schemes or (parts.scheme != "file" and not parts.hostname) \
                or (parts.scheme == "file" and not parts.path.startswith("/")):
            return want + (" (or empty)" if empty_ok else "")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            return want + " (with a port from 1 to 65535)"
        return None
    return rule


def each(rule, empty_ok=True):
    """A list whose every entry passes rule."""
    def check(value):
        if not isinstance(value, (list, tuple)):
            return "a list"
        if not empty_ok and not value:
            return "a list with at least one entry"
        bad = [item for item in value if rule(item) is not None]
        if bad:
            return f"a list of which each entry is {rule(bad[0])}; not {json.dumps(bad[0])}"
        return None
    return check


def ip_address(version=None):
    def rule(value):
        try:
            addr = ipaddress.ip_address(str(value))
        except ValueError:
            addr = None
        if addr is None or (version and addr.version != version):
            return f"an IPv{version} address" if version else "an IP address"
        return None
    return rule


def networks():
    def rule(value):
        _v4, _v6, errors = parse_networks(value)
        return "a list of networks in CIDR notation: " + "; ".join(errors) if errors else None
    return rule


def hostname_or_ip(value):
    """True for an IP address or a DNS name."""
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return bool(DNS_RE.match(value)) and len(value) <= 253


NAME = matches(COMPONENT_RE, "one directory name: letters, digits, '.', '_', '+', '-' (no '/', not '..')")
ACCOUNT = matches(ACCOUNT_RE, "an account name (lower-case letters, digits, '_', '-', at most 32)")
MODE = matches(MODE_RE, "an octal mode as a quoted string such as \"0640\"")
VERSION = matches(VERSION_RE, "a plain version such as 0.32.0 (no operators or spaces)")
PORT = integer(1, 65535)


# ---------------------------------------------------------------------------
# Tables and combinations, per role
# ---------------------------------------------------------------------------

FIELDS = {
    "preflight": {
        "preflight_report_dir": matches(r"^[^\x00-\x1f]*$", "a directory path on the control node, or empty"),
    },
    "host_tuning": {
        # vm.nr_hugepages (unsigned long; the RAM share is checked on the host).
        "host_tuning_hugepages_count": integer(0, 2 ** 31 - 1),
        "host_tuning_hugepages_max_ram_share": number(0, 1, lo_open=True, hi_open=True),
        "host_tuning_swap_file": abs_path(),
        "host_tuning_swap_size_factor": number(0, 4, lo_open=True),
        "host_tuning_swap_max_size_mb": integer(16, 16 * 1024 * 1024),
        "host_tuning_swap_min_free_share": number(0, 1, hi_open=True),
        # vm.swappiness: the kernel takes 0-200 (Linux 5.8 and newer).
        "host_tuning_swappiness": integer(0, 200),
        "host_tuning_nccl_env_file": abs_path(),
        "host_tuning_nccl_socket_ifname": matches(
            IFNAME_LIST_RE, "interface names or prefixes such as eth0 or ens,eno (at most 15 characters each, "
            "optionally led by ^ or =; no spaces or shell characters)", empty_ok=True),
        "host_tuning_limits_user": ACCOUNT,
        "host_tuning_limits_memlock": matches(r"^(unlimited|[0-9]+)$", "\"unlimited\" or a number of KiB"),
        # nofile: at most the kernel's default fs.nr_open (1048576).
        "host_tuning_limits_nofile": integer(1024, 1048576),
    },
    "nvidia_driver": {
        "nvidia_driver_branch": matches(r"^[0-9]{3,4}$", "a driver branch number such as \"580\" (a quoted string)"),
        "nvidia_driver_required_cuda": matches(r"^[0-9]+\.[0-9]+$", "a CUDA major.minor such as \"13.0\"",
                                               empty_ok=True),
        "nvidia_driver_reboot_timeout": integer(60, 3600),
        "nvidia_driver_repo_url": url(empty_ok=True),
        "nvidia_driver_repo_key_url": url(empty_ok=True),
        "nvidia_driver_repo_key_checksum": matches(r"^(sha256:[0-9a-fA-F]{64}|sha512:[0-9a-fA-F]{128})$",
                                                   "sha256:<64 hex digits> or sha512:<128 hex digits>", empty_ok=True),
        "nvidia_driver_repo_key_fingerprints": each(
            lambda v: None if re.match(r"^[0-9A-Fa-f]{40}$", re.sub(r"\s", "", str(v))) else "40 hexadecimal digits"),
        "nvidia_driver_debian_mirror": url(),
        "nvidia_driver_debian_suites": each(matches(r"^[a-z0-9][a-z0-9-]*$", "a suite name such as bookworm")),
        "nvidia_driver_debian_components": each(matches(r"^[a-z0-9][a-z0-9-]*$", "an archive area such as non-free"),
                                                empty_ok=False),
        "nvidia_driver_packages": each(matches(PACKAGE_RE, "a Debian package name")),
        "nvidia_driver_kernel_packages": each(matches(PACKAGE_RE, "a Debian package name")),
        "nvidia_driver_pin_packages": each(matches(GLOB_RE, "a package name or glob such as nvidia-*"), empty_ok=False),
        "nvidia_driver_cuda_home": abs_path(empty_ok=True),
    },
    "llm_runtime": {
        "llm_runtime_base_dir": abs_path(),
        "llm_runtime_wheelhouse_remote_dir": abs_path(),
        "llm_runtime_conda_prefix": abs_path(),
        "llm_runtime_python": abs_path(),
        "llm_runtime_keep_old": integer(0, 20),
        "llm_runtime_pip_timeout": integer(1, 3600),
        "llm_runtime_vllm_version": VERSION,
        "llm_runtime_torch_version": VERSION,
        "llm_runtime_llmcompressor_version": VERSION,
        "llm_runtime_gpu_cuda_version": matches(r"^[0-9]+(\.[0-9]+)*$", "a CUDA version prefix such as \"13.0\"",
                                                empty_ok=True),
        "llm_runtime_conda_python_version": matches(r"^3\.[0-9]+(\.[0-9]+)?$", "a Python version such as \"3.11\""),
        "llm_runtime_index_url": url(empty_ok=True),
        "llm_runtime_extra_index_urls": each(url()),
        "llm_runtime_serve_extra_packages": each(matches(PIN_RE, "a pin name==version")),
        "llm_runtime_quant_extra_packages": each(matches(PIN_RE, "a pin name==version")),
        "llm_runtime_serve_constraints": each(matches(PIN_RE, "a constraint name==version")),
        "llm_runtime_quant_constraints": each(matches(PIN_RE, "a constraint name==version")),
        "llm_runtime_cpu_remove_packages": each(matches(PYPI_NAME_RE, "a package name")),
        "llm_runtime_conda_installer_url": url(empty_ok=True),
        "llm_runtime_conda_installer_sha256": matches(r"^[0-9a-f]{64}$", "64 lower-case hex digits", empty_ok=True),
    },
    "model_store": {
        "model_store_root": abs_path(),
        "model_store_owner": ACCOUNT,
        "model_store_group": ACCOUNT,
        "model_store_file_mode": MODE,
        "model_store_directory_mode": MODE,
        "model_store_keep_revisions": integer(0, 100),
        "model_store_hub_endpoint": url(("http", "https"), empty_ok=True),
        "model_store_hub_token": matches(r"^\S*$", "a token without whitespace"),
        "model_store_fetch_python": abs_path(empty_ok=True),
        "model_store_retries": integer(0, 100),
        "model_store_retry_delay": integer(0, 3600),
        "model_store_timeout": integer(1, 3600),
        "model_store_ca_path": abs_path(empty_ok=True),
        "model_store_free_space_margin": integer(0),
        "model_store_fetch_timeout": integer(60, 30 * 86400),
        "model_store_poll_interval": integer(1, 3600),
    },
    "quantize": {
        "quantize_store_root": abs_path(),
        "quantize_owner": ACCOUNT,
        "quantize_group": ACCOUNT,
        "quantize_file_mode": MODE,
        "quantize_directory_mode": MODE,
        "quantize_python": abs_path(),
        "quantize_worker_dir": abs_path(),
        "quantize_model_free_min_bytes": integer(1),
        "quantize_generate_tokens": integer(0, 4096),
        "quantize_generate_max_bytes": integer(0),
        "quantize_prompt": matches(r"^.+$", "a non-empty single line"),
        "quantize_keep_old": integer(0, 100),
        "quantize_timeout": integer(60, 30 * 86400),
        "quantize_poll_interval": integer(1, 3600),
        "quantize_threads": integer(0, 4096),
    },
    "llm_service": {
        "llm_service_model_root": abs_path(),
        "llm_service_user": ACCOUNT,
        "llm_service_group": ACCOUNT,
        "llm_service_runtime_dir": abs_path(),
        "llm_service_reasoning_parser": one_of(VLLM_REASONING_PARSERS, empty_ok=True),
        "llm_service_environment_files": each(abs_path()),
        "llm_service_config_dir": abs_path(),
        "llm_service_limit_nofile": integer(1024, 1048576),
        "llm_service_limit_memlock": matches(r"^(infinity|[0-9]+[KMGT]?)$", "infinity or bytes with an optional K, M, G or T"),
        "llm_service_restart_sec": integer(0, 3600),
        "llm_service_start_limit_interval": integer(0, 86400),
        "llm_service_start_limit_burst": integer(1, 1000),
        "llm_service_stop_timeout": integer(1, 3600),
        "llm_service_ready_timeout": integer(10, 86400),
        "llm_service_probe_prompt": matches(r"^.+$", "a non-empty single line"),
        "llm_service_probe_max_tokens": integer(1, 4096),
        "llm_service_log_lines": integer(0, 10000),
    },
    "gateway": {
        "gateway_port": PORT,
        "gateway_listen_address": ip_address(4),
        "gateway_upstream_keepalive": integer(1, 1024),
        "gateway_api_key_min_length": integer(16, 4096),
        "gateway_health_path": matches(HTTP_PATH_RE, "a path such as /healthz (letters, digits, . _ / -)"),
        "gateway_health_upstream_path": matches(HTTP_PATH_RE, "a path such as /health (letters, digits, . _ / -)"),
        "gateway_tls_generated_sans": each(lambda v: None if hostname_or_ip(v) else "a DNS name or an IP address"),
        "gateway_tls_generated_days": integer(1, 3650),
        "gateway_tls_ca_days": integer(1, 36500),
        "gateway_server_names": each(lambda v: None if hostname_or_ip(v) else "a DNS name or an IP address"),
        "gateway_hsts_max_age": integer(0, 63072000),
        "gateway_client_max_body_size": matches(NGINX_SIZE_RE, "an nginx size such as 10m or 512k"),
        "gateway_client_timeout": integer(1, 86400),
        "gateway_proxy_connect_timeout": integer(1, 300),
        "gateway_proxy_timeout": integer(1, 86400),
        "gateway_rate_limit_rps": integer(1, 100000),
        "gateway_rate_limit_burst": integer(0, 100000),
        "gateway_access_log": abs_path(),
        "gateway_allowed_networks": networks(),
        "gateway_ssh_allowed_networks": networks(),
        "gateway_ssh_port": PORT,
    },
}


class _Report:
    """Collects messages; knows which inventory file holds which variable."""

    def __init__(self, values, inventory_dir, group):
        self.values = values
        self.base = f"{inventory_dir}/group_vars/{group or 'all'}" if inventory_dir else f"group_vars/{group or 'all'}"
        self.deployment = (f"{inventory_dir}/group_vars/all/deployment.yml" if inventory_dir
                           else "group_vars/all/deployment.yml")
        self.errors = []

    def file_of(self, name):
        if name.startswith("llm_") and name.split("_")[1] not in ("runtime", "service"):
            return self.deployment
        for component, file_name in COMPONENT_FILES.items():
            if name.startswith(component + "_"):
                return f"{self.base}/{file_name}"
        return f"{self.base}/<component>.yml"

    def add(self, name, text, *others):
        where = " and ".join(sorted({self.file_of(n) for n in (name, *others)}))
        self.errors.append(f"{text} Set {'it' if not others else 'them'} in {where}.")

    def field(self, name, rule):
        if name not in self.values:
            return
        value = self.values[name]
        want = rule(value)
        if want:
            self.add(name, f"{name} is {show(name, value)}: it must be {want}.")

    def has(self, *names):
        return all(name in self.values for name in names)

    def get(self, name, default=None):
        return self.values.get(name, default)


def _entries(report, name):
    value = report.get(name, [])
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def _label(entry):
    return json.dumps(entry.get("name", "?"))


def _duplicates(items):
    seen, dup = set(), []
    for item in items:
        if item in seen and item not in dup:
            dup.append(item)
        seen.add(item)
    return dup


def _combos_preflight(r):
    weights, group = r.get("llm_weights"), r.get("llm_weights_group_size")
    if weights in FOUR_BIT and _as_int(group) not in FOUR_BIT_GROUP_SIZES and group is not None:
        r.add("llm_weights_group_size", f"llm_weights_group_size is {show('', group)}: {weights} weights must be in groups "
              f"of {', '.join(map(str, FOUR_BIT_GROUP_SIZES))} (vLLM's 4-bit kernels).")


def _combos_host_tuning(r):
    if r.get("host_tuning_nccl_enabled", True):
        extra = r.get("host_tuning_nccl_extra_env", {})
        for key, val in (extra.items() if isinstance(extra, dict) else []):
            if not NCCL_NAME_RE.match(str(key)) or not SAFE_VALUE_RE.match(str(val)):
                r.add("host_tuning_nccl_extra_env", f"host_tuning_nccl_extra_env has '{key}' "
                      f"(value {json.dumps(str(val))}): names must match {NCCL_NAME_RE.pattern} and values must not contain "
                      "quotes, backslashes, '$', backticks or line breaks.")
    extra = r.get("host_tuning_sysctl_extra", {})
    for key, val in (extra.items() if isinstance(extra, dict) else []):
        if not SYSCTL_NAME_RE.match(str(key)) or not re.match(r"^[^\n]+$", str(val)):
            r.add("host_tuning_sysctl_extra", f"host_tuning_sysctl_extra has '{key}' (value {json.dumps(str(val))}): "
                  "a sysctl name looks like vm.max_map_count and its value is one line.")


def _combos_nvidia_driver(r):
    branch, version = r.get("nvidia_driver_branch"), r.get("nvidia_driver_version", "")
    if version and (not re.match(r"^[0-9]+\.[0-9]+(\.[0-9]+)?$", str(version)) or str(version).split(".")[0] != str(branch)):
        r.add("nvidia_driver_version", f"nvidia_driver_version is {show('', version)}: it must be empty or an upstream "
              f"version of branch {branch} such as {branch}.159.04.", "nvidia_driver_branch")
    cuda = r.get("nvidia_driver_required_cuda", "")
    if re.match(r"^[0-9]{3,4}$", str(branch)) and re.match(r"^[0-9]+\.[0-9]+$", str(cuda)):
        ok, why = branch_supports_cuda(branch, cuda)
        if not ok:
            r.add("nvidia_driver_branch", f"nvidia_driver_branch is {show('', branch)} and nvidia_driver_required_cuda "
                  f"{show('', cuda)}: {why}.", "nvidia_driver_required_cuda")
    if r.get("nvidia_driver_repo_key_url") and r.get("nvidia_driver_repo_key_src"):
        r.add("nvidia_driver_repo_key_url", "nvidia_driver_repo_key_url and nvidia_driver_repo_key_src are both set: "
              "give only one (the URL the host downloads, or the key file on the control node).")
    if r.get("nvidia_driver_cuda_enabled") and r.get("nvidia_driver_source") == "debian":
        r.add("nvidia_driver_cuda_enabled", "nvidia_driver_cuda_enabled is true with nvidia_driver_source debian: Debian "
              "has no CUDA 13 toolkit, cuDNN 9 or NCCL 2.29 packages. Set nvidia_driver_cuda_enabled: false (torch's "
              "wheels bring their own CUDA runtime, cuDNN and NCCL) or use nvidia_driver_source: nvidia.")
    if r.get("nvidia_driver_cuda_enabled", True):
        for entry in r.get("nvidia_driver_cuda_packages", []) or []:
            name = entry.get("name", "") if isinstance(entry, dict) else ""
            ver = str(entry.get("version", "")) if isinstance(entry, dict) else ""
            if not PACKAGE_RE.match(str(name)) or not re.match(r"^[0-9A-Za-z.+~:*-]+$", ver):
                r.add("nvidia_driver_cuda_packages", f"nvidia_driver_cuda_packages has {show('', entry)}: each entry is "
                      "{name: <package>, version: <exact Debian version>} (apt-cache madison <package> lists them).")


def _combos_llm_runtime(r):
    if r.get("llm_runtime_offline") and not r.get("llm_runtime_wheelhouse_dir"):
        r.add("llm_runtime_offline", "llm_runtime_offline is true but llm_runtime_wheelhouse_dir is empty: an offline "
              "install needs the wheelhouse that holds every wheel.", "llm_runtime_wheelhouse_dir")
    if r.get("llm_runtime_method") == "conda":
        if not r.get("llm_runtime_conda_installer_url") or not r.get("llm_runtime_conda_installer_sha256") \
                or not r.get("llm_runtime_conda_channels"):
            r.add("llm_runtime_method", "llm_runtime_method is conda: set llm_runtime_conda_installer_url (http(s) or file "
                  "URL of a Miniforge installer .sh, or your mirror of it), llm_runtime_conda_installer_sha256 (its sha256, "
                  "64 lower-case hex digits) and at least one llm_runtime_conda_channels entry.")
    if not r.get("llm_runtime_serve_enabled", True) and not r.get("llm_runtime_quant_enabled", True):
        r.add("llm_runtime_serve_enabled", "llm_runtime_serve_enabled and llm_runtime_quant_enabled are both false: "
              "the role would build nothing.", "llm_runtime_quant_enabled")


def _combos_model_store(r):
    root = r.get("model_store_root")
    if isinstance(root, str) and root.rstrip("/") in SYSTEM_DIRS + ("",):
        r.add("model_store_root", f"model_store_root is {show('', root)}: it must be a dedicated directory, not one of "
              f"{', '.join(SYSTEM_DIRS)} (old revisions are pruned there).")
    models = _entries(r, "model_store_models")
    names = [m.get("name") for m in models]
    for dup in _duplicates(names):
        r.add("model_store_models", f"model_store_models lists the name {json.dumps(dup)} twice: each precision or "
              "variant needs its own name (for example DeepSeek-R1-Distill-Qwen-32B and DeepSeek-R1-Distill-Qwen-32B-W4A16).")
    for m in models:
        problems = []
        name, source, rev = m.get("name"), m.get("source"), m.get("revision")
        if NAME(name) or name == "current":
            problems.append(f"name {show('', name)} must be {NAME(name) or 'other than current'}")
        if source == "hub":
            if not (isinstance(rev, str) and re.match(r"^[0-9a-f]{40}$", rev)) and not m.get("allow_branch"):
                problems.append(f"revision {show('', rev)} must be a 40-hex commit id (copy it from the model's "
                                "\"Files and versions\" history; branch names move, allow_branch: true only for tests)")
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$", str(m.get("repo_id", ""))):
                problems.append(f"repo_id {show('', m.get('repo_id'))} must be org/name")
            if m.get("endpoint") and url(("http", "https"))(m["endpoint"]):
                problems.append(f"endpoint {show('', m['endpoint'])} must be {url(('http', 'https'))(m['endpoint'])}")
        elif NAME(rev):
            problems.append(f"revision {show('', rev)} must be {NAME(rev)}")
        if source == "http":
            for key in ("manifest_url", "base_url"):
                if key in m and m[key] not in (None, "") and url(("http", "https"))(m[key]):
                    problems.append(f"{key} {show('', m[key])} must be {url(('http', 'https'))(m[key])}")
            if "manifest_url" not in m or not m["manifest_url"]:
                problems.append("manifest_url must be set")
            if not re.match(r"^([0-9a-fA-F]{64})?$", str(m.get("manifest_sha256") or "")):
                problems.append(f"manifest_sha256 {show('', m.get('manifest_sha256'))} must be 64 hex digits")
        if source == "local":
            for key in ("path", "manifest_path"):
                if key in m and m[key] is not None and abs_path()(m[key]):
                    problems.append(f"{key} {show('', m[key])} must be {abs_path()(m[key])}")
        for problem in problems:
            r.add("model_store_models", f"model_store_models entry {_label(m)}: {problem}.")


def _combos_quantize(r):
    models = _entries(r, "quantize_models")
    names = [m.get("name") for m in models]
    for dup in _duplicates(names):
        r.add("quantize_models", f"quantize_models lists the name {json.dumps(dup)} twice: give each checkpoint its own "
              "name (for example DeepSeek-R1-Distill-Qwen-32B-W4A16 and DeepSeek-R1-Distill-Qwen-32B-W8A8).")
    store = [m.get("name") for m in _entries(r, "model_store_models")] if r.has("model_store_models") else None
    for m in models:
        problems = []
        name, source = m.get("name"), m.get("source")
        if NAME(name) or name in ("current", source):
            problems.append(f"name {show('', name)} must be {NAME(name) or 'other than current and the source name'}")
        if isinstance(source, str) and source.startswith("/"):
            if abs_path()(source):
                problems.append(f"source {show('', source)} must be {abs_path()(source)}")
        elif NAME(source):
            problems.append(f"source {show('', source)} must be a model store name or an absolute directory")
        elif store is not None and source not in store:
            r.add("quantize_models", f"quantize_models entry {_label(m)}: source {show('', source)} is not a "
                  f"model_store_models name ({', '.join(map(str, store)) or 'none listed'}).", "model_store_models")
        if store is not None and name in store:
            r.add("quantize_models", f"quantize_models entry {_label(m)}: the name is also a model_store_models name; "
                  "both would publish into the same store directory.", "model_store_models")
        scheme = m.get("scheme", "W4A16")
        if scheme == "W4A16" and _as_int(m.get("group_size", 128)) not in FOUR_BIT_GROUP_SIZES:
            problems.append(f"group_size {show('', m.get('group_size'))} must be one of "
                            f"{', '.join(map(str, FOUR_BIT_GROUP_SIZES))} for W4A16 (vLLM's 4-bit kernels)")
        if m.get("method", "rtn") == "gptq":
            if abs_path()(m.get("calibration_path")):
                given = show('', m["calibration_path"]) if m.get("calibration_path") else "(not set)"
                problems.append(f"calibration_path {given} must be an absolute path on the host (method gptq needs "
                                "calibration texts)")
            if m.get("pipeline", "auto") == "model_free":
                problems.append("method gptq cannot use pipeline model_free (data-free only)")
        for key, rule in (("calibration_samples", integer(1, 100000)), ("calibration_max_seq_length", integer(16, 131072))):
            if key in m and m[key] is not None and rule(m[key]):
                problems.append(f"{key} {show('', m[key])} must be {rule(m[key])}")
        for problem in problems:
            r.add("quantize_models", f"quantize_models entry {_label(m)}: {problem}.")


# Keys of an llm_service_instances entry: the service's own, then the instance's own deployment
# profile and GPU placement (module_utils/llm_host_plan.py plans them; the rest comes from
# group_vars/all/deployment.yml).
INSTANCE_SERVICE_KEYS = ("name", "model", "model_path", "served_model_name", "port", "extra_args")
INSTANCE_PROFILE_RULES = {
    "sizing_model": matches(r"^\S+$", "a catalog id or the control-node path of a config.json"),
    "weights": one_of(WEIGHT_FORMATS),
    "weights_group_size": one_of(FOUR_BIT_GROUP_SIZES),
    "weights_keep_16bit": each(one_of(KEEPABLE_MODULES), empty_ok=True),
    "kv_cache_dtype": one_of(("auto", "fp8")),
    "max_model_len": integer(1, 1048576),
    "max_num_seqs": integer(0, 65536),
    "max_num_batched_tokens": integer(0, 1048576),
    "enforce_eager": lambda v: None if isinstance(v, bool) else "true or false",
    "tensor_parallel_size": integer(1, 64),
    "pipeline_parallel_size": integer(1, 64),
    "gpus": lambda v: None if (isinstance(v, list) and v and all(isinstance(i, int) and not isinstance(i, bool)
                                                                  and 0 <= i < 64 for i in v) and len(set(v)) == len(v))
    else "a non-empty list of distinct GPU indices (0, 1, ...)",
    "gpu_memory_utilization": number(0, 1, lo_open=True),
    "cpu_kv_cache_bytes": integer(0),
}


def _instance_gpu_shares(r, instances):
    """{gpu index: {instance: share}} of a multi-instance GPU placement (see _combos_llm_service)."""
    # The site profile and each instance as the preflight's planner reads them (llm_host_plan).
    site = {key: convert(r.get("llm_" + key)) for key, convert in (
        ("tensor_parallel_size", _as_int), ("pipeline_parallel_size", _as_int), ("gpu_memory_utilization", _as_float))
        if r.get("llm_" + key) is not None}
    shares = {}
    for i in instances:
        gpus = i.get("gpus")
        if INSTANCE_PROFILE_RULES["gpus"](gpus) is not None:
            planned = {key: _as_int(i.get(key)) for key in ("tensor_parallel_size", "pipeline_parallel_size")}
            gpus = list(range(default_gpu_count(planned, site)))
        share = _as_float(instance_share(i, site))
        if share is None:
            continue
        for index in gpus:
            shares.setdefault(index, {})[str(i.get("name"))] = share
    return shares


def _combos_llm_service(r):
    instances = _entries(r, "llm_service_instances")
    if r.has("llm_service_instances") and not instances:
        r.add("llm_service_instances", "llm_service_instances is empty: list at least one instance "
              "({name, model, port}).")
    for dup in _duplicates([i.get("name") for i in instances]):
        r.add("llm_service_instances", f"llm_service_instances lists the name {json.dumps(dup)} twice: instance "
              "names must be distinct (each is a unit llm-onprem@<name>.service).")
    for dup in _duplicates([_as_int(i.get("port")) for i in instances]):
        r.add("llm_service_instances", f"llm_service_instances uses port {dup} for more than one instance: give each "
              "its own port.")
    models = None
    if r.has("model_store_models") or r.has("quantize_models"):
        models = [m.get("name") for m in _entries(r, "model_store_models") + _entries(r, "quantize_models")]
    for i in instances:
        problems = []
        name = i.get("name")
        if not (isinstance(name, str) and re.match(r"^[a-z0-9][a-z0-9-]{0,39}$", name)):
            problems.append(f"name {show('', name)} must be lower-case letters, digits and '-' (at most 40; it "
                            "becomes the unit llm-onprem@<name>.service)")
        port = _as_int(i.get("port"))
        if port is None or not 1024 <= port <= 65535:
            problems.append(f"port {show('', i.get('port'))} must be an integer from 1024 to 65535")
        model, path = i.get("model") or "", i.get("model_path") or ""
        if bool(model) == bool(path):
            problems.append("give exactly one of model (a model store name) and model_path (an absolute directory)")
        elif path and abs_path()(path):
            problems.append(f"model_path {show('', path)} must be {abs_path()(path)}")
        elif model and NAME(model):
            problems.append(f"model {show('', model)} must be a model store name: {NAME(model)}")
        elif model and models is not None and model not in models:
            r.add("llm_service_instances", f"llm_service_instances entry {_label(i)}: model {show('', model)} is "
                  f"neither a model_store_models nor a quantize_models name ({', '.join(map(str, models)) or 'none listed'}).",
                  "model_store_models")
        served = i.get("served_model_name", name)
        if not (isinstance(served, str) and re.match(r"^[A-Za-z0-9._:/-]+$", served)):
            problems.append(f"served_model_name {show('', served)} must be letters, digits and . _ : / - (no spaces)")
        extra = i.get("extra_args", []) or []
        if not isinstance(extra, list):
            extra = [extra]
        reserved = [a for a in extra if str(a).split("=", 1)[0] in RESERVED_VLLM_ARGS]
        if reserved:
            problems.append(f"extra_args {show('', reserved)} are set by the sizing plan or this role: change the "
                            "deployment profile in group_vars/all/deployment.yml, or the instance's own keys, instead")
        if [a for a in extra if re.search(r"\s", str(a))]:
            problems.append("extra_args must hold one argument per entry, without spaces")
        unknown = sorted(str(k) for k in i if k not in INSTANCE_SERVICE_KEYS and k not in INSTANCE_PROFILE_RULES)
        if unknown:
            problems.append(f"{', '.join(unknown)} {'is not a key' if len(unknown) == 1 else 'are not keys'} of an instance "
                            f"(service: {', '.join(INSTANCE_SERVICE_KEYS)}; its own profile: {', '.join(INSTANCE_PROFILE_RULES)})")
        for key, rule in INSTANCE_PROFILE_RULES.items():
            if key in i and rule(i[key]):
                problems.append(f"{key} {show('', i[key])} must be {rule(i[key])}")
        for problem in problems:
            r.add("llm_service_instances", f"llm_service_instances entry {_label(i)}: {problem}.")
    # Several instances placed on GPUs: the shares on each GPU add up to at most 1 (checked here
    # when any instance sets its placement; the preflight checks every GPU host against its free memory).
    if len(instances) > 1 and any("gpus" in i or "gpu_memory_utilization" in i for i in instances):
        for index, on_gpu in sorted(_instance_gpu_shares(r, instances).items()):
            if sum(on_gpu.values()) > 1 + 1e-9:
                listed = ", ".join(f"{name} {share:.2f}" for name, share in on_gpu.items())
                r.add("llm_service_instances", f"llm_service_instances: the gpu_memory_utilization shares on GPU {index} add up "
                      f"to {sum(on_gpu.values()):.2f} ({listed}), more than 1: give the instances smaller shares or place one "
                      "on another GPU (gpus: [N]); an instance without its own share takes llm_gpu_memory_utilization.",
                      "llm_gpu_memory_utilization")
    key = r.get("llm_service_api_key")
    if key is not None and (not isinstance(key, str) or len(key) < 32 or re.search(r"[\s\"'\\]", key)):
        r.add("llm_service_api_key", f"llm_service_api_key is {show('llm_service_api_key', key if isinstance(key, str) else '')}: "
              "it must be at least 32 characters without whitespace, quotes or backslashes. Keep it in an Ansible vault "
              "(for example group_vars/llm_servers/vault.yml, ansible-vault encrypt).")
    env = r.get("llm_service_environment", {})
    for k, v in (env.items() if isinstance(env, dict) else []):
        if not ENV_NAME_RE.match(str(k)) or re.search(r"[\n\r]", str(v)):
            r.add("llm_service_environment", f"llm_service_environment has {json.dumps(str(k))}: names must be capitals, "
                  "digits and '_' and values single lines.")
    if r.has("llm_service_probe_max_tokens", "llm_max_model_len"):
        tokens = _as_int(r.get("llm_service_probe_max_tokens"))
        for i in instances or [{}]:
            length = _as_int(i.get("max_model_len", r.get("llm_max_model_len")))
            if tokens is not None and length is not None and tokens >= length:
                whose = f"the max_model_len of instance {_label(i)}" if "max_model_len" in i else "llm_max_model_len"
                r.add("llm_service_probe_max_tokens", f"llm_service_probe_max_tokens is {tokens}: it must be less than "
                      f"{whose} ({length}), or the readiness completion is refused.",
                      "llm_service_instances" if "max_model_len" in i else "llm_max_model_len")


def _combos_gateway(r):
    upstreams = _entries(r, "gateway_upstreams")
    if r.has("gateway_upstreams") and not upstreams:
        r.add("gateway_upstreams", "gateway_upstreams is empty: list at least one instance as {name, port}.")
    for dup in _duplicates([u.get("name") for u in upstreams]):
        r.add("gateway_upstreams", f"gateway_upstreams lists the name {json.dumps(dup)} twice.")
    instances = _entries(r, "llm_service_instances") if r.has("llm_service_instances") else None
    ports = {_as_int(i.get("port")): i.get("name") for i in instances or []}
    for u in upstreams:
        problems = []
        if not re.match(r"^[A-Za-z0-9_-]+$", str(u.get("name", ""))):
            problems.append(f"name {show('', u.get('name'))} must be letters, digits, '_' and '-'")
        port = _as_int(u.get("port"))
        if port is None or PORT(port):
            problems.append(f"port {show('', u.get('port'))} must be an integer from 1 to 65535")
        if _as_int(u.get("weight", 1)) is None or integer(1, 1000)(u.get("weight", 1)):
            problems.append(f"weight {show('', u.get('weight'))} must be an integer from 1 to 1000")
        host = u.get("host", "127.0.0.1")
        if not hostname_or_ip(host):
            problems.append(f"host {show('', host)} must be an IP address or a host name")
        elif instances is not None and port is not None and host in ("127.0.0.1", "::1", "localhost") \
                and port not in ports:
            r.add("gateway_upstreams", f"gateway_upstreams entry {_label(u)}: port {port} is not the port of an "
                  "instance of llm_service_instances (" + (", ".join(f"{n} on {p}" for p, n in ports.items()) or "none")
                  + "): nginx would send requests where nothing listens.", "llm_service_instances")
        if "model" in u and not (isinstance(u["model"], str) and MODEL_RE.match(u["model"])):
            problems.append(f"model {show('', u['model'])} must be the served model name clients send: a non-empty "
                            "string of printable ASCII without whitespace, quotes, backslashes or '$'")
        elif "model" in u and upstream_model(dict(u, model=None), instances) not in (None, u["model"]):
            r.add("gateway_upstreams", f"gateway_upstreams entry {_label(u)}: model {show('', u['model'])} is not what "
                  f"the instance on port {port} serves ({show('', upstream_model(dict(u, model=None), instances))}, its "
                  "served_model_name or name in llm_service_instances): leave model out, the gateway takes the "
                  "instance's.", "llm_service_instances")
        percent = u.get("canary_percent")
        if percent is not None and (isinstance(percent, bool) or not isinstance(percent, (int, float))
                                    or not 0 <= percent <= 100):
            problems.append(f"canary_percent {show('', percent)} must be a number from 0 to 100 (the share of its "
                            "model's clients the candidate gets; 0 keeps it configured and sends it nothing)")
        for problem in problems:
            r.add("gateway_upstreams", f"gateway_upstreams entry {_label(u)}: {problem}.")
    # The gateway routes by the request's model: when some upstreams' models are known, every one's must be.
    served = [upstream_model(u, instances) for u in upstreams]
    # Canary: a candidate (canary_percent set) takes a share of its model's clients from that model's stable entries.
    candidates, stable = {}, set()
    for u, model in zip(upstreams, served, strict=True):
        if u.get("canary_percent") is None:
            stable.add(model)
        elif model is None:
            r.add("gateway_upstreams", f"gateway_upstreams entry {_label(u)}: it has canary_percent but the gateway "
                  "cannot tell which model it serves: give it model: <the served model name of its stable entries>.")
        else:
            candidates.setdefault(model, []).append(u)
    for model, members in candidates.items():
        if len(members) > 1:
            r.add("gateway_upstreams", f"gateway_upstreams entries {', '.join(_label(u) for u in members)} are all "
                  f"canary candidates for model {show('', model)}: at most one candidate per model; remove "
                  "canary_percent from all but one.")
        if model not in stable:
            r.add("gateway_upstreams", f"gateway_upstreams entry {_label(members[0])}: canary candidate for model "
                  f"{show('', model)}, but no entry without canary_percent serves that model: a candidate takes its "
                  "share from a stable upstream of the same model. Add the stable one, or remove canary_percent.")
    if any(m is not None for m in served):
        for u, model in zip(upstreams, served, strict=True):
            if model is None:
                if instances is None:
                    where = "it has no model and llm_service_instances is not defined"
                elif u.get("host", "127.0.0.1") in ("127.0.0.1", "::1", "localhost"):
                    where = f"it has no model and no llm_service_instances entry listens on port {show('', u.get('port'))}"
                else:
                    where = f"it has no model and is on {show('', u.get('host'))}, not an instance of this host"
                r.add("gateway_upstreams", f"gateway_upstreams entry {_label(u)}: the gateway cannot tell which model "
                      f"it serves ({where}) while the other entries name theirs, and requests are routed by their "
                      "model: give it model: <the served model name clients send>.")
    gw_port = _as_int(r.get("gateway_port"))
    if gw_port is not None and gw_port in ports:
        r.add("gateway_port", f"gateway_port is {gw_port}, the port of instance {json.dumps(ports[gw_port])} in "
              "llm_service_instances: the gateway and the instance cannot share a port.", "llm_service_instances")
    if gw_port is not None and gw_port == _as_int(r.get("gateway_ssh_port")):
        r.add("gateway_port", f"gateway_port and gateway_ssh_port are both {gw_port}: nginx and SSH cannot share a port.")
    if r.has("gateway_health_path"):
        path = str(r.get("gateway_health_path"))
        if path == "/" or path == "/v1" or path.startswith("/v1/"):
            r.add("gateway_health_path", f"gateway_health_path is {show('', path)}: the one path served without a key "
                  "must not be / or under /v1.")
    gen, ca = _as_int(r.get("gateway_tls_generated_days")), _as_int(r.get("gateway_tls_ca_days"))
    if r.get("gateway_tls_mode") == "generated" and gen is not None and ca is not None and ca < gen:
        r.add("gateway_tls_ca_days", f"gateway_tls_ca_days is {ca}: the private CA must outlive the server certificate "
              f"(gateway_tls_generated_days {gen}).", "gateway_tls_generated_days")
    if r.get("gateway_firewall_enabled", True) and r.has("gateway_allowed_networks") \
            and not r.get("gateway_allowed_networks"):
        r.add("gateway_allowed_networks", "gateway_firewall_enabled is true but gateway_allowed_networks is empty: "
              "nobody could reach the gateway. List the client networks (CIDR), or set gateway_firewall_enabled: false.")
    ssh = r.get("ansible_connection") or "ssh"
    if r.get("gateway_firewall_enabled", True) and r.has("gateway_ssh_port") and ssh in SSH_CONNECTIONS:
        play_port = _as_int(r.get("ansible_port")) or 22
        if play_port != _as_int(r.get("gateway_ssh_port")):
            r.add("gateway_ssh_port", f"gateway_ssh_port is {show('', r.get('gateway_ssh_port'))} but this play connects "
                  f"over SSH on port {play_port} (ansible_port): the firewall would shut the play out; it must be "
                  f"{play_port}.")


SSH_CONNECTIONS = ("ssh", "smart", "paramiko", "paramiko_ssh", "ansible.builtin.ssh", "ansible.builtin.paramiko_ssh",
                   "ansible.legacy.ssh")

COMBOS = {
    "preflight": _combos_preflight, "host_tuning": _combos_host_tuning, "nvidia_driver": _combos_nvidia_driver,
    "llm_runtime": _combos_llm_runtime, "model_store": _combos_model_store, "quantize": _combos_quantize,
    "llm_service": _combos_llm_service, "gateway": _combos_gateway,
}


def inventory_errors(values, role, inventory_dir=None, group=None):
    """Messages for every mistake in ``values`` (variable -> value) that ``role`` checks without a host."""
    if role not in FIELDS:
        raise ValueError(f"unknown role {role!r}; known: {', '.join(FIELDS)}")
    report = _Report(dict(values or {}), inventory_dir, group)
    for name, rule in FIELDS[role].items():
        report.field(name, rule)
    COMBOS[role](report)
    return report.errors

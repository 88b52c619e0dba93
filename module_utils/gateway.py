# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic of the gateway role: the firewall's networks and the routing by model name.

Plain functions without Ansible imports, unit-tested in tests/unit/test_gateway.py:

* ``parse_networks`` checks a list of CIDRs (or single addresses) and splits it
  into IPv4 and IPv6 networks in nftables' notation (module gateway_preflight).
* ``address_allowed`` says whether an address falls in one of those networks.
* ``upstream_model`` is the served model name of one ``gateway_upstreams`` entry:
  its own ``model``, else the ``served_model_name`` (default: ``name``) of the
  ``llm_service_instances`` entry on the same loopback port. The instance is the
  one home of the name; the gateway only reads it.
* ``model_pools`` groups the upstreams by that name (one nginx upstream group per
  model, replicas of a model in the same group) and ``model_routes`` is the table
  the njs router (roles/gateway/files/llm-onprem-gateway.js) reads. The role's
  filter plugin (plugins/filter/llm_onprem.py) exposes both to the site template;
  the inventory checks (module_utils/inventory_checks.py) use ``upstream_model``.
* An entry with ``canary_percent`` (0-100) is a candidate for its model: it gets a
  pool of its own, and ``model_routes`` tells the router which share of the model's
  clients go there. ``canary_bucket`` is the router's sticky choice written in
  Python (the njs function must give the same bucket: tests/unit/test_gateway_njs.py),
  so a test can say which side a client key lands on.

Who holds the gateway port is module_utils/listen_port.py's job (module listen_port).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

# Upstream hosts that are this host: an upstream there is an llm_service instance,
# found by its port. An upstream without a host is on 127.0.0.1.
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
DEFAULT_HOST = "127.0.0.1"
# nginx upstream groups, one per model, named by position (model names may hold
# characters nginx names cannot).
POOL_PREFIX = "llm_onprem_pool_"
# A served model name as the gateway's configuration can carry it: printable
# ASCII without whitespace, quotes, backslashes or '$' (it goes into a quoted nginx
# string read as JSON, where '$' would start a variable).
MODEL_RE = re.compile(r"^(?!.*[\"'`\\$])[\x21-\x7e]{1,256}$")
# The canary split: a client key's bucket (0 .. CANARY_BUCKETS - 1) is below
# percent * CANARY_BUCKETS / 100 on the candidate's side. 10000 buckets: steps of 0.01 %.
CANARY_BUCKETS = 10000


def parse_networks(items):
    """Return (ipv4, ipv6, errors) for a list of CIDR strings.

    Host bits set (10.0.0.1/8) are an error: the operator probably meant
    something else, and nftables would refuse it too.
    """
    ipv4, ipv6, errors = [], [], []
    if not isinstance(items, (list, tuple)):
        return ipv4, ipv6, [f"expected a list of networks, got {type(items).__name__}"]
    for item in items:
        text = str(item).strip()
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            errors.append(f"'{text}' is not a network in CIDR notation ({exc})")
            continue
        (ipv4 if net.version == 4 else ipv6).append(str(net))
    return ipv4, ipv6, errors


def address_allowed(address, networks):
    """True when ``address`` (an IP, IPv4-mapped IPv6 accepted) is inside one of ``networks``."""
    try:
        addr = ipaddress.ip_address(str(address).strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    for text in networks:
        try:
            net = ipaddress.ip_network(str(text), strict=False)
        except ValueError:
            continue
        if net.version == addr.version and addr in net:
            return True
    return False


def _port(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def upstream_model(upstream, instances=None):
    """The served model name of one gateway_upstreams entry, or None when nothing says it.

    Its own ``model`` wins. Otherwise, for an upstream on this host (host unset or
    loopback) and a defined ``instances`` list (llm_service_instances), the
    ``served_model_name`` of the instance on the same port, defaulting to its ``name``
    as llm_service does.
    """
    if not isinstance(upstream, dict):
        return None
    if upstream.get("model") is not None:
        return upstream["model"]
    if instances is None or upstream.get("host", DEFAULT_HOST) not in LOOPBACK_HOSTS:
        return None
    port = _port(upstream.get("port"))
    for instance in instances if isinstance(instances, (list, tuple)) else []:
        if isinstance(instance, dict) and port is not None and _port(instance.get("port")) == port:
            served = instance.get("served_model_name")
            return served if served is not None else instance.get("name")
    return None


def canary_percent(upstream):
    """An entry's canary_percent as a number, or None when it is not a candidate (absent or null)."""
    value = upstream.get("canary_percent") if isinstance(upstream, dict) else None
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def canary_threshold(percent):
    """The buckets on the candidate's side for ``percent``: 0 for 0 %, all of them for 100 %."""
    return max(0, min(CANARY_BUCKETS, int(round(float(percent) * CANARY_BUCKETS / 100))))


def canary_bucket(key):
    """A client key's bucket: the first 4 bytes of its SHA-256 (big-endian) modulo CANARY_BUCKETS.

    The same key always has the same bucket, so a client stays on one side while the
    percent stays; raising the percent only moves clients from stable to candidate.
    """
    return int.from_bytes(hashlib.sha256(str(key).encode("utf-8")).digest()[:4], "big") % CANARY_BUCKETS


def model_pools(upstreams, instances=None):
    """The upstreams grouped by served model name, in the order the models first appear.

    Each pool: ``{"name": "llm_onprem_pool_<i>", "model": <name or None>, "upstreams":
    [entries], "candidate": False}``. Entries whose model nobody names (a site that
    never said, the gateway in front of other hosts' instances) form one pool with
    model None. A model's candidates (entries with ``canary_percent``) form a pool of
    their own, ``"candidate": True`` with the ``canary_percent`` of the first, after
    every stable pool (adding a candidate renames no stable pool). A candidate whose
    model is unknown, or the only entry of its model, is served as a stable one (the
    inventory checks refuse both).
    """
    stable, candidates, by_model = [], {}, {}
    entries = [u for u in (upstreams if isinstance(upstreams, (list, tuple)) else []) if isinstance(u, dict)]
    served = [upstream_model(u, instances) for u in entries]
    has_stable = {m for u, m in zip(entries, served, strict=True) if canary_percent(u) is None}
    for upstream, model in zip(entries, served, strict=True):
        if canary_percent(upstream) is not None and model is not None and model in has_stable:
            candidates.setdefault(model, []).append(upstream)
            continue
        if model not in by_model:
            by_model[model] = {"name": f"{POOL_PREFIX}{len(stable)}", "model": model, "upstreams": [],
                               "candidate": False}
            stable.append(by_model[model])
        by_model[model]["upstreams"].append(upstream)
    pools = list(stable)
    for model, members in candidates.items():
        pools.append({"name": f"{POOL_PREFIX}{len(pools)}", "model": model, "upstreams": members,
                      "candidate": True, "canary_percent": canary_percent(members[0])})
    return pools


def model_routes(pools):
    """The njs router's table: ``{"models": {model: pool}, "pools": [pool, ...], "canary": {...}}``.

    ``models`` is empty when no pool has a model name: every request then goes to
    the one pool, whatever its body names (the instances answer for themselves).
    ``pools`` lists every stable pool, whose /v1/models the gateway merges (a
    candidate serves a name its stable pool already lists). ``canary``: for each
    model with a candidate, ``{"pool": its pool, "percent": canary_percent,
    "threshold": buckets below which a client key goes there}``.
    """
    return {
        "models": {p["model"]: p["name"] for p in pools if p["model"] is not None and not p.get("candidate")},
        "pools": [p["name"] for p in pools if not p.get("candidate")],
        "canary": {p["model"]: {"pool": p["name"], "percent": p["canary_percent"],
                                "threshold": canary_threshold(p["canary_percent"])}
                   for p in pools if p.get("candidate")},
    }

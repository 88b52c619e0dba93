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

Who holds the gateway port is module_utils/listen_port.py's job (module listen_port).
"""

from __future__ import annotations

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


def model_pools(upstreams, instances=None):
    """The upstreams grouped by served model name, in the order the models first appear.

    Each pool: ``{"name": "llm_onprem_pool_<i>", "model": <name or None>, "upstreams":
    [entries]}``. Entries whose model nobody names (a site that never said, the
    gateway in front of other hosts' instances) form one pool with model None.
    """
    pools, by_model = [], {}
    for upstream in upstreams if isinstance(upstreams, (list, tuple)) else []:
        if not isinstance(upstream, dict):
            continue
        model = upstream_model(upstream, instances)
        if model not in by_model:
            by_model[model] = {"name": f"{POOL_PREFIX}{len(pools)}", "model": model, "upstreams": []}
            pools.append(by_model[model])
        by_model[model]["upstreams"].append(upstream)
    return pools


def model_routes(pools):
    """The njs router's table: ``{"models": {model: pool}, "pools": [pool, ...]}``.

    ``models`` is empty when no pool has a model name: every request then goes to
    the one pool, whatever its body names (the instances answer for themselves).
    ``pools`` lists every pool, whose /v1/models the gateway merges.
    """
    return {
        "models": {p["model"]: p["name"] for p in pools if p["model"] is not None},
        "pools": [p["name"] for p in pools],
    }

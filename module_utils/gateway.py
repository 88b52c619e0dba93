# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic of the gateway_preflight module: networks and port listeners.

Plain functions without Ansible imports, unit-tested in tests/unit/test_gateway.py:

* ``parse_networks`` checks a list of CIDRs (or single addresses) and splits it
  into IPv4 and IPv6 networks in nftables' notation.
* ``address_allowed`` says whether an address falls in one of those networks.
* ``parse_ss_listeners`` reads ``ss -H -ltnp`` output.
* ``port_conflicts`` finds listeners that would keep nginx from binding
  ``address:port`` (other programs on the same port and an overlapping address).
"""

from __future__ import annotations

import ipaddress
import re

WILDCARDS = {"0.0.0.0", "*", "::", "::ffff:0.0.0.0"}

# users:(("nginx",pid=812,fd=6),("nginx",pid=813,fd=6))
_PROC_RE = re.compile(r'\("([^"]*)",pid=(\d+),fd=\d+\)')


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


def _split_host_port(local):
    """'0.0.0.0:443' -> ('0.0.0.0', 443); '[::]:443' -> ('::', 443); '127.0.0.53%lo:53' -> ('127.0.0.53', 53)."""
    host, _, port = local.rpartition(":")
    if host.startswith("["):
        host = host[1:].rstrip("]")
    return host.split("%", 1)[0], int(port)


def parse_ss_listeners(text):
    """Parse ``ss -H -ltnp`` lines into dicts: address, port, processes [{name, pid}]."""
    listeners = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] != "LISTEN":
            continue
        try:
            host, port = _split_host_port(fields[3])
        except ValueError:
            continue
        rest = " ".join(fields[5:])
        processes = [{"name": name, "pid": int(pid)} for name, pid in _PROC_RE.findall(rest)]
        listeners.append({"address": host, "port": port, "processes": processes})
    return listeners


def _normal(address):
    address = address.strip("[]")
    return "*" if address in WILDCARDS else address


def addresses_overlap(a, b):
    """True when sockets bound to a and b on the same port would collide."""
    a, b = _normal(a), _normal(b)
    return a == "*" or b == "*" or a == b


def port_conflicts(listeners, port, address, owners=("nginx",)):
    """Listeners on ``port`` overlapping ``address`` that are not (only) the ``owners`` programs.

    A listener whose process is unknown (no users: field) counts as a conflict:
    the port is taken and nobody can say by whom.
    """
    conflicts = []
    for item in listeners:
        if item["port"] != port or not addresses_overlap(item["address"], address):
            continue
        names = {p["name"] for p in item["processes"]}
        if names and names <= set(owners):
            continue
        conflicts.append(item)
    return conflicts


def describe_conflicts(conflicts):
    """'0.0.0.0:443 by python3 (pid 42)' joined by '; '."""
    parts = []
    for item in conflicts:
        who = ", ".join(sorted({f"{p['name']} (pid {p['pid']})" for p in item["processes"]})) or "an unknown process"
        parts.append(f"{item['address']}:{item['port']} by {who}")
    return "; ".join(parts)

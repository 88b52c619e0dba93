# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic of the gateway_preflight module: the firewall's networks.

Plain functions without Ansible imports, unit-tested in tests/unit/test_gateway.py:

* ``parse_networks`` checks a list of CIDRs (or single addresses) and splits it
  into IPv4 and IPv6 networks in nftables' notation.
* ``address_allowed`` says whether an address falls in one of those networks.

Who holds the gateway port is module_utils/listen_port.py's job (module listen_port).
"""

from __future__ import annotations

import ipaddress


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

"""Unit tests of module_utils/gateway.py (the gateway_preflight module's logic).

Who holds the gateway port is tested with the listen_port module, in test_listen_port.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "module_utils") not in sys.path:
    sys.path.insert(0, str(ROOT / "module_utils"))

import gateway as gw  # noqa: E402


@pytest.mark.parametrize(
    ("items", "ipv4", "ipv6", "n_errors"),
    [
        (["10.88.0.0/16", "127.0.0.0/8"], ["10.88.0.0/16", "127.0.0.0/8"], [], 0),
        (["192.0.2.7"], ["192.0.2.7/32"], [], 0),
        (["fd00::/8", "10.0.0.0/8"], ["10.0.0.0/8"], ["fd00::/8"], 0),
        (["10.0.0.1/8"], [], [], 1),  # host bits set
        (["10.0.0.0/33"], [], [], 1),
        (["not-a-network", "10.0.0.0/8"], ["10.0.0.0/8"], [], 1),
        ([], [], [], 0),
        ("10.0.0.0/8", [], [], 1),  # a string, not a list
    ],
)
def test_parse_networks(items, ipv4, ipv6, n_errors):
    got4, got6, errors = gw.parse_networks(items)
    assert (got4, got6, len(errors)) == (ipv4, ipv6, n_errors)


@pytest.mark.parametrize(
    ("address", "networks", "allowed"),
    [
        ("10.88.0.1", ["10.88.0.0/16"], True),
        ("10.89.0.1", ["10.88.0.0/16"], False),
        ("::ffff:10.88.0.1", ["10.88.0.0/16"], True),  # IPv4-mapped, as sshd may report it
        ("fd00::5", ["fd00::/8"], True),
        ("fd00::5", ["10.0.0.0/8"], False),
        ("fe80::1%eth0", ["fe80::/10"], True),
        ("garbage", ["0.0.0.0/0"], False),
        ("10.0.0.1", [], False),
    ],
)
def test_address_allowed(address, networks, allowed):
    assert gw.address_allowed(address, networks) is allowed

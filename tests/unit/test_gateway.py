"""Unit tests of module_utils/gateway.py (the gateway_preflight module's logic).

The ss fixtures in fixtures/gateway are `ss -H -ltnp` output: ss-nginx-and-stub.txt
and ss-port-taken.txt follow what the gateway scenario's container shows (nginx on
443, the stub backend on 127.0.0.1:8000, a python3 listener squatting 443), with a
few lines of other formats ss prints (interface-scoped, IPv6, `*`); ss-no-process.txt
is what ss prints for a socket in another network namespace (no users: field).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "module_utils") not in sys.path:
    sys.path.insert(0, str(ROOT / "module_utils"))

import gateway as gw  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gateway"


def ss(name):
    return gw.parse_ss_listeners((FIXTURES / name).read_text())


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


def test_parse_ss_listeners():
    got = ss("ss-nginx-and-stub.txt")
    assert [(item["address"], item["port"]) for item in got] == [
        ("0.0.0.0", 443), ("127.0.0.1", 8000), ("127.0.0.53", 53), ("::", 22), ("*", 9100), ("fe80::1", 8443),
    ]
    assert got[0]["processes"] == [{"name": "nginx", "pid": 1235}, {"name": "nginx", "pid": 1234}]
    assert ss("ss-no-process.txt") == [{"address": "0.0.0.0", "port": 2024, "processes": []}]


@pytest.mark.parametrize(
    ("fixture", "port", "address", "expected"),
    [
        ("ss-nginx-and-stub.txt", 443, "0.0.0.0", []),  # our own nginx: a rerun
        ("ss-nginx-and-stub.txt", 8000, "0.0.0.0", [("127.0.0.1", 8000)]),
        ("ss-nginx-and-stub.txt", 8000, "10.0.0.5", []),  # different specific addresses
        ("ss-nginx-and-stub.txt", 8000, "127.0.0.1", [("127.0.0.1", 8000)]),
        ("ss-nginx-and-stub.txt", 22, "10.0.0.5", [("::", 22)]),  # wildcard listener
        ("ss-nginx-and-stub.txt", 9100, "127.0.0.1", [("*", 9100)]),
        ("ss-port-taken.txt", 443, "0.0.0.0", [("0.0.0.0", 443)]),
        ("ss-port-taken.txt", 8443, "0.0.0.0", []),
        ("ss-no-process.txt", 2024, "0.0.0.0", [("0.0.0.0", 2024)]),  # unknown owner counts
    ],
)
def test_port_conflicts(fixture, port, address, expected):
    got = gw.port_conflicts(ss(fixture), port, address)
    assert [(item["address"], item["port"]) for item in got] == expected


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [("0.0.0.0", "10.0.0.1", True), ("::", "127.0.0.1", True), ("*", "x", True),
     ("127.0.0.1", "127.0.0.1", True), ("127.0.0.1", "10.0.0.1", False)],
)
def test_addresses_overlap(a, b, overlap):
    assert gw.addresses_overlap(a, b) is overlap


def test_describe_conflicts():
    assert gw.describe_conflicts(gw.port_conflicts(ss("ss-port-taken.txt"), 443, "0.0.0.0")) == (
        "0.0.0.0:443 by python3 (pid 4242)"
    )
    assert gw.describe_conflicts(ss("ss-no-process.txt")) == "0.0.0.0:2024 by an unknown process"

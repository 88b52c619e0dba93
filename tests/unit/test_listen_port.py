"""Unit tests of module_utils/listen_port.py and library/listen_port.py (who holds a TCP port)."""

from __future__ import annotations

import importlib.util
import json
import socket
import sys

import pytest
from conftest import LIBRARY, MODULE_UTILS

if str(MODULE_UTILS) not in sys.path:
    sys.path.insert(0, str(MODULE_UTILS))

import listen_port as lp  # noqa: E402

# Real `ss -Hltnp` output (Debian 12, iproute2 6.1): IPv4, IPv6, wildcard, zone index, no process.
SS = """\
LISTEN 0      4096   127.0.0.53%lo:53        0.0.0.0:*    users:(("systemd-resolve",pid=512,fd=14))
LISTEN 0      128          0.0.0.0:22        0.0.0.0:*    users:(("sshd",pid=701,fd=3))
LISTEN 0      511        127.0.0.1:8000      0.0.0.0:*    users:(("python3",pid=2402,fd=3),("python3",pid=2410,fd=3))
LISTEN 0      511          0.0.0.0:443       0.0.0.0:*    users:(("nginx",pid=900,fd=6),("nginx",pid=901,fd=6))
LISTEN 0      128             [::]:22           [::]:*    users:(("sshd",pid=701,fd=4))
LISTEN 0      5              [::1]:9090         [::]:*
LISTEN 0      4096               *:9100            *:*    users:(("node_exporter",pid=333,fd=3))
"""

CGROUPS = {
    512: "0::/system.slice/systemd-resolved.service\n",
    701: "0::/system.slice/ssh.service\n",
    2402: "0::/system.slice/system-llm\\x2donprem.slice/llm-onprem@main.service\n",
    2410: "0::/system.slice/system-llm\\x2donprem.slice/llm-onprem@main.service\n",
    900: "12:pids:/system.slice/nginx.service\n1:name=systemd:/system.slice/nginx.service\n0::/system.slice/nginx.service\n",
    901: "0::/system.slice/nginx.service\n",
    333: "0::/user.slice/user-1000.slice/session-4.scope\n",
}


@pytest.mark.parametrize("local, expected", [
    ("127.0.0.1:8000", ("127.0.0.1", 8000)),
    ("[::1]:9090", ("::1", 9090)),
    ("[::]:22", ("::", 22)),
    ("*:9100", ("*", 9100)),
    ("127.0.0.53%lo:53", ("127.0.0.53", 53)),
    ("[fe80::1%eth0]:8080", ("fe80::1", 8080)),
])
def test_split_address(local, expected):
    assert lp.split_address(local) == expected


@pytest.mark.parametrize("bad", ["127.0.0.1", "127.0.0.1:http", ""])
def test_split_address_rejects(bad):
    with pytest.raises(ValueError):
        lp.split_address(bad)


def test_parse_ss_rows_and_processes():
    rows = lp.parse_ss(SS + "State  Recv-Q Send-Q Local Peer\n\n")
    assert len(rows) == 7
    assert rows[2] == {"address": "127.0.0.1", "port": 8000, "processes": [
        {"name": "python3", "pid": 2402, "fd": 3}, {"name": "python3", "pid": 2410, "fd": 3}]}
    assert rows[5] == {"address": "::1", "port": 9090, "processes": []}
    assert rows[0]["address"] == "127.0.0.53"


@pytest.mark.parametrize("a, b, expected", [
    ("127.0.0.1", "127.0.0.1", True),
    ("127.0.0.1", "0.0.0.0", True),
    ("0.0.0.0", "10.0.0.5", True),
    ("::", "127.0.0.1", True),
    ("*", "::1", True),
    ("127.0.0.1", "::1", False),
    ("127.0.0.1", "10.0.0.5", False),
    # IPv4-mapped IPv6 sockets: '::ffff:0.0.0.0' holds every IPv4 address.
    ("::ffff:0.0.0.0", "10.0.0.5", True),
    ("0.0.0.0", "::ffff:127.0.0.1", True),
    ("::ffff:127.0.0.1", "127.0.0.1", True),
    ("::ffff:127.0.0.1", "10.0.0.5", False),
])
def test_overlaps(a, b, expected):
    assert lp.overlaps(a, b) is expected


@pytest.mark.parametrize("text, unit", [
    ("0::/system.slice/nginx.service\n", "nginx.service"),
    ("12:pids:/system.slice/nginx.service\n0::/\n", "nginx.service"),
    ("0::/user.slice/user-1000.slice/session-4.scope\n", "session-4.scope"),
    ("0::/system.slice/system-llm\\x2donprem.slice/llm-onprem@a.service/init.scope\n", "init.scope"),
    ("0::/\n", None),
    ("", None),
])
def test_unit_of_cgroup(text, unit):
    assert lp.unit_of_cgroup(text) == unit


@pytest.mark.parametrize("port, address, allowed, owners, conflicting", [
    # Free port.
    (8001, "127.0.0.1", [], [], []),
    # Held by the unit the role manages: not a conflict.
    (8000, "127.0.0.1", ["llm-onprem@main.service"], [2402, 2410], []),
    # The same port held by another instance: conflict.
    (8000, "127.0.0.1", ["llm-onprem@canary.service"], [2402, 2410], [2402, 2410]),
    # A wildcard bind collides with the loopback listener.
    (8000, "0.0.0.0", ["llm-onprem@main.service"], [2402, 2410], []),
    # nginx on 0.0.0.0:443 collides with a loopback bind, allowed when nginx is ours.
    (443, "127.0.0.1", ["nginx.service"], [900, 901], []),
    (443, "127.0.0.1", [], [900, 901], [900, 901]),
    # Something in a login session (not a service): always a conflict.
    (9100, "127.0.0.1", ["node_exporter.service"], [333], [333]),
    # A listener ss could not attribute: a conflict with pid None.
    (9090, "::1", ["anything.service"], [None], [None]),
    # IPv4 loopback vs IPv6 loopback: no collision.
    (9090, "127.0.0.1", [], [], []),
])
def test_port_owners_and_conflicts(port, address, allowed, owners, conflicting):
    found = lp.port_owners(lp.parse_ss(SS), port, address, CGROUPS.get)
    assert [o["pid"] for o in found] == owners
    assert [o["pid"] for o in lp.conflicts(found, allowed)] == conflicting


# Real ss lines (Debian 12) for IPv6 sockets bound to IPv4-mapped addresses.
SS_MAPPED = """\
LISTEN 0      128      [::ffff:0.0.0.0]:443         *:* users:(("python3",pid=4242,fd=3))
LISTEN 0      128    [::ffff:127.0.0.1]:8000        *:* users:(("python3",pid=4243,fd=4))
"""


@pytest.mark.parametrize("port, address, owners", [
    (443, "0.0.0.0", [4242]),
    (443, "10.0.0.5", [4242]),
    (8000, "127.0.0.1", [4243]),
    (8000, "10.0.0.5", []),
])
def test_ipv4_mapped_listeners(port, address, owners):
    rows = lp.parse_ss(SS_MAPPED)
    assert [r["address"] for r in rows] == ["::ffff:0.0.0.0", "::ffff:127.0.0.1"]
    found = lp.port_owners(rows, port, address, lambda pid: None)
    assert [o["pid"] for o in found] == owners
    assert lp.conflicts(found, ["nginx.service"]) == found


def test_owner_whose_process_is_gone_is_a_conflict():
    found = lp.port_owners(lp.parse_ss(SS), 22, "0.0.0.0", lambda pid: None)
    assert {o["unit"] for o in found} == {None}
    assert len(lp.conflicts(found, ["ssh.service"])) == 2


@pytest.mark.parametrize("owner, text", [
    ({"address": "0.0.0.0", "pid": 900, "name": "nginx", "unit": "nginx.service"}, "nginx (pid 900, unit nginx.service) on 0.0.0.0"),
    ({"address": "::1", "pid": 5, "name": "x", "unit": None}, "x (pid 5) on ::1"),
    ({"address": "::1", "pid": None, "name": None, "unit": None}, "an unidentified process on ::1"),
])
def test_describe(owner, text):
    assert lp.describe(owner) == text


def _run_module(args, capsys):
    from ansible.module_utils.testing import patch_module_args

    sys.modules["ansible.module_utils.listen_port"] = lp
    spec = importlib.util.spec_from_file_location("listen_port_module", LIBRARY / "listen_port.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with patch_module_args(dict(args, _ansible_check_mode=True)), pytest.raises(SystemExit):
        mod.main()
    return json.loads(capsys.readouterr().out)


def test_module_sees_a_real_listener(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        res = _run_module({"port": port, "address": "127.0.0.1"}, capsys)
    assert res["changed"] is False and res["free"] is False
    assert len(res["conflicts"]) == 1 and res["conflicts"][0]["address"] == "127.0.0.1"
    assert "127.0.0.1" in res["conflict_summary"][0]
    # The same socket, closed: the port is free.
    res = _run_module({"port": port, "address": "127.0.0.1"}, capsys)
    assert res["free"] is True and res["conflicts"] == []


def test_module_rejects_a_bad_port(capsys):
    res = _run_module({"port": 70000}, capsys)
    assert res["failed"] is True and "70000" in res["msg"]

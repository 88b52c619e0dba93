"""Who listens on a TCP port: parse `ss -Hltnp` and map PIDs to systemd units.

Pure functions used by library/listen_port.py; the unit tests call them directly.
A role asks before it configures a service on a port: is the port free, or held
only by the units this role manages? Anything else (another program, a process
ss could not name) is a conflict the operator has to resolve.
"""

from __future__ import annotations

import re

# users:(("python3",pid=2402,fd=3),("nginx",pid=77,fd=6))
_PROCESS = re.compile(r'\("((?:[^"\\]|\\.)*)",pid=(\d+),fd=(\d+)\)')
# '::ffff:0.0.0.0' is an IPv6 socket bound to every IPv4 address (ss prints it so).
WILDCARDS = frozenset({"*", "0.0.0.0", "::", "::ffff:0.0.0.0"})
_MAPPED = re.compile(r"^::ffff:(\d+\.\d+\.\d+\.\d+)$", re.IGNORECASE)


def split_address(local):
    """'127.0.0.1:8000', '[::1]:8000', '*:80', '127.0.0.53%lo:53' -> (host, port)."""
    host, sep, port = local.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not an address:port: {local!r}")
    host = host.strip("[]").split("%", 1)[0]
    return host or "*", int(port)


def parse_ss(text):
    """Rows of `ss -Hltnp` (no header): [{address, port, processes: [{name, pid, fd}]}]."""
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] != "LISTEN":
            continue
        host, port = split_address(fields[3])
        processes = [{"name": m.group(1), "pid": int(m.group(2)), "fd": int(m.group(3))}
                     for m in _PROCESS.finditer(line)]
        rows.append({"address": host, "port": port, "processes": processes})
    return rows


def overlaps(a, b):
    """Would binding one of these addresses collide with the other on the same port?

    An IPv4-mapped IPv6 address ('::ffff:127.0.0.1') is its IPv4 address: Linux
    refuses a bind to 127.0.0.1 while an IPv6 socket holds '::ffff:127.0.0.1'.
    """
    a, b = _MAPPED.sub(r"\1", a), _MAPPED.sub(r"\1", b)
    return a == b or a in WILDCARDS or b in WILDCARDS


def unit_of_cgroup(text):
    """The systemd unit (service or scope) named in /proc/PID/cgroup, or None."""
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        for part in reversed(path.split("/")):
            if part.endswith((".service", ".scope")):
                return part
    return None


def port_owners(rows, port, address, read_cgroup):
    """Processes listening on port at an address that collides with address.

    read_cgroup(pid) returns the text of /proc/PID/cgroup or None (process gone,
    no permission). A listener ss could not attribute to a process is reported
    with pid None, so it counts as a conflict.
    """
    owners = []
    for row in rows:
        if row["port"] != port or not overlaps(row["address"], address):
            continue
        if not row["processes"]:
            owners.append({"address": row["address"], "pid": None, "name": None, "unit": None})
        for proc in row["processes"]:
            text = read_cgroup(proc["pid"])
            owners.append({"address": row["address"], "pid": proc["pid"], "name": proc["name"],
                           "unit": unit_of_cgroup(text) if text else None})
    return owners


def conflicts(owners, allowed_units):
    """Owners that are not one of allowed_units (unknown units always conflict)."""
    allowed = set(allowed_units)
    return [o for o in owners if o["unit"] is None or o["unit"] not in allowed]


def describe(owner):
    """'python3 (pid 2402, unit user-1.scope) on 127.0.0.1' for error messages."""
    if owner["pid"] is None:
        return f"an unidentified process on {owner['address']}"
    unit = f", unit {owner['unit']}" if owner["unit"] else ""
    return f"{owner['name']} (pid {owner['pid']}{unit}) on {owner['address']}"

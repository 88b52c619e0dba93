#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: listen_port
short_description: Tell who listens on a TCP port, and whether that blocks a service
description:
  - Runs C(ss -Hltnp) and reports the processes listening on I(port) at an address that
    collides with I(address) (the same address, or a wildcard on either side), with the
    systemd unit each process belongs to (from C(/proc/PID/cgroup)).
  - Listeners that belong to one of I(allowed_units) (the units the calling role manages)
    are not conflicts. Everything else is, including a listener C(ss) cannot attribute.
  - Read-only; never fails because of a conflict; the calling role asserts on C(conflicts)
    and names the variable to change.
version_added: "1.0.0"
author: llm-onprem maintainers
options:
  port:
    description: TCP port.
    type: int
    required: true
  address:
    description: Address the service will bind (C(0.0.0.0) or C(::) for all).
    type: str
    default: 0.0.0.0
  allowed_units:
    description: systemd units (e.g. C(llm-onprem@main.service), C(nginx.service)) allowed to hold the port.
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Check that port 8000 is free or ours
  listen_port:
    port: 8000
    address: 127.0.0.1
    allowed_units: [llm-onprem@main.service]
  register: __port
"""

RETURN = r"""
owners:
  description: Processes listening on the port at a colliding address.
  returned: always
  type: list
  elements: dict
  sample: [{"address": "127.0.0.1", "pid": 2402, "name": "python3", "unit": "ssh.service"}]
conflicts:
  description: The owners that are not in allowed_units.
  returned: always
  type: list
  elements: dict
conflict_summary:
  description: One line per conflict, for error messages.
  returned: always
  type: list
  elements: str
free:
  description: Nobody listens on the port at a colliding address.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.listen_port import conflicts, describe, parse_ss, port_owners


def read_cgroup(pid):
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None


def main():
    module = AnsibleModule(argument_spec={
        "port": {"type": "int", "required": True},
        "address": {"type": "str", "default": "0.0.0.0"},
        "allowed_units": {"type": "list", "elements": "str", "default": []},
    }, supports_check_mode=True)
    port = module.params["port"]
    if not 1 <= port <= 65535:
        module.fail_json(msg=f"port {port} is not in 1-65535")
    ss = module.get_bin_path("ss", required=True)
    rc, out, err = module.run_command([ss, "-Hltnp"], environ_update={"LC_ALL": "C"})
    if rc != 0:
        module.fail_json(msg="ss -Hltnp failed; is iproute2 installed?", rc=rc, stdout=out, stderr=err)
    owners = port_owners(parse_ss(out), port, module.params["address"], read_cgroup)
    found = conflicts(owners, module.params["allowed_units"])
    module.exit_json(changed=False, owners=owners, conflicts=found, free=not owners,
                     conflict_summary=[describe(o) for o in found])


if __name__ == "__main__":
    main()

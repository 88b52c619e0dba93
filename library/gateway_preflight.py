#!/usr/bin/python
# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module gateway_preflight: checks the gateway role makes before changing a host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gateway_preflight
short_description: Check the gateway's port and firewall networks before anything changes
description:
  - Reads the listening TCP sockets with C(ss -H -ltnp) (argv, C(LC_ALL=C)) and fails
    when another program than nginx listens on the gateway's port at an overlapping address.
  - Checks each list of networks in O(networks) (CIDR notation, IPv4 or IPv6) and returns
    them split into IPv4 and IPv6 lists for the nftables ruleset.
  - With O(ssh_client), fails unless that address is inside the networks named by
    O(ssh_networks_variable), so the firewall cannot lock the running play out.
  - Read-only; it never changes the host. The logic lives in C(module_utils/gateway.py).
version_added: "1.0.0"
author:
  - llm-onprem contributors
options:
  port:
    description: TCP port the gateway will listen on.
    type: int
    required: true
  listen_address:
    description: Address the gateway will listen on (C(0.0.0.0) for every IPv4 address).
    type: str
    default: 0.0.0.0
  owners:
    description: Program names whose listeners on the port are the gateway itself (not a conflict).
    type: list
    elements: str
    default: [nginx]
  port_variable:
    description: Variable name the port error message tells the operator to change.
    type: str
    default: gateway_port
  networks:
    description: Lists of networks to check, keyed by the variable name used in error messages.
    type: dict
    default: {}
  ssh_client:
    description: Address of the controller as the host sees it (the first field of C(SSH_CONNECTION)); empty to skip.
    type: str
    default: ""
  ssh_networks_variable:
    description: Key of O(networks) that must contain O(ssh_client).
    type: str
    default: gateway_ssh_allowed_networks
attributes:
  check_mode:
    support: full
    description: The module only reads; it runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
"""

EXAMPLES = r"""
- name: Check the port and the networks before any change
  gateway_preflight:
    port: 443
    listen_address: 0.0.0.0
    networks:
      gateway_allowed_networks: [10.0.0.0/8, "fd00::/8"]
      gateway_ssh_allowed_networks: [10.1.0.0/16]
    ssh_client: 10.1.2.3
  register: gateway_checks
"""

RETURN = r"""
networks:
  description: Each checked list split by family, keyed like O(networks).
  returned: always
  type: dict
  sample: {"gateway_allowed_networks": {"ipv4": ["10.0.0.0/8"], "ipv6": ["fd00::/8"]}}
listeners:
  description: Listeners on O(port) (address, port, processes with name and pid), the gateway's own included.
  returned: always
  type: list
  elements: dict
conflicts:
  description: Listeners on O(port) owned by other programs (the task fails when there are any).
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gateway import (
    address_allowed,
    describe_conflicts,
    parse_networks,
    parse_ss_listeners,
    port_conflicts,
)

C_LOCALE = {"LC_ALL": "C", "LANG": "C"}


def main():
    module = AnsibleModule(
        argument_spec={
            "port": {"type": "int", "required": True},
            "listen_address": {"type": "str", "default": "0.0.0.0"},
            "owners": {"type": "list", "elements": "str", "default": ["nginx"]},
            "port_variable": {"type": "str", "default": "gateway_port"},
            "networks": {"type": "dict", "default": {}},
            "ssh_client": {"type": "str", "default": ""},
            "ssh_networks_variable": {"type": "str", "default": "gateway_ssh_allowed_networks"},
        },
        supports_check_mode=True,
    )
    p = module.params
    result = {"changed": False, "networks": {}, "listeners": [], "conflicts": []}

    problems = []
    for name, items in sorted(p["networks"].items()):
        ipv4, ipv6, errors = parse_networks(items)
        result["networks"][name] = {"ipv4": ipv4, "ipv6": ipv6}
        problems.extend(f"{name}: {error}" for error in errors)
    if problems:
        module.fail_json(msg="Fix these networks in the inventory (nothing was changed): " + "; ".join(problems), **result)

    if p["ssh_client"]:
        ssh_nets = p["networks"].get(p["ssh_networks_variable"], [])
        if not address_allowed(p["ssh_client"], ssh_nets):
            module.fail_json(
                msg=(f"This play connects over SSH from {p['ssh_client']}, which is not in "
                     f"{p['ssh_networks_variable']} ({', '.join(map(str, ssh_nets)) or 'empty'}): the firewall "
                     f"would lock Ansible out. Add the admin network to {p['ssh_networks_variable']}. "
                     "Nothing was changed."), **result)

    ss = module.get_bin_path("ss", required=True)
    rc, out, err = module.run_command([ss, "-H", "-ltnp"], environ_update=C_LOCALE, check_rc=False)
    if rc != 0:
        module.fail_json(msg="Cannot list the listening sockets with ss -H -ltnp (iproute2).", rc=rc,
                         stdout=out, stderr=err, **result)
    listeners = parse_ss_listeners(out)
    result["listeners"] = [item for item in listeners if item["port"] == p["port"]]
    result["conflicts"] = port_conflicts(listeners, p["port"], p["listen_address"], p["owners"])
    if result["conflicts"]:
        module.fail_json(
            msg=(f"Port {p['port']} on {p['listen_address']} is already in use by another program: "
                 f"{describe_conflicts(result['conflicts'])}. Stop that program or choose another "
                 f"{p['port_variable']}. Nothing was changed."), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

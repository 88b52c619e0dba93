#!/usr/bin/python
# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module gateway_preflight: checks the gateway role makes before changing a host."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gateway_preflight
short_description: Check the gateway's firewall networks and the play's SSH address before anything changes
description:
  - Checks each list of networks in O(networks) (CIDR notation, IPv4 or IPv6) and returns
    them split into IPv4 and IPv6 lists for the nftables ruleset.
  - With O(ssh_client), fails unless that address is inside the networks named by
    O(ssh_networks_variable), so the firewall cannot lock the running play out.
  - Only checks its arguments; it never changes the host. The logic lives in C(module_utils/gateway.py).
  - Whether the gateway's port is free is the C(listen_port) module's check.
version_added: "1.0.0"
author:
  - llm-onprem contributors
options:
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
- name: Check the networks before any change
  gateway_preflight:
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
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.gateway import address_allowed, parse_networks


def main():
    module = AnsibleModule(
        argument_spec={
            "networks": {"type": "dict", "default": {}},
            "ssh_client": {"type": "str", "default": ""},
            "ssh_networks_variable": {"type": "str", "default": "gateway_ssh_allowed_networks"},
        },
        supports_check_mode=True,
    )
    p = module.params
    result = {"changed": False, "networks": {}}

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

    module.exit_json(**result)


if __name__ == "__main__":
    main()

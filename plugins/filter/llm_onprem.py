# Copyright: llm-onprem contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the inventory checks that run on the control node, before any host is contacted,
and of the gateway's routing by model name.

Thin adapters: the logic is in module_utils/inventory_checks.py, module_utils/site_tls.py and
module_utils/gateway.py (unit-tested there). Each role's tasks/validate_inventory.yml uses them; the roles reach this
file through their filter_plugins link (roles/<role>/filter_plugins -> ../../plugins/filter),
so a role run alone (molecule) finds them as well as site.yml's first play.

- ``values | llm_onprem_inventory_errors(role, inventory_dir, group)``: a list of messages,
  one per mistake, each naming the variable, its value (secrets by length only), what is
  allowed and the inventory file to edit.
- ``llm_service_instances | llm_onprem_planner_instances``: the instances as the sizing
  planner takes them (module_utils/llm_host_plan.py), each sizing_model path read here.
- ``cert_file | llm_onprem_site_tls_errors(key_file, hosts)``: what is wrong with a site
  certificate chain and key on the control node (missing, unreadable, key of another
  certificate, expired, names not covering the hosts); never the key itself.
- ``upstreams | llm_onprem_gateway_pools(instances)``: gateway_upstreams grouped by the
  model each serves (its ``model``, else the served_model_name of the llm_service_instances
  entry on its loopback port); ``pools | llm_onprem_gateway_routes``: the njs router's table.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

_MODULE_UTILS = str(Path(__file__).resolve().parents[2] / "module_utils")
if _MODULE_UTILS not in sys.path:
    sys.path.insert(0, _MODULE_UTILS)

import gateway  # noqa: E402
import inventory_checks  # noqa: E402
import llm_host_plan  # noqa: E402
import site_tls  # noqa: E402


def llm_onprem_inventory_errors(values, role, inventory_dir=None, group=None):
    return inventory_checks.inventory_errors(values, role, inventory_dir, group)


def llm_onprem_planner_instances(instances):
    def load_config(path):
        with open(os.path.expanduser(path), encoding="utf-8") as handle:
            return json.load(handle)
    return llm_host_plan.planner_instances(instances, load_config)


def llm_onprem_site_tls_errors(cert_file, key_file, hosts):
    return site_tls.check_site_tls(cert_file, key_file, list(hosts or []))


def llm_onprem_gateway_pools(upstreams, instances=None):
    return gateway.model_pools(upstreams, instances)


def llm_onprem_gateway_routes(pools):
    return gateway.model_routes(pools)


class FilterModule:
    """llm-onprem's inventory check and gateway routing filters."""

    def filters(self):
        return {
            "llm_onprem_inventory_errors": llm_onprem_inventory_errors,
            "llm_onprem_site_tls_errors": llm_onprem_site_tls_errors,
            "llm_onprem_planner_instances": llm_onprem_planner_instances,
            "llm_onprem_gateway_pools": llm_onprem_gateway_pools,
            "llm_onprem_gateway_routes": llm_onprem_gateway_routes,
        }

# llm-onprem: podman connection with pipelining, for local test hosts (molecule
# scenarios, the demo, cached stage images).
#
# containers.podman.podman runs `podman exec` without --interactive, so the
# module's source cannot travel on stdin and every task costs a temporary
# directory, a copy, a chmod and a clean-up (four podman calls, about 1 s a
# task on a 2-core machine). This plugin keeps that plugin's behaviour for
# files and adds --interactive when Ansible pipes a module: one podman call a
# task (about 0.4 s measured). Nothing else differs.
from __future__ import annotations

import os
import shlex

from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.connection import ConnectionBase, ensure_connect
from ansible_collections.containers.podman.plugins.connection.podman import Connection as PodmanConnection

DOCUMENTATION = r"""
name: podman_pipelined
short_description: Run tasks in a local podman container, with pipelining
description:
  - The containers.podman.podman connection, with modules piped to the container's Python through
    C(podman exec --interactive) instead of copied to a temporary file for each task.
  - Files (copy, template, fetch) travel as with containers.podman.podman, through the container's
    mounted root file system or C(podman cp).
  - Used by the test harness and the demo site; real sites connect over SSH.
author: llm-onprem
options:
  remote_addr:
    description: Name or ID of the running container.
    default: inventory_hostname
    vars:
      - name: ansible_host
      - name: inventory_hostname
      - name: ansible_podman_host
  remote_user:
    description: User (name or UID) that runs the commands inside the container; unset is the container's default.
    ini:
      - section: defaults
        key: remote_user
    env:
      - name: ANSIBLE_REMOTE_USER
    vars:
      - name: ansible_user
  podman_extra_args:
    description: Extra arguments for every podman call, before the subcommand's own.
    default: ""
    vars:
      - name: ansible_podman_extra_args
    env:
      - name: ANSIBLE_PODMAN_EXTRA_ARGS
  podman_containers_conf:
    description:
      - A containers.conf for every podman call (exported as C(CONTAINERS_CONF) unless that is set already),
        such as the one the test harness writes where podman needs changes on this machine
        (C(.cache/podman/containers.conf)). Ignored when the file does not exist.
      - Podman reads the OCI runtime of an existing container from it, so C(podman exec) fails without the
        configuration the container was started with.
    default: ""
    vars:
      - name: ansible_podman_containers_conf
  podman_executable:
    description: The podman program (a name on PATH or a path).
    default: podman
    vars:
      - name: ansible_podman_executable
    env:
      - name: ANSIBLE_PODMAN_EXECUTABLE
  pipelining:
    description:
      - Pipe modules to the container's Python instead of copying them first (the point of this plugin).
      - No become method is involved in these test hosts, so pipelining is safe to default on.
    type: boolean
    default: true
    env:
      - name: ANSIBLE_PIPELINING
    vars:
      - name: ansible_pipelining
"""


class Connection(PodmanConnection):
    """containers.podman.podman with stdin passed through to the command."""

    transport = "podman_pipelined"
    has_pipelining = True

    @ensure_connect
    def exec_command(self, cmd, in_data=None, sudoable=False):
        """Run cmd in the container; in_data (a piped module) goes to its stdin."""
        ConnectionBase.exec_command(self, cmd, in_data=in_data, sudoable=sudoable)
        args = ["exec"]
        if in_data is not None:
            args.append("--interactive")
        if self.user:
            args.extend(("--user", self.user))
        return self._podman(args, shlex.split(to_native(cmd, errors="surrogate_or_strict")), in_data)

    def _podman(self, cmd, cmd_args=None, in_data=None, use_container_id=True):
        """Every podman call with the configured containers.conf (podman_containers_conf)."""
        conf = self.get_option("podman_containers_conf")
        if conf and os.path.isfile(conf) and "CONTAINERS_CONF" not in os.environ:
            os.environ["CONTAINERS_CONF"] = conf
        return super()._podman(cmd, cmd_args, in_data, use_container_id)

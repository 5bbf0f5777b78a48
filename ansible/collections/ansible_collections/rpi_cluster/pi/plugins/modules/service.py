#!/usr/bin/python
# -*- coding: utf-8 -*-
# Record or remove a service on the node a play runs against.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: service
short_description: Record or remove a service on an rpi-cluster node
version_added: 1.0.0
description:
  - Records that the node runs a service (C(PUT /v1/services/NAME) on its
    agent) or removes it (C(DELETE)). The cluster learns it by gossip, so the
    node joins the service's inventory group and C(rpi-inventory --list),
    C(rpi-meta) and the status page show it.
  - "Only the node's own agent changes the node's services, so I(agent) must
    be the agent of the host the task runs for. The module runs on that host,
    so the default, the agent on C(localhost), is right on a Pi; from a
    workstation (C(connection: local)) give the node's agent URL."
  - Reports changed only when the node's services changed. Check mode asks
    the agent (C(GET /v1/self)) and writes nothing.
options:
  name:
    description: The service, as the cluster names it (C(^[a-z0-9][a-z0-9_.-]{0,62}$)).
    type: str
    required: true
    aliases: [service]
  state:
    description: C(present) records the service on the node, C(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  agent:
    description:
      - The node's agent, a URL (C(http://127.0.0.1:8080)), C(host:port) or a
        host (port 8080).
      - From the collection's inventory plugin, C("http://{{ ansible_host }}:{{ rpi_http_port }}").
    type: str
    default: http://localhost:8080
  token:
    description:
      - The cluster's API token (C(api_token) in the agent's config); writes
        need it when the cluster has one. Falls back to C(RPI_TOKEN) in the
        environment the module runs in.
    type: str
  node:
    description:
      - The node name the agent must answer as. When set, the module fails
        rather than change another node than the one meant (an agent URL
        pointing at the wrong Pi).
    type: str
  timeout:
    description: Seconds to wait for the agent.
    type: int
    default: 10
  validate_certs:
    description: Check the TLS certificate of an C(https) agent.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author:
  - rpi-cluster maintainers
"""

EXAMPLES = r"""
- name: Install nginx and record it
  hosts: alive
  become: true
  tasks:
    - name: Install nginx
      ansible.builtin.apt:
        name: nginx
    - name: Record the service, so the node joins group nginx
      rpi_cluster.pi.service:
        name: nginx
        token: "{{ rpi_token }}"

- name: From the workstation, through each node's agent
  hosts: web
  connection: local
  gather_facts: false
  tasks:
    - name: Retire the service
      rpi_cluster.pi.service:
        name: web.api-v2
        state: absent
        agent: "http://{{ ansible_host }}:{{ rpi_http_port }}"
        node: "{{ inventory_hostname }}"
        token: "{{ lookup('ansible.builtin.env', 'RPI_TOKEN') }}"
"""

RETURN = r"""
node:
  description: The node the agent answered as.
  returned: always
  type: str
  sample: pi-1
service:
  description: The service.
  returned: always
  type: str
  sample: nginx
services:
  description: The node's services after the task (as they would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [nginx, web.api-v2]
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.urls import fetch_url

from ansible_collections.rpi_cluster.pi.plugins.module_utils import rpi


def request(module, method, url, token):
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    resp, info = fetch_url(module, url, method=method, headers=headers,
                           timeout=module.params["timeout"])
    body = resp.read() if resp is not None else info.get("body", b"")
    status = info.get("status", -1)
    try:
        data = json.loads(to_text(body)) if body else None
    except ValueError:
        data = None
    if status == 401:
        module.fail_json(msg="%s %s: the agent wants the cluster's API token: set token (api_token in the "
                             "agent's config) or RPI_TOKEN" % (method, url))
    if status < 200 or status > 299:
        why = data.get("error") if isinstance(data, dict) and data.get("error") else info.get("msg", "")
        module.fail_json(msg="%s %s: %s %s" % (method, url, status, why), status=status)
    if not isinstance(data, dict):
        module.fail_json(msg="%s %s: the answer is not a JSON object; is %s an rpi-agent?"
                             % (method, url, module.params["agent"]))
    return data


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True, aliases=["service"]),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            agent=dict(type="str", default="http://localhost:8080"),
            token=dict(type="str", no_log=True),
            node=dict(type="str"),
            timeout=dict(type="int", default=10),
            validate_certs=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    service = p["name"]
    err = rpi.service_name_error(service)
    if err:
        module.fail_json(msg="rpi_cluster.pi.service: %s" % err)
    try:
        base = rpi.normalize_url(p["agent"])
    except ValueError as e:
        module.fail_json(msg="rpi_cluster.pi.service: %s" % e)
    token = p["token"] or os.environ.get("RPI_TOKEN", "")
    present = p["state"] == "present"

    self_node = request(module, "GET", base + "/v1/self", token)
    name = self_node.get("name", "")
    if p["node"] and name != p["node"]:
        module.fail_json(msg="rpi_cluster.pi.service: the agent at %s is node %s, not %s: point agent at %s's agent"
                             % (base, rpi.quote(to_text(name)), rpi.quote(p["node"]), p["node"]))
    before = sorted(self_node.get("services") or [])
    if (service in before) == present:
        module.exit_json(changed=False, node=name, service=service, services=before)

    if module.check_mode:
        after = sorted(before + [service]) if present else [s for s in before if s != service]
        module.exit_json(changed=True, node=name, service=service, services=after,
                         diff=dict(before={"services": before}, after={"services": after}))

    res = request(module, "PUT" if present else "DELETE", base + "/v1/services/" + service, token)
    after = sorted(res.get("services") or [])
    changed = bool(res.get("changed"))
    result = dict(changed=changed, node=res.get("node", name), service=service, services=after)
    if changed:
        result["diff"] = dict(before={"services": before}, after={"services": after})
    module.exit_json(**result)


if __name__ == "__main__":
    main()

# -*- coding: utf-8 -*-
# The live rpi-cluster as an Ansible inventory, read from an agent's HTTP API.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: agent
short_description: The live rpi-cluster, from an rpi-agent's HTTP API
version_added: 1.0.0
description:
  - Asks an rpi-agent for the members it knows (C(GET /v1/nodes)) and makes
    them an inventory with the hosts, groups and variables C(rpi-inventory --list)
    gives.
  - "Groups: C(alive), C(suspect), C(failed), C(left), always present, and one
    per service holding the alive nodes that run it. C(.) and C(-) in a service
    name become C(_), and a service whose group would be C(all), C(ungrouped), a
    status or start with a digit gets the prefix C(service_)."
  - Nodes whose name, address or services break the cluster's name rules,
    nodes named twice in one answer and nodes named like a group are left out
    with a warning, as the workstation tools leave them out.
  - "The file must be named C(*rpi.yml), C(*rpi.yaml), C(*rpi_cluster.yml) or
    C(*rpi_cluster.yaml) and say C(plugin: rpi_cluster.pi.agent)."
  - A node that carries a signed record is left out unless the record's
    ed25519 signature verifies against the key it carries, names the node,
    gives its address and carries the key the agent vouches for, as the
    workstation tools do (needs the Python package C(cryptography), which
    ansible-core requires).
  - With I(known_nodes), the identity keys C(rpi-inventory) pinned are
    checked too, read-only; the plugin pins nothing itself. Run
    C(rpi-inventory --list) once to pin the keys of a new cluster.
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: The name of this plugin; makes the file this plugin's.
    required: true
    type: str
    choices: [rpi_cluster.pi.agent]
  agents:
    description:
      - Agents to ask, tried in order until one answers. Each is a URL
        (C(http://192.168.1.20:8080)), C(host:port) or a host (port 8080).
      - Comma-separated values are split, as C(RPI_AGENT) is by the tools.
    type: list
    elements: str
    required: true
    env:
      - name: RPI_AGENT
  token:
    description:
      - The cluster's API token, sent as a bearer token. Reading the member
        list does not need it; an agent behind a proxy that asks for one does.
    type: str
    env:
      - name: RPI_TOKEN
  user:
    description: C(ansible_user) of every host.
    type: str
    default: pi
  ssh_key:
    description: C(ansible_ssh_private_key_file) of every host; unset leaves it out.
    type: str
  known_hosts:
    description:
      - A known_hosts file written by C(rpi-inventory known-hosts). When set,
        every host gets C(ansible_ssh_common_args) pointing ssh at it with
        strict host-key checking.
    type: str
  known_nodes:
    description:
      - The workstation's pinned node identity keys, C(known_nodes.json)
        beside the workstation config (C(~/.config/rpi-cluster/known_nodes.json)),
        as C(rpi-inventory) writes it. A node offering another key than its pin
        fails the inventory, naming both fingerprints and the fix; a pinned node
        reported without a signed record is left out. Unset checks records only.
    type: path
  timeout:
    description: Seconds to wait for each agent.
    type: int
    default: 10
  validate_certs:
    description: Check the TLS certificate of an C(https) agent.
    type: bool
    default: true
"""

EXAMPLES = r"""
# cluster.rpi.yml -- ansible-inventory -i cluster.rpi.yml --graph
plugin: rpi_cluster.pi.agent
agents:
  - http://192.168.1.20:8080
  - http://192.168.1.21:8080
known_hosts: ~/.ssh/known_hosts.rpi
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/rpi-cluster-inventory
cache_timeout: 30
# Group by board and architecture; a variable for each host's agent URL.
keyed_groups:
  - key: rpi_model
    prefix: model
  - key: rpi_arch
    prefix: arch
compose:
  rpi_agent_url: "'http://' + ansible_host + ':' + (rpi_http_port | string)"
groups:
  idle: rpi_busy_score < 0.5
"""

import base64
import json

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.module_utils.urls import open_url
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

from ansible_collections.rpi_cluster.pi.plugins.module_utils import rpi


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):

    NAME = "rpi_cluster.pi.agent"

    def verify_file(self, path):
        if not super(InventoryModule, self).verify_file(path):
            return False
        return path.endswith(("rpi.yml", "rpi.yaml", "rpi_cluster.yml", "rpi_cluster.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._read_config_data(path)

        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        update_cache = self.get_option("cache") and not cache
        nodes = None
        if use_cache:
            try:
                nodes = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if nodes is None:
            nodes = self._fetch_nodes()
        if update_cache:
            self._cache[cache_key] = nodes
        self._populate(nodes)

    def _fetch_nodes(self):
        agents = rpi.split_list(self.get_option("agents"))
        if not agents:
            raise AnsibleParserError(
                "rpi_cluster.pi.agent: no agent to ask: set agents in the inventory file or RPI_AGENT "
                "(e.g. RPI_AGENT=http://192.168.1.20:8080)")
        headers = {"Accept": "application/json"}
        token = self.get_option("token")
        if token:
            headers["Authorization"] = "Bearer " + token
        tried = []
        for agent in agents:
            try:
                base = rpi.normalize_url(agent)
            except ValueError as e:
                raise AnsibleParserError("rpi_cluster.pi.agent: %s; fix agents or RPI_AGENT" % to_native(e))
            url = base + "/v1/nodes"
            try:
                resp = open_url(url, headers=headers, timeout=self.get_option("timeout"),
                                validate_certs=self.get_option("validate_certs"), follow_redirects="none")
                nodes = json.loads(to_text(resp.read()))
            except Exception as e:  # every failure of one agent: try the next
                tried.append("%s: %s" % (url, to_native(e)))
                continue
            if not isinstance(nodes, list):
                tried.append("%s: the answer is not a list of nodes" % url)
                continue
            return [n for n in nodes if isinstance(n, dict)]
        raise AnsibleError("rpi_cluster.pi.agent: no agent answered; tried %s. Check that rpi-agent runs "
                           "(systemctl status rpi-agent) and that agents or RPI_AGENT names it"
                           % "; ".join(tried))

    def _warn(self, name, why):
        self.display.warning("rpi_cluster.pi.agent: node %s left out: %s" % (rpi.short(to_text(name)), why))

    def _gate(self, nodes):
        """The nodes the workstation tools would use (toolkit.Gate without
        key pinning), in the agent's order."""
        count = {}
        for n in nodes:
            count[n.get("name")] = count.get(n.get("name"), 0) + 1
        valid = []
        for n in nodes:
            err = rpi.node_error(n)
            if err:
                self._warn(n.get("name"), err)
                continue
            if count[n["name"]] > 1:
                self._warn(n["name"], "%d nodes in the agent's answer have that name" % count[n["name"]])
                continue
            valid.append(n)
        groups = {}
        for n in valid:
            for s in n.get("services") or []:
                groups[rpi.group_name(s)] = s
        pins = self._load_pins()
        out = []
        refusals = []
        for n in valid:
            svc = groups.get(n["name"].lower())
            if svc is not None:
                self._warn(n["name"], "it is named like the inventory group of service %s, which Ansible would "
                                      "take for the group; rename the node" % svc)
                continue
            if not self._trust(n, pins, refusals):
                continue
            n = dict(n)
            for k in ("status", "model", "arch", "version"):
                n[k] = rpi.printable(n.get(k) or "")
            out.append(n)
        if refusals:
            raise AnsibleError("rpi_cluster.pi.agent: " + "; ".join(refusals))
        return out

    def _load_pins(self):
        path = self.get_option("known_nodes")
        if not path:
            return {}
        try:
            with open(path, "rb") as f:
                pins = json.loads(to_text(f.read()))
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise AnsibleError("rpi_cluster.pi.agent: read pinned node keys %s: %s" % (path, to_native(e)))
        except ValueError as e:
            raise AnsibleError("rpi_cluster.pi.agent: read pinned node keys %s: corrupt (%s): fix it with "
                               "rpi-inventory forget, or remove the file" % (path, to_native(e)))
        if not isinstance(pins, dict):
            raise AnsibleError("rpi_cluster.pi.agent: read pinned node keys %s: not a JSON object" % path)
        return pins

    def _trust(self, n, pins, refusals):
        """toolkit.Gate's trust, read-only: whether n may be used. A pinned
        node offering another key is added to refusals."""
        name = n["name"]
        pinned = pins.get(name)
        try:
            pub, err = rpi.verify_record(n)
        except RuntimeError as e:
            raise AnsibleError("rpi_cluster.pi.agent: %s" % to_native(e))
        if pub is None and err is None:
            if pinned:
                self._warn(name, "its key is pinned (%s) but the agent's answer carries no signed record for it; "
                                 "ask another agent" % _fingerprint(pinned))
                return False
            return True  # an agent from before signed records
        if err:
            self._warn(name, err)
            return False
        enc = to_text(base64.b64encode(pub))
        if n.get("identity_key") and n["identity_key"] != enc:
            self._warn(name, "the agent vouches for another identity key than the one its record carries")
            return False
        if pinned is not None and pinned != enc:
            refusals.append("refuse node %s: node key changed: pinned %s, offered %s: if its card was reinstalled, "
                            "run `rpi-inventory forget %s` and `rpi-inventory --list` to pin the new key; if not, "
                            "another machine is answering as %s" % (name, _fingerprint(pinned), rpi.fingerprint(pub), name, name))
            return False
        return True

    def _hostvars(self, n):
        m = n.get("monitoring") or {}
        ssh_key = self.get_option("ssh_key")
        known_hosts = self.get_option("known_hosts")
        v = {
            "ansible_host": n["address"],
            "ansible_user": self.get_option("user") or "pi",
        }
        if ssh_key:
            v["ansible_ssh_private_key_file"] = ssh_key
        if known_hosts:
            v["ansible_ssh_common_args"] = "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes" % _shell_quote(known_hosts)
        v.update({
            "rpi_status": n["status"],
            "rpi_services": sorted(n.get("services") or []),
            "rpi_phi": _round(n.get("phi") or 0),
            "rpi_phi_threshold": n.get("phi_threshold") or 0,
            "rpi_cpus": m.get("cpus") or 0,
            "rpi_cpu_percent": _round(m.get("cpu_percent") or 0),
            "rpi_mem_used": m.get("mem_used") or 0,
            "rpi_mem_total": m.get("mem_total") or 0,
            "rpi_load1": m.get("load1") or 0,
            "rpi_load5": m.get("load5") or 0,
            "rpi_load15": m.get("load15") or 0,
            "rpi_temp_c": m.get("temp_c"),
            "rpi_model": n["model"],
            "rpi_arch": n["arch"],
            "rpi_busy_score": _round(_busy_score(m)),
            "rpi_http_port": n.get("http_port") or rpi.DEFAULT_HTTP_PORT,
        })
        return v

    def _populate(self, nodes):
        hosts = []
        groups = dict((s, []) for s in rpi.STATUSES)
        hostvars = {}
        for n in self._gate(nodes):
            hosts.append(n["name"])
            hostvars[n["name"]] = self._hostvars(n)
            if n["status"] in groups:
                groups[n["status"]].append(n["name"])
            if n["status"] != "alive":
                continue
            for s in n.get("services") or []:
                g = rpi.group_name(s)
                members = groups.setdefault(g, [])
                if n["name"] not in members:
                    members.append(n["name"])
        # Hosts named like a group (inventory.Build's dropGroupNamedHosts).
        lower = dict((g.lower(), g) for g in groups)
        for h in list(hosts):
            g = lower.get(h.lower())
            if g is None and h.lower() in rpi.RESERVED_GROUPS:
                g = h.lower()
            if g is not None:
                self._warn(h, "it is named like group %s, which Ansible would take for the group; rename the node"
                              % rpi.quote(g))
                hosts.remove(h)
                del hostvars[h]
                for members in groups.values():
                    if h in members:
                        members.remove(h)

        strict = self.get_option("strict")
        for g in sorted(groups):
            self.inventory.add_group(g)
        for h in sorted(hosts):
            self.inventory.add_host(h)
            for k, val in hostvars[h].items():
                self.inventory.set_variable(h, k, val)
        for g in sorted(groups):
            for h in sorted(groups[g]):
                self.inventory.add_child(g, h)
        for h in sorted(hosts):
            self._set_composite_vars(self.get_option("compose"), hostvars[h], h, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars[h], h, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars[h], h, strict=strict)


def _round(f):
    """Four decimals, as inventory.round: int() truncates toward zero like
    Go's int64 conversion."""
    k = 1e4
    if f >= 0:
        return float(int(f * k + 0.5)) / k
    return -float(int(-f * k + 0.5)) / k


def _busy_score(m):
    """toolkit.BusyScore."""
    cpus = float(m.get("cpus") or 0)
    if cpus <= 0:
        cpus = 1.0
    mem = 0.0
    if (m.get("mem_total") or 0) > 0:
        mem = float(m.get("mem_used") or 0) / float(m["mem_total"])
    return (3 * (m.get("load15") or 0) / cpus + 2 * (m.get("load5") or 0) / cpus + (m.get("load1") or 0) / cpus + 4 * mem) / 4


def _shell_quote(s):
    """inventory.shellQuote: quote s for the splitting Ansible applies to
    ansible_ssh_common_args."""
    if all(ch in "/._-~" or ch.isalpha() or ch.isdigit() for ch in s):
        return s
    return "'" + s.replace("'", "'\"'\"'") + "'"


def _fingerprint(b64):
    try:
        return rpi.fingerprint(base64.b64decode(b64))
    except (TypeError, ValueError):
        return "(unreadable key)"

package inventory

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit"
)

// ParseAssign parses "--assign group=N" values into a map.
func ParseAssign(values []string) (map[string]int, error) {
	out := map[string]int{}
	for _, v := range values {
		g, ns, ok := strings.Cut(v, "=")
		g = strings.TrimSpace(g)
		n, err := strconv.Atoi(strings.TrimSpace(ns))
		if !ok || g == "" || err != nil || n < 1 {
			return nil, fmt.Errorf("parse --assign %q: want GROUP=N with N at least 1, e.g. --assign web=2", v)
		}
		out[g] = n
	}
	return out, nil
}

// HostsFile writes an INI hosts file with one section per group:
//
//   - a group named in assign gets the N least busy alive nodes;
//   - "all" gets every node, "alive"/"suspect"/"failed"/"left" the nodes in
//     that status;
//   - a service group (see toolkit.GroupName) gets the alive nodes running it.
//
// Groups the cluster cannot fill are still written (empty, so the playbook
// parses) and each is explained in warnings. A node named like one of the
// file's groups is left out with a warning: Ansible would take it for the
// group.
func HostsFile(nodes []apitypes.Node, groups []string, assign map[string]int, o Options) (ini []byte, warnings []string) {
	all := append([]string{}, groups...)
	for g := range assign {
		if !contains(all, g) {
			all = append(all, g)
		}
	}
	sort.Strings(all[len(groups):])
	nodes = slices.DeleteFunc(slices.Clone(nodes), func(n apitypes.Node) bool {
		for _, g := range all {
			if strings.EqualFold(n.Name, g) {
				warnings = append(warnings, fmt.Sprintf("node %s left out: it is named like group %s of this hosts file, which Ansible would take for the group; rename the node", apitypes.Quote(n.Name), apitypes.Quote(g)))
				return true
			}
		}
		return false
	})
	inv := Build(nodes, o)
	warnings = append(warnings, inv.LeftOut...)
	alive := make([]apitypes.Node, 0, len(nodes))
	for _, n := range nodes {
		if _, ok := inv.Vars[n.Name]; ok && n.Status == apitypes.StatusAlive {
			alive = append(alive, n)
		}
	}
	toolkit.SortByBusy(alive)

	var b bytes.Buffer
	b.WriteString("# Written by rpi-inventory hosts from the live cluster; do not edit.\n")
	b.WriteString("[all:vars]\n")
	fmt.Fprintf(&b, "ansible_user=%s\n", iniValue(userOrDefault(o.User)))
	if o.SSHKey != "" {
		fmt.Fprintf(&b, "ansible_ssh_private_key_file=%s\n", iniValue(o.SSHKey))
	}
	if args := sshCommonArgs(o.KnownHosts); args != "" {
		fmt.Fprintf(&b, "ansible_ssh_common_args=%s\n", iniValue(args))
	}
	for _, g := range all {
		var hosts []string
		switch n, ok := assign[g]; {
		case ok:
			for i := 0; i < n && i < len(alive); i++ {
				hosts = append(hosts, alive[i].Name)
			}
			sort.Strings(hosts)
			if len(hosts) < n {
				warnings = append(warnings, fmt.Sprintf("group %s: asked for %d nodes, only %d alive", g, n, len(hosts)))
			}
		case g == "all":
			hosts = inv.Hosts
			if len(hosts) == 0 {
				warnings = append(warnings, "group all: the cluster has no nodes")
			}
		case toolkit.ReservedGroup(g) && g != "ungrouped":
			hosts = inv.Groups[g]
			if len(hosts) == 0 {
				warnings = append(warnings, fmt.Sprintf("group %s: no node is %s", g, g))
			}
		default:
			hosts = inv.Groups[g]
			if len(hosts) == 0 {
				warnings = append(warnings, fmt.Sprintf("group %s: no alive node runs a service of that name; fill it with --assign %s=N", g, g))
			}
		}
		fmt.Fprintf(&b, "\n[%s]\n", g)
		for _, h := range hosts {
			fmt.Fprintf(&b, "%s ansible_host=%s\n", h, iniValue(inv.Vars[h].AnsibleHost))
		}
	}
	return b.Bytes(), warnings
}

func userOrDefault(u string) string {
	if u == "" {
		return DefaultUser
	}
	return u
}

// iniValue quotes v when it holds characters the INI parser would split on.
func iniValue(v string) string {
	if v == "" || strings.ContainsAny(v, " \t#;=\"'") {
		return strconv.Quote(v)
	}
	return v
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

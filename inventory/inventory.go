// Package inventory turns the live cluster view into what Ansible reads: the
// dynamic-inventory JSON (--list, --host), a static inventory file, an INI
// hosts file for the groups a playbook targets, and a known_hosts file from
// the nodes' gossiped SSH host keys.
//
// # Groups
//
//   - all: every node the answering agent knows.
//   - alive, suspect, failed, left: one per status, always present (possibly
//     empty) so playbooks can target them.
//   - one per service, holding only the alive nodes that run it. Failed,
//     suspect and left nodes sit in their status group only.
//
// Service names may contain '.' and '-', which Ansible group names may not.
// toolkit.GroupName maps a service to its group deterministically: every
// character other than a lowercase letter, digit or '_' becomes '_', and a
// name that would collide with "all", "ungrouped" or a status group, or that
// starts with a digit, gets the prefix "service_". So "web.api-v2" is group
// "web_api_v2", "alive" is "service_alive" and "9p" is "service_9p". Two
// services that map to the same group share it.
//
// # Trust
//
// Nodes reach this package through toolkit.Gate: their names, addresses and
// services already follow the rules, no node is named like a group, and
// with pinning their signed records verified against the workstation's
// pinned keys. KnownHosts checks the records again, itself: a host key is
// written only from a record that verifies and whose key is pinned.
package inventory

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"unicode"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit"
)

// StatusGroups are the status groups, always present in the inventory.
var StatusGroups = []string{apitypes.StatusAlive, apitypes.StatusSuspect, apitypes.StatusFailed, apitypes.StatusLeft}

// DefaultUser is ansible_user when the workstation config names none.
const DefaultUser = "pi"

// Options are the connection settings every host gets.
type Options struct {
	// User is ansible_user; empty means DefaultUser.
	User string
	// SSHKey is ansible_ssh_private_key_file; empty leaves it out.
	SSHKey string
	// KnownHosts is a known_hosts file written from the gossiped host keys
	// (rpi-inventory known-hosts). When set, every host gets
	// ansible_ssh_common_args pointing ssh at it with strict checking, so
	// host-key checking stays on without touching ~/.ssh/known_hosts.
	KnownHosts string
}

// HostVars are one host's variables: how Ansible reaches it and the rpi_*
// facts from its gossiped record.
type HostVars struct {
	AnsibleHost   string   `json:"ansible_host"`
	AnsibleUser   string   `json:"ansible_user"`
	AnsibleSSHKey string   `json:"ansible_ssh_private_key_file,omitempty"`
	SSHCommonArgs string   `json:"ansible_ssh_common_args,omitempty"`
	Status        string   `json:"rpi_status"`
	Services      []string `json:"rpi_services"`
	Phi           float64  `json:"rpi_phi"`
	PhiThreshold  float64  `json:"rpi_phi_threshold"`
	CPUs          int      `json:"rpi_cpus"`
	CPUPercent    float64  `json:"rpi_cpu_percent"`
	MemUsed       uint64   `json:"rpi_mem_used"`
	MemTotal      uint64   `json:"rpi_mem_total"`
	Load1         float64  `json:"rpi_load1"`
	Load5         float64  `json:"rpi_load5"`
	Load15        float64  `json:"rpi_load15"`
	TempC         *float64 `json:"rpi_temp_c"`
	Model         string   `json:"rpi_model"`
	Arch          string   `json:"rpi_arch"`
	BusyScore     float64  `json:"rpi_busy_score"`
	HTTPPort      int      `json:"rpi_http_port"`
}

// Inventory is the cluster as Ansible sees it.
type Inventory struct {
	// Hosts are all node names, sorted.
	Hosts []string
	// Groups maps each group to its sorted host names. "all" is not stored;
	// it is Hosts.
	Groups map[string][]string
	// Vars holds every host's variables.
	Vars map[string]HostVars
	// LeftOut explains each node left out: its name, address or services
	// break the rules (toolkit.CheckNode), or its name is one of the
	// inventory's groups (Ansible would take it for the group).
	LeftOut []string
}

// Build makes the inventory of nodes.
func Build(nodes []apitypes.Node, o Options) *Inventory {
	user := o.User
	if user == "" {
		user = DefaultUser
	}
	inv := &Inventory{Groups: map[string][]string{}, Vars: map[string]HostVars{}}
	for _, g := range StatusGroups {
		inv.Groups[g] = []string{}
	}
	for _, n := range nodes {
		// The tools' nodes passed toolkit.Gate already; checking again
		// keeps an inventory safe for Ansible whoever calls Build.
		if err := toolkit.CheckNode(n); err != nil {
			inv.LeftOut = append(inv.LeftOut, fmt.Sprintf("node %s left out of the inventory: %v", apitypes.Quote(n.Name), err))
			continue
		}
		inv.Hosts = append(inv.Hosts, n.Name)
		inv.Vars[n.Name] = hostVars(n, user, o)
		if _, ok := inv.Groups[n.Status]; ok {
			inv.Groups[n.Status] = append(inv.Groups[n.Status], n.Name)
		}
		if n.Status != apitypes.StatusAlive {
			continue
		}
		seen := map[string]bool{}
		for _, s := range n.Services {
			g := toolkit.GroupName(s)
			if !seen[g] {
				seen[g] = true
				inv.Groups[g] = append(inv.Groups[g], n.Name)
			}
		}
	}
	inv.dropGroupNamedHosts()
	sort.Strings(inv.Hosts)
	for _, hosts := range inv.Groups {
		sort.Strings(hosts)
	}
	return inv
}

// dropGroupNamedHosts leaves out every host named like one of the groups.
// toolkit.Gate leaves out such nodes from what an agent reports; the groups
// checked here include those of a view the launcher made (the cluster after
// a launch), which no agent reported yet.
func (inv *Inventory) dropGroupNamedHosts() {
	isGroup := func(h string) (string, bool) {
		for g := range inv.Groups {
			if strings.EqualFold(g, h) {
				return g, true
			}
		}
		return "", toolkit.ReservedGroup(strings.ToLower(h))
	}
	drop := map[string]bool{}
	for _, h := range inv.Hosts {
		if g, ok := isGroup(h); ok {
			drop[h] = true
			inv.LeftOut = append(inv.LeftOut, fmt.Sprintf("node %s left out of the inventory: it is named like group %s, which Ansible would take for the group; rename the node", apitypes.Quote(h), apitypes.Quote(cmp.Or(g, strings.ToLower(h)))))
		}
	}
	if len(drop) == 0 {
		return
	}
	gone := func(h string) bool { return drop[h] }
	inv.Hosts = slices.DeleteFunc(inv.Hosts, gone)
	for g, hosts := range inv.Groups {
		inv.Groups[g] = slices.DeleteFunc(hosts, gone)
	}
	for h := range drop {
		delete(inv.Vars, h)
	}
}

func hostVars(n apitypes.Node, user string, o Options) HostVars {
	m := n.Monitoring
	services := append([]string{}, n.Services...)
	sort.Strings(services)
	port := n.HTTPPort
	if port == 0 {
		port = 8080
	}
	return HostVars{
		AnsibleHost:   n.Address,
		AnsibleUser:   user,
		AnsibleSSHKey: o.SSHKey,
		SSHCommonArgs: sshCommonArgs(o.KnownHosts),
		Status:        n.Status,
		Services:      services,
		Phi:           round(n.Phi),
		PhiThreshold:  n.PhiThreshold,
		CPUs:          m.CPUs,
		CPUPercent:    round(m.CPUPercent),
		MemUsed:       m.MemUsed,
		MemTotal:      m.MemTotal,
		Load1:         m.Load1,
		Load5:         m.Load5,
		Load15:        m.Load15,
		TempC:         m.TempC,
		Model:         n.Model,
		Arch:          n.Arch,
		BusyScore:     round(toolkit.BusyScore(n)),
		HTTPPort:      port,
	}
}

// round keeps four decimals: enough for scheduling, stable in golden files.
func round(f float64) float64 {
	const k = 1e4
	if f >= 0 {
		return float64(int64(f*k+0.5)) / k
	}
	return -float64(int64(-f*k+0.5)) / k
}

// groupNames returns the group names in output order: status groups first,
// then the service groups sorted.
func (inv *Inventory) groupNames() []string {
	names := append([]string{}, StatusGroups...)
	var svc []string
	for g := range inv.Groups {
		if !toolkit.ReservedGroup(g) {
			svc = append(svc, g)
		}
	}
	sort.Strings(svc)
	return append(names, svc...)
}

type listGroup struct {
	Hosts    []string `json:"hosts"`
	Children []string `json:"children,omitempty"`
}

// ListJSON is the answer to "--list" in Ansible's dynamic-inventory
// protocol, _meta.hostvars included so Ansible never calls --host per host.
func (inv *Inventory) ListJSON() ([]byte, error) {
	out := map[string]any{}
	groups := inv.groupNames()
	hosts := inv.Hosts
	if hosts == nil {
		hosts = []string{}
	}
	out["all"] = listGroup{Hosts: hosts, Children: groups}
	for _, g := range groups {
		out[g] = listGroup{Hosts: inv.Groups[g]}
	}
	vars := inv.Vars
	if vars == nil {
		vars = map[string]HostVars{}
	}
	out["_meta"] = map[string]any{"hostvars": vars}
	// Compact: Ansible reads it, and at 1000 hosts indenting doubled the
	// encoding time and the output (pipe it through jq to read it).
	data, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode inventory: %w", err)
	}
	return append(data, '\n'), nil
}

// HostJSON is the answer to "--host NAME": that host's variables.
func (inv *Inventory) HostJSON(name string) ([]byte, error) {
	v, ok := inv.Vars[name]
	if !ok {
		return nil, fmt.Errorf("host %q: not in the cluster; known hosts: %s", name, knownList(inv.Hosts))
	}
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode host %s: %w", name, err)
	}
	return append(data, '\n'), nil
}

type staticGroup struct {
	Hosts    map[string]any         `json:"hosts,omitempty"`
	Children map[string]staticGroup `json:"children,omitempty"`
}

// StaticJSON is the same inventory as a static file for Ansible's yaml
// inventory plugin (JSON is YAML; name the file *.json), used where a run
// must see exactly the cluster view it was planned from.
func (inv *Inventory) StaticJSON() ([]byte, error) {
	all := staticGroup{Hosts: map[string]any{}, Children: map[string]staticGroup{}}
	for _, h := range inv.Hosts {
		all.Hosts[h] = inv.Vars[h]
	}
	for _, g := range inv.groupNames() {
		sg := staticGroup{Hosts: map[string]any{}}
		for _, h := range inv.Groups[g] {
			sg.Hosts[h] = struct{}{}
		}
		all.Children[g] = sg
	}
	data, err := json.MarshalIndent(map[string]staticGroup{"all": all}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode static inventory: %w", err)
	}
	return append(data, '\n'), nil
}

func knownList(names []string) string {
	if len(names) == 0 {
		return "(none)"
	}
	return strings.Join(names, ", ")
}

// sshCommonArgs points ssh at a known_hosts file of the cluster's gossiped
// host keys, with strict checking; empty when there is none.
func sshCommonArgs(knownHosts string) string {
	if knownHosts == "" {
		return ""
	}
	return "-o UserKnownHostsFile=" + shellQuote(knownHosts) + " -o StrictHostKeyChecking=yes"
}

// shellQuote quotes s for the shell-like splitting Ansible applies to
// ansible_ssh_common_args.
func shellQuote(s string) string {
	if strings.IndexFunc(s, func(r rune) bool {
		return !(r == '/' || r == '.' || r == '_' || r == '-' || r == '~' || unicode.IsLetter(r) || unicode.IsDigit(r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

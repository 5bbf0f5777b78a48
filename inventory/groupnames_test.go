package inventory

import (
	"slices"
	"strings"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// A host named like a group of the same inventory is left out: Ansible
// would take "--limit web_api" or "hosts: web_api" for the group, or the
// group for the host.
func TestBuildLeavesOutHostsNamedLikeItsGroups(t *testing.T) {
	nodes := []apitypes.Node{
		{Name: "pi-1", Address: "10.0.0.1", Status: apitypes.StatusAlive, Services: []string{"web.api"}},
		{Name: "Web_Api", Address: "10.0.0.2", Status: apitypes.StatusAlive},
	}
	inv := Build(nodes, Options{})
	if !slices.Equal(inv.Hosts, []string{"pi-1"}) || len(inv.Vars) != 1 {
		t.Errorf("hosts = %q, want pi-1 alone", inv.Hosts)
	}
	if g := inv.Groups[apitypes.StatusAlive]; !slices.Equal(g, []string{"pi-1"}) {
		t.Errorf("alive = %q, want pi-1 alone", g)
	}
	if len(inv.LeftOut) != 1 || !strings.Contains(inv.LeftOut[0], `"Web_Api"`) || !strings.Contains(inv.LeftOut[0], `group "web_api"`) {
		t.Errorf("LeftOut = %q, want Web_Api explained", inv.LeftOut)
	}
}

func TestHostsFileLeavesOutHostsNamedLikeItsGroups(t *testing.T) {
	idle := apitypes.Monitoring{CPUs: 4, MemTotal: 100, MemUsed: 1}
	busy := apitypes.Monitoring{CPUs: 4, MemTotal: 100, MemUsed: 90, Load1: 3, Load5: 3, Load15: 3}
	nodes := []apitypes.Node{
		{Name: "lb", Address: "10.0.0.1", Status: apitypes.StatusAlive, Monitoring: idle},
		{Name: "DB", Address: "10.0.0.2", Status: apitypes.StatusAlive, Monitoring: idle},
		{Name: "pi-1", Address: "10.0.0.3", Status: apitypes.StatusAlive, Monitoring: busy},
	}
	ini, warnings := HostsFile(nodes, []string{"db", "all"}, map[string]int{"lb": 1}, Options{})
	for _, line := range strings.Split(string(ini), "\n") {
		if strings.HasPrefix(line, "lb ") || strings.HasPrefix(line, "DB ") {
			t.Errorf("INI has a host named like a group: %q\n%s", line, ini)
		}
	}
	if !strings.Contains(string(ini), "[lb]\npi-1 ansible_host=10.0.0.3\n") {
		t.Errorf("[lb] is not filled with pi-1:\n%s", ini)
	}
	joined := strings.Join(warnings, "\n")
	if !strings.Contains(joined, `node "lb" left out`) || !strings.Contains(joined, `node "DB" left out`) {
		t.Errorf("warnings = %q, want lb and DB explained", warnings)
	}
}

// Build keeps its inventory safe for Ansible on its own, whoever calls it.
func TestBuildLeavesOutNodesBreakingTheRules(t *testing.T) {
	nodes := []apitypes.Node{
		{Name: "pi-1", Address: "10.0.0.1", Status: apitypes.StatusAlive},
		{Name: "evil ansible_connection=local", Address: "10.0.0.2", Status: apitypes.StatusAlive},
		{Name: "pi-3", Address: "10.0.0.3 ansible_connection=local", Status: apitypes.StatusAlive},
		{Name: "pi-4", Address: "10.0.0.4", Status: apitypes.StatusAlive, Services: []string{"../../etc/passwd"}},
	}
	inv := Build(nodes, Options{})
	if !slices.Equal(inv.Hosts, []string{"pi-1"}) || len(inv.Vars) != 1 || len(inv.Groups) != 4 {
		t.Errorf("hosts %q, groups %v; want pi-1 alone and the status groups", inv.Hosts, inv.Groups)
	}
	if len(inv.LeftOut) != 3 {
		t.Errorf("LeftOut = %q, want the three others explained", inv.LeftOut)
	}
}

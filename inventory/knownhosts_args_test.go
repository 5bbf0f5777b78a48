package inventory

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

func TestKnownHostsFileKeepsCheckingOn(t *testing.T) {
	nodes := []apitypes.Node{{Name: "pi-1", Address: "10.0.0.1", Status: apitypes.StatusAlive}}

	inv := Build(nodes, Options{})
	if got := inv.Vars["pi-1"].SSHCommonArgs; got != "" {
		t.Fatalf("no known_hosts configured: ansible_ssh_common_args = %q, want none", got)
	}

	inv = Build(nodes, Options{KnownHosts: "/home/pi/.config/rpi-cluster/known hosts"})
	got := inv.Vars["pi-1"].SSHCommonArgs
	want := `-o UserKnownHostsFile='/home/pi/.config/rpi-cluster/known hosts' -o StrictHostKeyChecking=yes`
	if got != want {
		t.Fatalf("ansible_ssh_common_args = %q, want %q", got, want)
	}
	out, err := inv.ListJSON()
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Meta struct {
			Hostvars map[string]map[string]any `json:"hostvars"`
		} `json:"_meta"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatal(err)
	}
	if args, _ := list.Meta.Hostvars["pi-1"]["ansible_ssh_common_args"].(string); !strings.Contains(args, "StrictHostKeyChecking=yes") {
		t.Fatalf("--list hostvars lack the known_hosts args: %v", list.Meta.Hostvars["pi-1"])
	}
}

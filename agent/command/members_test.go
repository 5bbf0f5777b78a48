package command

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

func TestWriteMembersTable(t *testing.T) {
	nodes := []apitypes.Node{
		{Name: "pi-1", Address: "10.0.0.11", GossipPort: 7946, Status: apitypes.StatusAlive, Self: true,
			PhiThreshold: 8, Services: []string{"nginx_webserver", "redis"},
			Monitoring: apitypes.Monitoring{CPUPercent: 12.4, MemTotal: 4 << 30, MemUsed: 1 << 30, Load1: 0.5, Load5: 0.25, Load15: 0.125}},
		{Name: "pi-2", Address: "10.0.0.12", GossipPort: 7946, Status: apitypes.StatusFailed, Phi: 14.2, PhiThreshold: 8},
	}
	var b bytes.Buffer
	if err := WriteMembersTable(&b, nodes); err != nil {
		t.Fatal(err)
	}
	want := `NAME   ADDRESS         STATUS  PHI     CPU  MEM  LOAD            SERVICES
pi-1*  10.0.0.11:7946  alive   0.0/8   12%  25%  0.50 0.25 0.12  nginx_webserver,redis
pi-2   10.0.0.12:7946  failed  14.2/8  0%   -    0.00 0.00 0.00
`
	var trimmed strings.Builder
	for _, line := range strings.SplitAfter(b.String(), "\n") {
		trimmed.WriteString(strings.TrimRight(line, " \n"))
		if strings.HasSuffix(line, "\n") {
			trimmed.WriteString("\n")
		}
	}
	if got := trimmed.String(); got != want {
		t.Fatalf("table:\n%s\nwant:\n%s", got, want)
	}
	if !strings.HasPrefix(strings.Split(b.String(), "\n")[1], "pi-1*") {
		t.Error("the answering node is not marked with *")
	}
}

// Names, addresses, statuses and services come from gossip: whatever a
// member put in them, the table shows no character a terminal would obey
// and no line the table did not start.
func TestWriteMembersTableEscapesGossipedText(t *testing.T) {
	nodes := []apitypes.Node{{
		Name: "\x1b]0;owned\x07pi", Address: "10.0.0.1\x1b[2J", GossipPort: 7946, Status: "alive\nfake row",
		Services: []string{"web\u202etxt", "\x9b31m"},
	}}
	var b bytes.Buffer
	if err := WriteMembersTable(&b, nodes); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.ContainsAny(out, "\x1b\x07\u202e\x9b") || strings.Count(out, "\n") != 2 {
		t.Fatalf("table carries gossiped control text:\n%q", out)
	}
	for _, want := range []string{`"\x1b]0;owned\api"`, `"10.0.0.1\x1b[2J"`, `"alive\nfake row"`, `"web\u202etxt,\x9b31m"`} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %s escaped:\n%s", want, out)
		}
	}
}

package toolkit

import (
	"context"
	"strings"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit/fakeagent"
)

// The gate sits in the client: every call that returns nodes passes it,
// and a node left out is reported once however often it is polled (the
// launcher polls ServiceNodes while gossip settles).
func TestGateOnEveryClientCallWarnsOnce(t *testing.T) {
	k := newKey(t)
	c := fakeagent.Start(t, []apitypes.Node{
		fakeagent.Signed(k, apitypes.Node{Name: "pi-1", Address: "127.0.24.1", Services: []string{"web"}}),
		{Name: "evil\x1b[2J", Address: "127.0.24.2", Services: []string{"web"}},
		{Name: "pi-3", Address: "127.0.24.3", Services: []string{"web"}, Version: "1.0\x1b]0;x\a"},
	})
	var warn testutil.SyncBuffer
	pins, _ := identity.OpenPins("")
	cl := &client.Client{BaseURL: c.URL("pi-1"), Gate: &Gate{Pins: pins, Warn: &warn}}
	ctx := context.Background()
	for range 3 {
		nodes, err := cl.ServiceNodes(ctx, "web")
		if err != nil || len(nodes) != 2 || nodes[0].Name != "pi-1" || nodes[1].Name != "pi-3" {
			t.Fatalf("ServiceNodes = %v, %v; want pi-1 and pi-3", nodes, err)
		}
		if nodes[1].Version != `"1.0\x1b]0;x\a"` {
			t.Errorf("pi-3's version reaches the tools as %q, want it escaped", nodes[1].Version)
		}
	}
	if _, err := cl.Nodes(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Node(ctx, "evil\x1b[2J"); err == nil || strings.Contains(err.Error(), "\x1b") {
		t.Errorf("Node of a node left out: %v, want an error without the escape", err)
	}
	out := warn.String()
	if n := strings.Count(out, `warning: node "evil\x1b[2J" left out`); n != 1 {
		t.Errorf("the node left out was reported %d times, want once:\n%s", n, out)
	}
	if n := strings.Count(out, "note: pinned node pi-1"); n != 1 {
		t.Errorf("the first sight of pi-1 was noted %d times, want once:\n%s", n, out)
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("warnings carry an escape: %q", out)
	}
	// Self passes the gate too: a changed key is refused there as well.
	c.Update("pi-1", func(n *apitypes.Node) {
		*n = fakeagent.Signed(newKey(t), apitypes.Node{Name: "pi-1", Address: n.Address, HTTPPort: n.HTTPPort, Status: n.Status})
	})
	if _, err := cl.Self(ctx); err == nil || !strings.Contains(err.Error(), "rpi-inventory forget pi-1") {
		t.Errorf("Self with pi-1's key changed: %v, want a refusal", err)
	}
}

func newKey(t *testing.T) *identity.Key {
	t.Helper()
	k, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
	"github.com/rpi-cluster/rpi-cluster/e2e/vcluster"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
	"github.com/rpi-cluster/rpi-cluster/inventory"
)

// TestNodeMoves: a node reconnected at another address (docker network
// disconnect, then connect --ip) or renumbered in place (ip addr add the
// new, del the old, as a DHCP renewal to a new lease does) is listed by
// every peer under its name at the new address within seconds, never
// failed for longer than one detection period; the inventory gives the new
// ansible_host and Ansible reaches the node there. A node that has no
// address for a while first (its address deleted, every peer failing it,
// then a new one added, as a DHCP client does after DHCPNAK) is listed
// alive at the new address by every peer within one detection period plus
// the agent's address poll of the new one appearing.
func TestNodeMoves(t *testing.T) {
	t.Run("reconnect", func(t *testing.T) {
		testNodeMoves(t, "reconnected (disconnect, connect --ip)", (*vcluster.Cluster).Move, false)
	})
	t.Run("renumber", func(t *testing.T) {
		testNodeMoves(t, "renumbered in place (ip addr)", (*vcluster.Cluster).Renumber, false)
	})
	t.Run("gap", func(t *testing.T) {
		testNodeMoves(t, "back at a new address after a gap without one", (*vcluster.Cluster).AddAddress, true)
	})
}

// addressPoll is how often the agent reads its interfaces (agent/address.go).
const addressPoll = 3 * time.Second

// testNodeMoves moves a node with move. With gap, the node's address is
// dropped first and move adds the new one once every peer holds the node
// failed: the failure is the outage's, and what is checked is how soon
// after the new address appeared every peer lists it alive there.
func testNodeMoves(t *testing.T, how string, move func(*vcluster.Cluster, context.Context, *vcluster.Node) (netip.Addr, error), gap bool) {
	c, _ := newCluster(t, 4)
	ctx := context.Background()
	if _, err := c.WaitConverged(ctx, nil, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	n := c.Nodes()[1]
	name := n.Name
	peers := c.Others(n)
	lan, _ := cluster.ProfileByName("lan")
	detection := time.Duration(lan.SuspicionMult) * lan.ProbeInterval

	// Watch how every peer sees the node, by name, every 250 ms.
	var mu sync.Mutex
	notAlive := map[string]time.Time{} // observer → since when not alive
	var longest time.Duration
	var appeared time.Time                  // with gap: when the new address was added
	heldAfter := map[string]time.Duration{} // with gap: observer → not alive after appeared
	var sightings []string
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			views, _ := c.Views(ctx, peers)
			now := time.Now()
			mu.Lock()
			for o, view := range views {
				for _, m := range view {
					if m.Name != name {
						continue
					}
					if m.Status == apitypes.StatusAlive {
						delete(notAlive, o.String())
						continue
					}
					since, ok := notAlive[o.String()]
					if !ok {
						since = now
						notAlive[o.String()] = now
					}
					longest = max(longest, now.Sub(since))
					if !appeared.IsZero() {
						heldAfter[o.String()] = max(heldAfter[o.String()], now.Sub(appeared))
					}
					sightings = append(sightings, fmt.Sprintf("%s: %s saw %s %s at %s", now.Format("15:04:05.000"), o, name, m.Status, m.Address))
				}
			}
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()

	old := n.IP
	if gap {
		if err := c.DropAddress(ctx, n); err != nil {
			t.Fatal(err)
		}
		dropped := time.Now()
		testutil.WaitFor(t, time.Minute, func() error {
			views, err := c.Views(ctx, peers)
			if err != nil {
				return err
			}
			for _, o := range peers {
				for _, m := range views[o] {
					if m.Name == name && m.Status != apitypes.StatusFailed {
						return fmt.Errorf("%s sees %s %s, waiting for failed", o, name, m.Status)
					}
				}
			}
			return nil
		})
		figure(t, "node without an address → failed on every peer", "%.1f s", time.Since(dropped).Seconds())
	}
	start := time.Now()
	mu.Lock()
	if gap {
		appeared = start
	}
	mu.Unlock()
	ip, err := move(c, ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Minute, func() error {
		views, err := c.Views(ctx, peers)
		if err != nil {
			return err
		}
		for _, o := range peers {
			found := false
			for _, m := range views[o] {
				if m.Name != name {
					continue
				}
				found = true
				if m.Address != ip.String() || m.Status != apitypes.StatusAlive {
					return fmt.Errorf("%s sees %s %s at %s, want alive at %s", o, name, m.Status, m.Address, ip)
				}
			}
			if !found {
				return fmt.Errorf("%s does not list %s", o, name)
			}
		}
		return nil
	})
	took := time.Since(start)
	figure(t, "node "+how+" → every peer lists it at the new address", "%.1f s", took.Seconds())
	if gap && took > detection+addressPoll {
		t.Fatalf("every peer listed %s alive at its new address %v after it appeared, more than one detection period (%v) plus the address poll (%v)",
			name, took.Round(time.Millisecond), detection, addressPoll)
	}

	// No peer saw it failed for longer than one detection period, now or
	// in the next ones.
	deadline := time.Now().Add(3 * detection)
	testutil.WaitFor(t, 4*detection, func() error {
		if time.Now().Before(deadline) {
			return errors.New("still watching")
		}
		return nil
	})
	close(stop)
	<-done
	mu.Lock()
	if gap {
		var worst time.Duration
		for o, d := range heldAfter {
			t.Logf("%s held %s not alive for %v after its new address appeared", o, name, d.Round(time.Millisecond))
			worst = max(worst, d)
		}
		figure(t, "node "+how+": longest time any peer held it not alive after the new address appeared", "%.1f s", worst.Seconds())
		if worst > detection+addressPoll {
			t.Fatalf("a peer held %s not alive for %v after its new address appeared, more than one detection period (%v) plus the address poll (%v):\n%s",
				name, worst.Round(time.Millisecond), detection, addressPoll, strings.Join(sightings, "\n"))
		}
	} else {
		figure(t, "node "+how+": longest time any peer held it not alive", "%.1f s", longest.Seconds())
	}
	if !gap && longest > detection {
		t.Fatalf("a peer held the moved node not alive for %v, more than one detection period (%v):\n%s",
			longest, detection, strings.Join(sightings, "\n"))
	}
	mu.Unlock()
	if err := c.Converged(ctx, c.Nodes()); err != nil {
		t.Fatalf("after the move: %v", err)
	}

	members, err := peers[0].Client().Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	inv := inventory.Build(members, inventory.Options{})
	if h := inv.Vars[name].AnsibleHost; h != ip.String() {
		t.Fatalf("inventory: %s ansible_host %q, want the new address %s (was %s)", name, h, ip, old)
	}
	if _, err := exec.LookPath("ansible"); err != nil {
		t.Skip("ansible not installed (apt-get install ansible-core)")
	}
	dir := t.TempDir()
	ws, err := vcluster.WriteWorkstation(dir, suite.prepared.Key, vcluster.DefaultSSHUser, members)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ansiblePing(ctx, dir, ws.Inventory)
	if err != nil {
		t.Fatalf("ansible all -m ping after the move: %v\n%s", err, out)
	}
	if got := strings.Count(out, "SUCCESS"); got != len(members) {
		t.Fatalf("ansible reached %d of %d nodes after the move:\n%s", got, len(members), out)
	}
}

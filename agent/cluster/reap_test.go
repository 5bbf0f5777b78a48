package cluster

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/detector"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

func withReap(failed, left time.Duration) nodeOpt {
	return func(c *Config) { c.ReapFailedAfter, c.ReapLeftAfter = failed, left }
}

// A failed node stays listed for ReapFailedAfter, a left one for the
// shorter ReapLeftAfter; both are then gone, their pins kept, and a reaped
// node that comes back is simply new again.
func TestReapFailedAndLeft(t *testing.T) {
	obs := startNode(t, "rp1", "127.0.30.11", withReap(3*time.Second, 500*time.Millisecond))
	events := collect(obs)
	left := startNode(t, "rp2", "127.0.30.12")
	failed := startNode(t, "rp3", "127.0.30.13")
	formCluster(t, obs, left, failed)

	if err := left.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	left.Shutdown()
	failed.Shutdown()
	testutil.WaitFor(t, waitTimeout, expect([]*Cluster{obs}, "rp3", status(StatusFailed)))
	testutil.WaitFor(t, waitTimeout, func() error {
		if _, ok := obs.Member("rp2"); ok {
			return errors.New("rp2, left, still listed")
		}
		return nil
	})
	if m, ok := obs.Member("rp3"); !ok || m.Status != StatusFailed {
		t.Fatalf("rp3 listed %v as %q once rp2 was reaped: a failed node must stay for ReapFailedAfter (3 s)", ok, m.Status)
	}
	testutil.WaitFor(t, waitTimeout, func() error {
		if _, ok := obs.Member("rp3"); ok {
			return errors.New("rp3, failed, still listed")
		}
		return nil
	})
	if n := obs.Stats().Reaped; n != 2 {
		t.Errorf("Stats().Reaped = %d, want 2", n)
	}
	for _, name := range []string{"rp2", "rp3"} {
		// Published just after the removal.
		testutil.WaitFor(t, waitTimeout, func() error { return events.has(EventReap, name) })
		if _, ok := obs.pins.Lookup(name); !ok {
			t.Errorf("the key pin of %s went with the reap; a reaped name must stay pinned", name)
		}
	}

	back := startNode(t, "rp3", "127.0.30.14")
	join(t, back, obs)
	testutil.WaitFor(t, waitTimeout, expect([]*Cluster{obs}, "rp3", status(StatusAlive)))
	testutil.WaitFor(t, waitTimeout, func() error {
		if n := events.count(EventJoin, "rp3"); n != 2 {
			return fmt.Errorf("rp3 joined %d times, want 2: back after its reap, it is new again", n)
		}
		return nil
	})
}

// force-leave across three nodes: a killed node is removed on the node
// asked and, by gossip, on the others; this node itself, an alive node and
// an unknown name are refused.
func TestForceLeave(t *testing.T) {
	nodes := formCluster(t,
		startNode(t, "fl1", "127.0.30.21"),
		startNode(t, "fl2", "127.0.30.22"),
		startNode(t, "fl3", "127.0.30.23"),
		startNode(t, "fl4", "127.0.30.24"))
	events := collect(nodes[1])
	nodes[3].Shutdown()
	live := nodes[:3]
	testutil.WaitFor(t, waitTimeout, expect(live, "fl4", status(StatusFailed)))
	testutil.WaitFor(t, waitTimeout, confirmedFailed(live, "fl4"))

	for _, tc := range []struct {
		name string
		want error
	}{
		{"fl1", ErrMemberAlive},
		{"fl2", ErrMemberAlive},
		{"nosuch", ErrUnknownMember},
	} {
		_, err := nodes[0].ForceLeave(tc.name)
		if !errors.Is(err, tc.want) {
			t.Errorf("force-leave %s: %v, want %v", tc.name, err, tc.want)
		}
		t.Logf("force-leave %s: %v", tc.name, err)
	}
	if _, err := nodes[0].ForceLeave("bad name"); err == nil {
		t.Error("force-leave of an invalid name accepted")
	}
	if m, _ := nodes[1].Member("fl2"); m.Status != StatusAlive {
		t.Fatal("a refused force-leave changed the view")
	}

	m, err := nodes[0].ForceLeave("fl4")
	if err != nil || m.Status != StatusFailed {
		t.Fatalf("force-leave fl4: %v (%s)", err, m.Status)
	}
	testutil.WaitFor(t, waitTimeout, func() error {
		for _, o := range live {
			if _, ok := o.Member("fl4"); ok {
				return fmt.Errorf("%s still lists fl4", o.conf.NodeName)
			}
		}
		return nil
	})
	testutil.WaitFor(t, waitTimeout, func() error { return events.has(EventReap, "fl4") })
	for _, o := range live {
		if len(o.Members()) != 3 {
			t.Errorf("%s lists %d members, want 3", o.conf.NodeName, len(o.Members()))
		}
	}
}

// A force-leave from a peer removes nothing the receiver holds alive, and
// nothing at all unless it is signed by the key pinned for its sender.
func TestForgedForceLeave(t *testing.T) {
	nodes := formCluster(t,
		startNode(t, "ff1", "127.0.30.31"),
		startNode(t, "ff2", "127.0.30.32"),
		startNode(t, "ff3", "127.0.30.33"),
		startNode(t, "ff4", "127.0.30.34"))
	a, b := nodes[0], nodes[1]
	nodes[3].Shutdown()
	testutil.WaitFor(t, waitTimeout, expect(nodes[:3], "ff4", status(StatusFailed)))
	testutil.WaitFor(t, waitTimeout, confirmedFailed(nodes[:3], "ff4"))

	msg := func(k *identity.Key, from, name string) []byte {
		body := fmt.Appendf(nil, `{"f":%q,"n":%q,"v":%d}`, from, name, nowVersion())
		return append([]byte{msgForceLeave}, seal(k, identity.PurposeForceLeave, body)...)
	}
	rejected := func(reason string) uint64 { return a.Stats().Rejected[reason] }
	other, _ := identity.Generate()

	// b, a member with its own key, asks a to remove ff3, alive at a.
	a.handleMsg(msg(b.key, "ff2", "ff3"))
	// Signed by another key than b's pin, for the failed ff4.
	badSig := rejected("bad_signature")
	a.handleMsg(msg(other, "ff2", "ff4"))
	// From a name a has no key pinned for.
	unknownKey := rejected("unknown_key")
	a.handleMsg(msg(other, "ghost", "ff4"))
	// About a itself.
	a.handleMsg(msg(b.key, "ff2", "ff1"))

	for _, name := range []string{"ff1", "ff2", "ff3"} {
		if m, ok := a.Member(name); !ok || m.Status != StatusAlive {
			t.Errorf("after forged force-leaves ff1 sees %s as %q (listed %v), want alive", name, m.Status, ok)
		}
	}
	if m, ok := a.Member("ff4"); !ok || m.Status != StatusFailed {
		t.Errorf("after forged force-leaves ff1 sees ff4 as %q (listed %v), want failed", m.Status, ok)
	}
	if got := rejected("bad_signature") - badSig; got != 1 {
		t.Errorf("bad_signature counted %d, want 1", got)
	}
	if got := rejected("unknown_key") - unknownKey; got != 1 {
		t.Errorf("unknown_key counted %d, want 1", got)
	}

	// The same request, properly signed by b, for the failed ff4, is
	// applied.
	a.handleMsg(msg(b.key, "ff2", "ff4"))
	if _, ok := a.Member("ff4"); ok {
		t.Error("a force-leave signed by its sender's pinned key for a failed node was not applied")
	}
}

// confirmedFailed is a WaitFor condition: every observer holds name
// failed with memberlist's agreement, not on its own silence verdict
// alone (force-leave needs memberlist's).
func confirmedFailed(observers []*Cluster, name string) func() error {
	return func() error {
		for _, o := range observers {
			o.mu.Lock()
			p := o.peers[name]
			ok := p != nil && p.state() == detector.Failed
			o.mu.Unlock()
			if !ok {
				return fmt.Errorf("%s does not hold %s failed with memberlist's agreement", o.conf.NodeName, name)
			}
		}
		return nil
	}
}

// A force-leave that reaches a node holding the target failed on its own
// silence verdict, before its memberlist confirms (memberlist hands over a
// force-leave ahead of the dead message that came in the same packet), is
// held and applied once memberlist confirms: the node does not stay listed.
func TestForceLeaveHeldUntilMemberlistConfirms(t *testing.T) {
	nodes := formCluster(t,
		startNode(t, "hf1", "127.0.30.41", silenceProfile),
		startNode(t, "hf2", "127.0.30.42", silenceProfile),
		startNode(t, "hf3", "127.0.30.43", silenceProfile),
		startNode(t, "hf4", "127.0.30.44", silenceProfile))
	a, b := nodes[0], nodes[1]
	for _, o := range nodes[:3] {
		heard(t, o, "hf4")
	}
	nodes[3].Shutdown()
	testutil.WaitFor(t, waitTimeout, expect(nodes[:3], "hf4", status(StatusFailed)))
	b.mu.Lock()
	silenced := b.peers["hf4"].state() == detector.Silenced
	b.mu.Unlock()
	if !silenced {
		t.Fatal("hf2 holds hf4 failed with memberlist's agreement already: the force-leave would not arrive ahead of it")
	}
	body := fmt.Appendf(nil, `{"f":%q,"n":%q,"v":%d}`, "hf1", "hf4", nowVersion())
	b.handleMsg(append([]byte{msgForceLeave}, seal(a.key, identity.PurposeForceLeave, body)...))
	if _, ok := b.Member("hf4"); !ok {
		t.Fatal("hf2 removed hf4 before its memberlist confirmed the failure")
	}
	testutil.WaitFor(t, waitTimeout, func() error {
		if m, ok := b.Member("hf4"); ok {
			return fmt.Errorf("hf2 still lists hf4 as %s (memberlist confirms the failure within 3 s)", m.Status)
		}
		return nil
	})
}

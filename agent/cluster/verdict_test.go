package cluster

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// muteTransport loses everything its node sends to one address except
// user messages (heartbeats, re-advertise requests) and refuses streams to
// it: the node's probes of that peer fail, and its gossip, suspicions
// included, never reaches the peer.
type muteTransport struct {
	*NetTransport
	to string // host:port of the peer
}

// memberlist's message types (net.go), unexported there.
const (
	mlUserMsg   = 8
	mlHasCrcMsg = 12
)

func isUserMsg(b []byte) bool {
	if len(b) > 5 && b[0] == mlHasCrcMsg {
		b = b[5:]
	}
	return len(b) > 0 && b[0] == mlUserMsg
}

func (t *muteTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if addr == t.to && !isUserMsg(b) {
		return time.Now(), nil
	}
	return t.NetTransport.WriteTo(b, addr)
}

func (t *muteTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *muteTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if addr == t.to {
		return nil, errors.New("muted")
	}
	return t.NetTransport.DialTimeout(addr, timeout)
}

func (t *muteTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

func withProfile(fn func(p *Profile)) nodeOpt { return func(c *Config) { fn(&c.Profile) } }

// A node whose suspicion never reaches the suspect, and whose suspicion
// therefore runs out, does not report the suspect failed while the
// suspect's heartbeats keep arriving: it asks the suspect to re-advertise
// itself, which revives it in memberlist. Once the suspect is really gone
// it is reported failed, once.
func TestHeartbeatOverrulesUnrefutedSuspicion(t *testing.T) {
	// b never probes and neither node pushes state, so only a's gossip
	// could tell b it is suspected, and a's transport loses it.
	quiet := withProfile(func(p *Profile) { p.PushPullInterval = time.Hour })
	b := startNode(t, "ov2", "127.0.1.96", quiet, withProfile(func(p *Profile) {
		p.ProbeInterval, p.ProbeTimeout = time.Hour, time.Minute
	}))
	nt, err := NewNetTransport("127.0.1.95", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := startNode(t, "ov1", "127.0.1.95", quiet, func(c *Config) {
		c.Transport = &muteTransport{NetTransport: nt, to: addr(b)}
	})
	events := collect(a)
	formCluster(t, a, b)

	// Until a has reached three verdicts on b, or reported b failed.
	testutil.WaitFor(t, waitTimeout, func() error {
		if events.has(EventFail, "ov2") == nil {
			return nil
		}
		if got := a.Stats().Overrules; got < 3 {
			return fmt.Errorf("%d verdicts overruled, want 3", got)
		}
		return nil
	})
	if err := events.has(EventFail, "ov2"); err == nil {
		t.Fatal("a reported b failed although b's heartbeats kept arriving")
	}
	if got := b.Stats().Readvertisements; got < 3 {
		t.Fatalf("b re-advertised itself %d times, want at least one per overruled verdict", got)
	}
	if m, _ := a.Member("ov2"); m.Status != StatusAlive {
		t.Fatalf("a sees b %s (phi %.1f), want alive", m.Status, m.Phi)
	}

	b.Shutdown()
	testutil.WaitFor(t, waitTimeout, expect([]*Cluster{a}, "ov2", status(StatusFailed)))
	// The event reaches the collector after the status changes.
	testutil.WaitFor(t, waitTimeout, func() error {
		if n := events.count(EventFail, "ov2"); n == 0 {
			return errors.New("no fail event for b")
		}
		return nil
	})
	if n := events.count(EventFail, "ov2"); n != 1 {
		t.Fatalf("%d fail events for b, want 1", n)
	}
	if cause, by, _ := events.failCause("ov2"); cause != CauseMemberlist && cause != CauseUpheld || by != "" {
		t.Fatalf("b's fail event has cause %q by %q, want memberlist's verdict, upheld or not", cause, by)
	}
}

// The rule itself, on a peer memberlist has never heard of: a verdict that
// a heartbeat outlived is held back for one suspicion window and upheld if
// the node does not come back; one that no heartbeat outlived is reported
// at once; a verdict withdrawn is never reported.
func TestVerdictOverruleRule(t *testing.T) {
	a := startNode(t, "vr1", "127.0.1.97")
	events := collect(a)
	ghost := func(name string, heard time.Duration) *memberlist.Node {
		a.mu.Lock()
		a.addPeerLocked(name, "127.0.1.98", a.conf.Profile.HeartbeatInterval, time.Now().Add(-heard))
		a.mu.Unlock()
		return memberNode(name, "127.0.1.98", 9)
	}
	window := a.det.Timing().MinSuspicion

	// Heard from after the suspicion began: held back, then upheld.
	start := time.Now()
	a.handleNodeLeave(ghost("g1", 0))
	if got := a.Stats().Overrules; got != 1 {
		t.Fatalf("overrules %d, want 1", got)
	}
	if m, _ := a.Member("g1"); m.Status != StatusAlive {
		t.Fatalf("overruled node is %s, want alive", m.Status)
	}
	if err := events.has(EventFail, "g1"); err == nil {
		t.Fatal("overruled verdict reported at once")
	}
	testutil.WaitFor(t, waitTimeout, func() error { return events.has(EventFail, "g1") })
	if held := time.Since(start); held < window {
		t.Fatalf("verdict upheld after %v, before the %v window ran out", held, window)
	}
	if cause, _, _ := events.failCause("g1"); cause != CauseUpheld {
		t.Fatalf("upheld verdict's event has cause %q, want %q", cause, CauseUpheld)
	}

	// Last heard from before any suspicion could have begun: failed at once.
	a.handleNodeLeave(ghost("g2", window+time.Millisecond))
	if m, _ := a.Member("g2"); m.Status != StatusFailed {
		t.Fatalf("node silent for %v is %s after the verdict, want failed", window, m.Status)
	}
	testutil.WaitFor(t, waitTimeout, func() error { return events.has(EventFail, "g2") })
	if cause, _, _ := events.failCause("g2"); cause != CauseMemberlist {
		t.Fatalf("memberlist's verdict's event has cause %q, want %q", cause, CauseMemberlist)
	}
	if got := a.Stats().Overrules; got != 1 {
		t.Fatalf("overrules %d, want still 1", got)
	}

	// Overruled, then revived by memberlist: the verdict is withdrawn.
	n := ghost("g3", 0)
	a.handleNodeLeave(n)
	a.mu.Lock()
	at := a.peers["g3"].live.OverruledAt()
	a.mu.Unlock()
	a.handleNodeJoin(n)
	a.upholdVerdict("g3", at) // what the window's timer does
	if m, _ := a.Member("g3"); m.Status != StatusAlive {
		t.Fatalf("revived node is %s, want alive", m.Status)
	}
	for _, typ := range []EventType{EventFail, EventJoin} {
		if err := events.has(typ, "g3"); err == nil {
			t.Fatalf("withdrawn verdict published a %s event", typ)
		}
	}
}

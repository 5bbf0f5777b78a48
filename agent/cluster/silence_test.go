package cluster

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/rpi-cluster/rpi-cluster/agent/detector"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// silenceProfile turns silence verdicts on with test timings, and makes
// memberlist's own verdict take 3 s, so a failure reported well before
// that is the silence verdict's.
var silenceProfile = withProfile(func(p *Profile) {
	p.FastHeartbeatPeers, p.FastHeartbeatInterval, p.SilenceTimeout = 9, 20*time.Millisecond, 400*time.Millisecond
	p.SuspicionMult = 30
})

// gateTransport loses everything its node sends to the addresses in
// muted, and refuses streams to them, while mute is set. A deaf one also
// loses every packet and closes every stream it receives meanwhile.
type gateTransport struct {
	*NetTransport
	mute    atomic.Bool
	muted   []string // host:port; empty: every address
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
}

func (t *gateTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *gateTransport) StreamCh() <-chan net.Conn           { return t.streams }

// Shutdown stops forwarding and drains the inner transport while it shuts
// down: its listener would otherwise block delivering a packet.
func (t *gateTransport) Shutdown() error {
	close(t.done)
	stopped := make(chan struct{})
	go func() {
		for {
			select {
			case <-t.NetTransport.PacketCh():
			case c := <-t.NetTransport.StreamCh():
				c.Close()
			case <-stopped:
				return
			}
		}
	}()
	defer close(stopped)
	return t.NetTransport.Shutdown()
}

func (t *gateTransport) forward(deaf bool) {
	packets, streams := t.NetTransport.PacketCh(), t.NetTransport.StreamCh()
	for {
		select {
		case p := <-packets:
			if deaf && t.mute.Load() {
				continue
			}
			select {
			case t.packets <- p:
			case <-t.done:
				return
			}
		case c := <-streams:
			if deaf && t.mute.Load() {
				c.Close()
				continue
			}
			select {
			case t.streams <- c:
			case <-t.done:
				c.Close()
				return
			}
		case <-t.done:
			return
		}
	}
}

func (t *gateTransport) blocks(addr string) bool {
	return t.mute.Load() && (len(t.muted) == 0 || slices.Contains(t.muted, addr))
}

func (t *gateTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.blocks(addr) {
		return time.Now(), nil
	}
	return t.NetTransport.WriteTo(b, addr)
}

func (t *gateTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *gateTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.blocks(addr) {
		return nil, errors.New("muted")
	}
	return t.NetTransport.DialTimeout(addr, timeout)
}

func (t *gateTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// gatedNode starts a node whose outgoing traffic (and incoming packets, if
// deaf) the returned gate can cut.
func gatedNode(t *testing.T, name, ip string, muted []string, deaf bool, opts ...nodeOpt) (*Cluster, *gateTransport) {
	t.Helper()
	nt, err := NewNetTransport(ip, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	gate := &gateTransport{NetTransport: nt, muted: muted, packets: make(chan *memberlist.Packet), streams: make(chan net.Conn), done: make(chan struct{})}
	go gate.forward(deaf)
	opts = append(opts, func(c *Config) { c.Transport = gate })
	return startNode(t, name, ip, opts...), gate
}

// heard waits until o has had a heartbeat from name: only then is name
// judged on silence.
func heard(t *testing.T, o *Cluster, name string) {
	t.Helper()
	testutil.WaitFor(t, waitTimeout, func() error {
		o.mu.Lock()
		defer o.mu.Unlock()
		if p := o.peers[name]; p == nil || p.live.HeardAt().IsZero() {
			return fmt.Errorf("%s has no heartbeat from %s yet", o.conf.NodeName, name)
		}
		return nil
	})
}

// A dead node is failed by every peer on heartbeat silence, long before
// memberlist's suspicion runs out; when memberlist's verdict comes, it
// adds no second event.
func TestSilenceFailsDeadNodeAheadOfMemberlist(t *testing.T) {
	nodes := formCluster(t,
		startNode(t, "si1", "127.0.1.111", silenceProfile),
		startNode(t, "si2", "127.0.1.112", silenceProfile),
		startNode(t, "si3", "127.0.1.113", silenceProfile),
		startNode(t, "si4", "127.0.1.114", silenceProfile))
	observers := nodes[:3]
	var events []*collector
	for _, o := range observers {
		events = append(events, collect(o))
	}
	for _, o := range observers {
		heard(t, o, "si4")
	}
	nodes[3].Shutdown()
	testutil.WaitFor(t, waitTimeout, expect(observers, "si4", status(StatusFailed)))
	// Each observer fails it on its own verdict, or on the verdict another
	// observer reached first and told it (a peer's).
	verdicts := uint64(0)
	for _, o := range observers {
		st := o.Stats()
		verdicts += st.SilenceVerdicts
		if n := st.SilenceVerdicts + st.WatcherVerdicts; n != 1 {
			t.Errorf("%s: %d silence verdicts and %d taken from peers, want 1 in all", o.conf.NodeName, st.SilenceVerdicts, st.WatcherVerdicts)
		}
		if n := o.ml.Load().NumMembers(); n != 4 {
			t.Errorf("%s: memberlist counts %d members, want 4: the verdict came from memberlist", o.conf.NodeName, n)
		}
	}
	if verdicts == 0 {
		t.Errorf("no observer reached a silence verdict of its own")
	}
	// memberlist's verdict follows and is absorbed.
	testutil.WaitFor(t, waitTimeout, func() error {
		for _, o := range observers {
			if n := o.ml.Load().NumMembers(); n != 3 {
				return fmt.Errorf("%s: memberlist still counts %d members", o.conf.NodeName, n)
			}
		}
		return nil
	})
	for i, o := range observers {
		if n := events[i].count(EventFail, "si4"); n != 1 {
			t.Errorf("%s: %d fail events for si4, want 1", o.conf.NodeName, n)
		}
		if cause, by, err := events[i].failCause("si4"); err != nil || (cause != CauseSilence && cause != CausePeer) || by == "" || by == "si4" || by == o.conf.NodeName {
			t.Errorf("%s: si4's fail event has cause %q by %q (%v), want a silence verdict witnessed by another peer, or another peer's", o.conf.NodeName, cause, by, err)
		}
		o.mu.Lock()
		silenced := o.peers["si4"].state() == detector.Silenced
		o.mu.Unlock()
		if silenced {
			t.Errorf("%s: si4 still marked failed on silence after memberlist agreed", o.conf.NodeName)
		}
	}
}

// A node that cannot hear one peer, while the others hear it, has no
// witness and does not fail it: memberlist's indirect probes keep it alive.
func TestSilenceWithoutWitnessFailsNobody(t *testing.T) {
	a := startNode(t, "sw1", "127.0.1.121", silenceProfile)
	c := startNode(t, "sw3", "127.0.1.123", silenceProfile)
	b, gate := gatedNode(t, "sw2", "127.0.1.122", []string{addr(a)}, false, silenceProfile)
	formCluster(t, a, b, c)
	heard(t, a, "sw2")
	events := collect(a)
	gate.mute.Store(true) // b -> a is cut; a -> b and everything else work

	// Until a has gone twice the silence timeout without b's heartbeats
	// and has reported that to c: a witness for b's silence, had c one.
	timeout := a.conf.Profile.SilenceTimeout
	testutil.WaitFor(t, waitTimeout, func() error {
		if events.has(EventFail, "sw2") == nil {
			return nil // reported below
		}
		a.mu.Lock()
		silent, _, _ := a.det.Silence(&a.peers["sw2"].live, a.fastLocked(), time.Now())
		a.mu.Unlock()
		c.mu.Lock()
		reported := c.peers["sw2"].live.Witness() == "sw1"
		c.mu.Unlock()
		if silent < 2*timeout || !reported {
			return fmt.Errorf("a has not heard b for %v (want %v), reported to c: %v", silent, 2*timeout, reported)
		}
		return nil
	})
	if err := events.has(EventFail, "sw2"); err == nil {
		t.Fatal("a failed b although c still hears b")
	}
	if n := a.Stats().SilenceVerdicts; n != 0 {
		t.Fatalf("a reached %d silence verdicts, want 0", n)
	}
	// a's phi detector does suspect b; only the verdict needs a witness.
	if m, _ := a.Member("sw2"); m.Status == StatusFailed {
		t.Fatalf("a sees b %s", m.Status)
	}
	if m, _ := c.Member("sw2"); m.Status != StatusAlive {
		t.Fatalf("c sees b %s, want alive", m.Status)
	}
}

// A node silent for longer than the silence timeout is failed, and is
// alive again, with a join event, as soon as its heartbeats resume, before
// memberlist's suspicion of it runs out.
func TestSilenceVerdictEndsWhenHeartbeatsResume(t *testing.T) {
	a := startNode(t, "sr1", "127.0.1.131", silenceProfile)
	c := startNode(t, "sr3", "127.0.1.133", silenceProfile)
	b, gate := gatedNode(t, "sr2", "127.0.1.132", nil, false, silenceProfile)
	observers := []*Cluster{a, c}
	formCluster(t, a, b, c)
	heard(t, a, "sr2")
	heard(t, c, "sr2")
	var events []*collector
	for _, o := range observers {
		events = append(events, collect(o))
	}
	gate.mute.Store(true) // b falls silent to everyone
	testutil.WaitFor(t, waitTimeout, expect(observers, "sr2", status(StatusFailed)))
	gate.mute.Store(false)
	testutil.WaitFor(t, waitTimeout, expect(observers, "sr2", status(StatusAlive)))
	for _, ev := range events {
		testutil.WaitFor(t, waitTimeout, ev.reached(EventJoin, "sr2", 1))
	}
	for i, o := range observers {
		if st := o.Stats(); st.SilenceVerdicts+st.WatcherVerdicts != 1 {
			t.Errorf("%s: %d silence verdicts and %d taken from a peer, want 1 in all", o.conf.NodeName, st.SilenceVerdicts, st.WatcherVerdicts)
		}
		if f, j := events[i].count(EventFail, "sr2"), events[i].count(EventJoin, "sr2"); f != 1 || j != 1 {
			t.Errorf("%s: %d fail and %d join events for b, want 1 and 1", o.conf.NodeName, f, j)
		}
	}
}

// A node cut off from everyone finds every peer silent but hears no
// witness, so it fails nobody on silence; its peers, which witness each
// other, fail it.
func TestIsolatedNodeFailsNobodyOnSilence(t *testing.T) {
	a := startNode(t, "so1", "127.0.1.141", silenceProfile)
	c := startNode(t, "so3", "127.0.1.143", silenceProfile)
	b, gate := gatedNode(t, "so2", "127.0.1.142", nil, true, silenceProfile)
	formCluster(t, a, b, c)
	for _, pair := range [][2]*Cluster{{b, a}, {b, c}, {a, b}, {c, b}} {
		heard(t, pair[0], pair[1].conf.NodeName)
	}
	lonely := collect(b)
	gate.mute.Store(true) // b hears nothing and says nothing
	testutil.WaitFor(t, waitTimeout, expect([]*Cluster{a, c}, "so2", status(StatusFailed)))
	// Until b has gone twice the silence timeout without hearing a or c.
	timeout := b.conf.Profile.SilenceTimeout
	testutil.WaitFor(t, waitTimeout, func() error {
		if b.Stats().SilenceVerdicts > 0 {
			return nil // reported below
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, name := range []string{"so1", "so3"} {
			if silent, _, _ := b.det.Silence(&b.peers[name].live, b.fastLocked(), time.Now()); silent < 2*timeout {
				return fmt.Errorf("b has not heard %s for %v only", name, silent)
			}
		}
		return nil
	})
	if n := b.Stats().SilenceVerdicts; n != 0 {
		t.Fatalf("the silent node failed %d peers on silence", n)
	}
	for _, name := range []string{"so1", "so3"} {
		if err := lonely.has(EventFail, name); err == nil {
			t.Fatalf("the silent node failed %s", name)
		}
	}
}

func TestSilentReportCodec(t *testing.T) {
	msg := encodeNames(msgSilent, "pi-1", []string{"pi-2", "pi-10"})
	if msg[0] != msgSilent {
		t.Fatalf("type byte %d", msg[0])
	}
	from, names, err := decodeNames(msg[1:])
	if err != nil || from != "pi-1" || strings.Join(names, ",") != "pi-2,pi-10" {
		t.Fatalf("decode = %q %q %v", from, names, err)
	}
	for name, body := range map[string][]byte{
		"empty":      {},
		"truncated":  msg[1 : len(msg)-1],
		"zero name":  {0},
		"bad varint": {0xff},
		"too long":   append([]byte{0xff, 0x02}, make([]byte, 300)...),
	} {
		if _, _, err := decodeNames(body); !errors.Is(err, errMalformed) {
			t.Errorf("%s: err %v, want malformed", name, err)
		}
	}
}

// Beyond FastHeartbeatPeers a node judges nobody on silence, even a peer
// whose heartbeats come as often as fast ones would: memberlist decides.
func TestNoSilenceVerdictsInLargerClusters(t *testing.T) {
	// Three peers each, one more than fast heartbeats allow; the test
	// profile's slow rounds are as frequent as these fast ones.
	small := withProfile(func(p *Profile) {
		p.FastHeartbeatPeers, p.FastHeartbeatInterval, p.SilenceTimeout = 2, p.HeartbeatInterval, 16*p.HeartbeatInterval
		// memberlist alone past the limit, and it takes 3 s: a silence
		// verdict would come first.
		p.WatchPeers, p.WatchInterval, p.WatchSilenceTimeout = 0, 0, 0
		p.SuspicionMult = 30
	})
	nodes := formCluster(t,
		startNode(t, "sl1", "127.0.1.151", small),
		startNode(t, "sl2", "127.0.1.152", small),
		startNode(t, "sl3", "127.0.1.153", small),
		startNode(t, "sl4", "127.0.1.154", small))
	observers := nodes[:3]
	nodes[3].Shutdown()
	testutil.WaitFor(t, waitTimeout, expect(observers, "sl4", status(StatusFailed)))
	for _, o := range observers {
		if n := o.Stats().SilenceVerdicts; n != 0 {
			t.Errorf("%s: %d silence verdicts in a cluster past the fast heartbeat limit, want 0", o.conf.NodeName, n)
		}
	}
}

// A peer whose heartbeats overruled memberlist's verdict, and then stop, is
// failed on silence as soon as a witness agrees, not a suspicion window
// later; the overrule's own deadline then adds nothing.
func TestSilenceUpholdsOverruledVerdict(t *testing.T) {
	a := startNode(t, "su1", "127.0.1.161", silenceProfile)
	events := collect(a)
	fast := a.conf.Profile.FastHeartbeatInterval
	a.mu.Lock()
	// g's last heartbeat came 500 ms ago (silent for more than the 400 ms
	// timeout, heard after memberlist's 3 s suspicion began); w witnesses.
	a.addPeerLocked("sug", "127.0.1.162", fast, time.Now().Add(-500*time.Millisecond))
	a.addPeerLocked("suw", "127.0.1.163", fast, time.Now())
	a.mu.Unlock()

	a.handleNodeLeave(memberNode("sug", "127.0.1.162", 9))
	if got := a.Stats().Overrules; got != 1 {
		t.Fatalf("overrules %d, want 1", got)
	}
	a.mu.Lock()
	at := a.peers["sug"].live.OverruledAt()
	a.mu.Unlock()
	a.handleSilent("suw", []string{"sug"}, time.Now())
	testutil.WaitFor(t, waitTimeout, func() error { return events.has(EventFail, "sug") })
	if got := a.Stats().SilenceVerdicts; got != 1 {
		t.Fatalf("silence verdicts %d, want 1: the overrule's deadline failed the node, not its silence", got)
	}
	a.mu.Lock()
	state := a.peers["sug"].state()
	a.mu.Unlock()
	if state != detector.Failed {
		t.Fatalf("after the verdict: %s, want failed (memberlist's verdict upheld)", state)
	}
	a.upholdVerdict("sug", at) // what the overrule's timer does
	if n := events.count(EventFail, "sug"); n != 1 {
		t.Fatalf("%d fail events, want 1", n)
	}
}

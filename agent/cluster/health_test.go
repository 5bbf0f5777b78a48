package cluster

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/rpi-cluster/rpi-cluster/agent/detector"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// stallTransport stalls its node's sends while frozen, as a process the
// CPU or the SD card holds up does: a send started during a stall returns
// when it ends. Receiving goes on.
type stallTransport struct {
	*NetTransport
	until atomic.Int64 // UnixNano the current stall ends at
}

// stall holds every send for d from now.
func (t *stallTransport) stall(d time.Duration) { t.until.Store(time.Now().Add(d).UnixNano()) }

func (t *stallTransport) wait() {
	if d := time.Until(time.Unix(0, t.until.Load())); d > 0 {
		time.Sleep(d) // the stall itself: this is the fault, not a wait for a condition
	}
}

func (t *stallTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	t.wait()
	return t.NetTransport.WriteTo(b, addr)
}

func (t *stallTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

// A node that stalls again and again (a Pi whose CPU a service saturates)
// knows it is late and says so in its heartbeats: when it then stalls for
// longer than the silence timeout its peers do not fail it, as they did
// before it measured its own health.
func TestStalledNodeIsNotFailedOnSilence(t *testing.T) {
	nt, err := NewNetTransport("127.0.1.201", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := &stallTransport{NetTransport: nt}
	slow := startNode(t, "st1", "127.0.1.201", silenceProfile, func(c *Config) { c.Transport = st })
	a := startNode(t, "st2", "127.0.1.202", silenceProfile)
	b := startNode(t, "st3", "127.0.1.203", silenceProfile)
	formCluster(t, slow, a, b)
	observers := []*Cluster{a, b}
	for _, o := range observers {
		heard(t, o, "st1")
	}
	var events []*collector
	for _, o := range observers {
		events = append(events, collect(o))
	}

	// Short stalls, each well inside the silence timeout, close enough
	// together that the node never catches up for long; then one longer
	// than the timeout.
	timeout := silenceTimeout(t)
	for range 4 {
		st.stall(timeout / 3)
		st.wait()
		time.Sleep(timeout / 4) // time between stalls: part of the fault's pattern
	}
	st.stall(2 * timeout)
	st.wait()
	thawed := time.Now()

	// Until both observers have had a heartbeat sent after the long stall.
	testutil.WaitFor(t, waitTimeout, func() error {
		for _, o := range observers {
			o.mu.Lock()
			p := o.peers["st1"]
			heardAt := p.live.HeardAt()
			o.mu.Unlock()
			if heardAt.Before(thawed) {
				return fmt.Errorf("%s has not heard st1 since its stall ended", o.conf.NodeName)
			}
		}
		return nil
	})
	for i, o := range observers {
		if n := o.Stats().SilenceVerdicts; n != 0 {
			t.Errorf("%s failed the stalled node on silence %d times (fail events: %d)", o.conf.NodeName, n, events[i].count(EventFail, "st1"))
		}
		if n := events[i].count(EventFail, "st1"); n != 0 {
			t.Errorf("%s published %d fail events for the stalled node", o.conf.NodeName, n)
		}
	}
}

// silenceTimeout is silenceProfile's silence timeout.
func silenceTimeout(t *testing.T) time.Duration {
	t.Helper()
	var c Config
	silenceProfile(&c)
	return c.Profile.SilenceTimeout
}

// lagTransport hands every received packet to memberlist lag after it
// arrived, as a node whose receive path has fallen behind does.
type lagTransport struct {
	*NetTransport
	lag     time.Duration
	packets chan *memberlist.Packet
	done    chan struct{}
}

func newLagTransport(t *testing.T, ip string, lag time.Duration) *lagTransport {
	t.Helper()
	nt, err := NewNetTransport(ip, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	lt := &lagTransport{NetTransport: nt, lag: lag, packets: make(chan *memberlist.Packet), done: make(chan struct{})}
	queue := make(chan *memberlist.Packet, 4096)
	go func() {
		for {
			select {
			case p := <-nt.PacketCh():
				queue <- p
			case <-lt.done:
				return
			}
		}
	}()
	go func() {
		for {
			select {
			case p := <-queue:
				time.Sleep(time.Until(p.Timestamp.Add(lag))) // the lag itself: the fault
				select {
				case lt.packets <- p:
				case <-lt.done:
					return
				}
			case <-lt.done:
				return
			}
		}
	}()
	return lt
}

func (t *lagTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *lagTransport) Shutdown() error {
	close(t.done)
	return t.NetTransport.Shutdown()
}

// A node whose received packets wait knows it is late and reaches no
// silence verdict of its own, while its healthy peers fail a dead node on
// silence as before and tell it: it takes their verdict (cause peer) at
// once instead of lagging the cluster until it recovers or memberlist
// decides.
func TestLaggingNodeHoldsItsVerdicts(t *testing.T) {
	lt := newLagTransport(t, "127.0.1.204", 4*silenceTimeout(t)/detector.MinSilenceRounds)
	// Probes slow enough that the lag does not fail lg1's own: memberlist
	// (30 s of suspicion here) cannot decide within the test, so lg1's
	// verdict can only be its own or its peers'.
	calmProbes := withProfile(func(p *Profile) { p.ProbeInterval, p.ProbeTimeout = time.Second, 500*time.Millisecond })
	lagging := startNode(t, "lg1", "127.0.1.204", silenceProfile, calmProbes, func(c *Config) { c.Transport = lt })
	b := startNode(t, "lg2", "127.0.1.205", silenceProfile, calmProbes)
	c := startNode(t, "lg3", "127.0.1.206", silenceProfile, calmProbes)
	victim := startNode(t, "lg4", "127.0.1.207", silenceProfile, calmProbes)
	formCluster(t, lagging, b, c, victim)
	for _, o := range []*Cluster{lagging, b, c} {
		heard(t, o, "lg4")
	}
	testutil.WaitFor(t, waitTimeout, func() error {
		if !lagging.det.Degraded() {
			return fmt.Errorf("lg1 is not degraded (late rounds %v)", lagging.det.Health().Stats().LateRounds)
		}
		return nil
	})
	if s := lagging.Stats().Health.LateRounds; s["receive"] == 0 {
		t.Errorf("lg1's late rounds %v: none for its receive backlog", s)
	}

	events := collect(lagging)
	victim.Shutdown()
	testutil.WaitFor(t, waitTimeout, expect([]*Cluster{lagging, b, c}, "lg4", status(StatusFailed)))
	if n := lagging.Stats().SilenceVerdicts; n != 0 {
		t.Errorf("lg1, degraded, reached %d silence verdicts", n)
	}
	testutil.WaitFor(t, waitTimeout, func() error {
		cause, by, err := events.failCause("lg4")
		if err != nil {
			return err
		}
		if cause != CausePeer || (by != "lg2" && by != "lg3") {
			t.Fatalf("lg1 failed lg4 with cause %q by %q, want a healthy peer's verdict (cause %q by lg2 or lg3)", cause, by, CausePeer)
		}
		return nil
	})
	// b and c each reach the verdict, or one takes the other's.
	own := uint64(0)
	for _, o := range []*Cluster{b, c} {
		st := o.Stats()
		own += st.SilenceVerdicts
		if n := st.SilenceVerdicts + st.WatcherVerdicts; n != 1 {
			t.Errorf("%s: %d silence verdicts and %d taken from peers, want 1 in all", o.conf.NodeName, st.SilenceVerdicts, st.WatcherVerdicts)
		}
	}
	if own == 0 {
		t.Errorf("neither healthy observer reached a silence verdict of its own")
	}
}

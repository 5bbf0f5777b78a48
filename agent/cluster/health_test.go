package cluster

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

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
			heardAt := p.heardAt
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

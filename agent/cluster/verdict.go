package cluster

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// memberlist declares a node failed when a suspicion of it runs out
// unrefuted: the node's refutation, an alive message with a higher
// incarnation, has to reach every suspecting node by gossip before the
// suspicion times out. Under heavy loss the node can miss the suspicion, or
// its refutation can miss one observer, and that observer then declares a
// live node failed. The e2e suite's 10 % loss on every node caught this
// twice: one of three observers held a node failed while the node's
// heartbeats were still arriving there.
//
// Heartbeats are independent evidence of life. A suspicion lasts at least
// minSuspicion before it becomes a verdict, so a heartbeat that arrived
// less than minSuspicion before the verdict was sent after the suspicion
// began: the node outlived it. Such a verdict is overruled. The node stays
// alive here and is asked to re-advertise itself, at once and again at
// each heartbeat from it; its alive message revives it in memberlist
// (NotifyJoin), which ends the overrule. If memberlist has not revived it
// within another minSuspicion, the verdict is upheld and reported then (or
// sooner, when its heartbeats fall silent: see silence.go). A node that
// died just after a heartbeat while already suspected is still failed, one
// suspicion window late (or on silence); a node killed outright is never
// overruled, since its last heartbeat precedes any suspicion of it.

// outlivedSuspicionLocked reports whether p's last heartbeat arrived
// recently enough to overrule a failure verdict reached at now.
func (c *Cluster) outlivedSuspicionLocked(p *peer, now time.Time) bool {
	return !p.heardAt.IsZero() && now.Sub(p.heardAt) < c.minSuspicion()
}

// overruleLocked sets memberlist's verdict on name aside and asks the node
// to re-advertise itself; the verdict is upheld after minSuspicion unless
// memberlist revives the node first.
func (c *Cluster) overruleLocked(name string, p *peer, now time.Time) {
	p.overruled = now
	c.overrules.Add(1)
	c.askReadvertiseLocked(name)
	time.AfterFunc(c.minSuspicion(), func() { c.upholdVerdict(name, now) })
}

// askReadvertiseLocked queues a request for name to re-advertise itself;
// introduceLoop sends it. A full queue drops it: the next heartbeat from
// the node asks again.
func (c *Cluster) askReadvertiseLocked(name string) {
	select {
	case c.introduceCh <- heartbeat{name: name}:
	default:
	}
}

// upholdVerdict reports the failure verdict overruled at `at`, unless the
// node was revived (or overruled again) since.
func (c *Cluster) upholdVerdict(name string, at time.Time) {
	select {
	case <-c.shutdownCh:
		return
	default:
	}
	now := time.Now()
	c.mu.Lock()
	p := c.peers[name]
	if p == nil || !p.overruled.Equal(at) {
		c.mu.Unlock()
		return
	}
	p.overruled = time.Time{}
	ev := c.goneLocked(name, p, false, now)
	c.mu.Unlock()
	c.logger.Info("node did not re-advertise itself; upholding memberlist's verdict", "peer", name)
	c.reportGone(ev)
}

// withdrawVerdictLocked ends the overrule of p: memberlist reports the node
// alive again. It was never reported gone, so nothing is published.
func (c *Cluster) withdrawVerdictLocked(p *peer, n *memberlist.Node) {
	p.overruled = time.Time{}
	c.setAddrLocked(p, n)
}

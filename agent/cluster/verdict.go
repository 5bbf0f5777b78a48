package cluster

import (
	"time"
)

// When memberlist declares a node failed that outlived the suspicion (its
// heartbeat arrived after the suspicion began), the detector overrules the
// verdict (detector.GoneOverruled): the node is asked to re-advertise
// itself, at once and at each heartbeat from it, and the verdict is upheld
// after MinSuspicion unless memberlist revives the node first.

// overruleLocked asks name, whose failure verdict the detector set aside
// at `at`, to re-advertise itself, and upholds the verdict after
// MinSuspicion unless memberlist revives the node first.
func (c *Cluster) overruleLocked(name string, at time.Time) {
	c.overrules.Add(1)
	c.askReadvertiseLocked(name)
	time.AfterFunc(c.det.Timing().MinSuspicion, func() { c.upholdVerdict(name, at) })
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
	if p == nil || !c.det.Uphold(&p.live, at, now) {
		c.mu.Unlock()
		return
	}
	c.recountLocked()
	ev := c.goneEventLocked(name, p, now, CauseUpheld, "")
	c.mu.Unlock()
	c.logger.Info("node did not re-advertise itself; upholding memberlist's verdict", "peer", name)
	c.reportGone(ev)
}

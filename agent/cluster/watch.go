package cluster

import (
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/detector"
)

// Watched heartbeats (agent/detector: Plan picks each node's watchers on
// the watch ring) carry silence verdicts past FastHeartbeatPeers. A node
// that fails a peer on silence, a watcher or in a small cluster any peer,
// tells every peer (msgVerdict); each takes the verdict unless it heard
// from the node itself within half the watch timeout, so a node that is
// degraded or has no witness yet does not lag behind the others. A node
// that hears of a verdict about itself is alive, and heartbeats every peer
// at once: each takes it back as soon as that heartbeat arrives.

// handleVerdict takes a peer's verdict that name is failed: a watcher's,
// or in a small cluster (the node heartbeats this one fast) any peer's. A
// verdict about this node is refuted with a heartbeat to every peer.
func (c *Cluster) handleVerdict(from, name string, now time.Time) {
	if name == c.conf.NodeName {
		c.refute(from, now)
		return
	}
	c.mu.Lock()
	w, p := c.peers[from], c.peers[name]
	if w == nil || !w.state().IsAlive() || p == nil {
		c.mu.Unlock()
		return
	}
	cause := CauseWatcher
	if fast := c.conf.Profile.FastHeartbeatInterval; fast > 0 && p.live.Period() <= fast {
		cause = CausePeer // judged on fast heartbeats: a small cluster's
	}
	switch outcome, heard := c.det.WatcherVerdict(&p.live, now); outcome {
	case detector.VerdictRefused:
		c.mu.Unlock()
		c.logger.Info("a peer failed a node this node still hears; keeping it alive",
			"peer", name, "by", from, "cause", cause, "last_heartbeat", heard.Round(time.Millisecond))
	case detector.VerdictTaken:
		c.watcherVerdicts.Add(1)
		c.recountLocked()
		ev := c.goneEventLocked(name, p, now, cause, from)
		c.mu.Unlock()
		c.logger.Info("a peer failed a node on silence; failing it ahead of memberlist", "peer", name, "by", from, "cause", cause)
		c.reportGone(ev)
	default:
		c.mu.Unlock()
	}
}

// refute answers a verdict about this node: every peer gets a heartbeat
// now, at most once per quarter of the watch silence timeout.
func (c *Cluster) refute(from string, now time.Time) {
	c.mu.Lock()
	if c.leaving || now.Sub(c.refutedAt) < c.conf.Profile.WatchSilenceTimeout/4 {
		c.mu.Unlock()
		return
	}
	c.refutedAt = now
	c.refutations.Add(1)
	var sends []detector.Send
	for name, p := range c.peers {
		if period := p.live.SentPeriod(); p.state().GetsHeartbeats() && period > 0 {
			sends = append(sends, detector.Send{Name: name, Addr: p.addr, Port: p.port, Period: period})
		}
	}
	c.mu.Unlock()
	c.logger.Warn("a peer failed this node on silence; heartbeating every peer so that they take it back",
		"by", from, "peers", len(sends))
	c.sendHeartbeats(sends)
}

// sendHeartbeats sends each heartbeat with a fresh sequence number.
func (c *Cluster) sendHeartbeats(sends []detector.Send) {
	for _, s := range sends {
		msg := encodeHeartbeat(c.conf.NodeName, *c.hbAddr.Load(), c.hbSeq.Add(1), s.Period)
		if err := c.ml.Load().SendBestEffort(memberNode(s.Name, s.Addr, s.Port), msg); err != nil {
			c.logger.Debug("heartbeat not sent", "peer", s.Name, "err", err)
		}
	}
}

// sendVerdicts tells every peer heartbeated (targets), the subject
// included, about the round's verdicts.
func (c *Cluster) sendVerdicts(verdicts []detector.Verdict, targets []detector.Target) {
	for _, v := range verdicts {
		msg := encodeNames(msgVerdict, c.conf.NodeName, []string{v.Name})
		for _, hp := range targets {
			if err := c.ml.Load().SendBestEffort(memberNode(hp.Name, hp.Addr, hp.Port), msg); err != nil {
				c.logger.Debug("verdict not sent", "peer", hp.Name, "err", err)
			}
		}
	}
}

package cluster

import (
	"cmp"
	"hash/fnv"
	"slices"
	"time"
)

// Silence verdicts (silence.go) need every node to hear every other every
// 50 ms: 20·(N-1) packets a second per node, which is why they stop at
// FastHeartbeatPeers. Past that, memberlist alone would decide, and its
// suspicion timeout grows with log10(N) (docs/PERFORMANCE.md has the
// figures at N = 100).
//
// Watched heartbeats keep a verdict from silence at any size for a flat
// cost. The alive nodes sit on a ring ordered by a hash of their names.
// Each node sends a heartbeat every WatchInterval (200 ms on lan) to the
// WatchPeers (2) nodes that follow it on the ring, its watchers, and
// announces that period in them, so a watcher knows to judge it; the
// rest of its peers get the ordinary slow rounds. A watcher fails the node
// once it has been silent for WatchSilenceTimeout (3.2 s) and the other
// watcher has reported it silent too (the witness rule of silence.go;
// reports about a node go to its watchers), and then sends the verdict
// (msgVerdict) to every peer. A peer takes the verdict unless it has
// heard from the node itself within half the timeout; memberlist's own
// verdict, when it comes, adds no event.
//
// Views of the ring differ for a moment while nodes come and go, so it is
// the watched node that picks its watchers, and a node judges only a peer
// whose latest heartbeat to it announced the watch period. A watcher the
// node drops is told so by a slow-period heartbeat every round for half
// the timeout (eight of them on lan; with the witness rule besides, loss
// cannot leave it judging). A node that hears of a verdict about itself is
// alive, and heartbeats every peer at once: each of them takes it back
// (silence.go's revival) as soon as that heartbeat arrives.

// ringNode is a node's place on the watch ring.
type ringNode struct {
	key  uint64
	name string
	addr string
	port int
}

// ringKey places a node on the watch ring: the same place on every node.
// FNV alone keeps names that differ in their last characters (pi-21,
// pi-22) close together; the finaliser of MurmurHash3 spreads them.
func ringKey(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	k := h.Sum64()
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	k ^= k >> 33
	return k
}

// compareRing orders the ring by key, then name.
func compareRing(a, b ringNode) int {
	if c := cmp.Compare(a.key, b.key); c != 0 {
		return c
	}
	return cmp.Compare(a.name, b.name)
}

// successors returns the k nodes that follow name on ring, a slice sorted
// by compareRing; name need not be on it, and is never returned.
func successors(ring []ringNode, name string, k int) []ringNode {
	at := ringNode{key: ringKey(name), name: name}
	i, _ := slices.BinarySearchFunc(ring, at, compareRing)
	out := make([]ringNode, 0, k)
	for j := 0; j < len(ring) && len(out) < k; j++ {
		if n := ring[(i+j)%len(ring)]; n.name != name {
			out = append(out, n)
		}
	}
	return out
}

// handleVerdict takes a watcher's verdict that name is failed. A verdict
// about this node is refuted with a heartbeat to every peer.
func (c *Cluster) handleVerdict(from, name string, now time.Time) {
	if name == c.conf.NodeName {
		c.refute(from, now)
		return
	}
	c.mu.Lock()
	w, p := c.peers[from], c.peers[name]
	if w == nil || w.status != StatusAlive || p == nil || p.status != StatusAlive || p.leaving {
		c.mu.Unlock()
		return
	}
	if heard := now.Sub(p.heardAt); heard < c.conf.Profile.WatchSilenceTimeout/2 {
		c.mu.Unlock()
		c.logger.Info("a watcher failed a node this node still hears; keeping it alive",
			"peer", name, "watcher", from, "last_heartbeat", heard.Round(time.Millisecond))
		return
	}
	ev := c.failOnSilenceLocked(name, p, now)
	c.watcherVerdicts.Add(1)
	c.mu.Unlock()
	c.logger.Info("a watcher failed a node on silence; failing it ahead of memberlist", "peer", name, "watcher", from)
	c.reportGone(ev)
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
	var sends []heartbeatSend
	for name, p := range c.peers {
		if (p.status == StatusAlive || p.silenced) && p.sentPeriod > 0 {
			sends = append(sends, heartbeatSend{name: name, addr: p.addr, port: p.port, period: p.sentPeriod})
		}
	}
	c.mu.Unlock()
	c.logger.Warn("a peer failed this node on silence; heartbeating every peer so that they take it back",
		"watcher", from, "peers", len(sends))
	c.sendHeartbeats(sends)
}

// heartbeatSend is one heartbeat to send, with the period it announces.
type heartbeatSend struct {
	name   string
	addr   string
	port   int
	period time.Duration
}

// sendHeartbeats sends each heartbeat with a fresh sequence number.
func (c *Cluster) sendHeartbeats(sends []heartbeatSend) {
	for _, s := range sends {
		msg := encodeHeartbeat(c.conf.NodeName, *c.hbAddr.Load(), c.hbSeq.Add(1), s.period)
		if err := c.ml.Load().SendBestEffort(memberNode(s.name, s.addr, s.port), msg); err != nil {
			c.logger.Debug("heartbeat not sent", "peer", s.name, "err", err)
		}
	}
}

// sendVerdicts tells every peer on ring, the subject included, about the
// verdicts reached on watch heartbeats.
func (c *Cluster) sendVerdicts(verdicts []silenceVerdict, peers []heartbeatPeer) {
	for _, v := range verdicts {
		if !v.watched {
			continue
		}
		msg := encodeNames(msgVerdict, c.conf.NodeName, []string{v.ev.Member.Name})
		for _, hp := range peers {
			if err := c.ml.Load().SendBestEffort(memberNode(hp.name, hp.addr, hp.port), msg); err != nil {
				c.logger.Debug("verdict not sent", "peer", hp.name, "err", err)
			}
		}
	}
}

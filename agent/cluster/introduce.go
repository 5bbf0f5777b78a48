package cluster

import (
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/rpi-cluster/rpi-cluster/agent/detector"
)

// A heartbeat can come from a node memberlist has never reported: the
// gossip announcing it missed this node (each alive message is relayed a
// bounded number of times, and in a small cluster forming quickly a node
// can miss all of them). Left alone, memberlist repairs that only at the
// next push-pull with that node, which can be minutes away in a large
// cluster. Since the heartbeat names the sender's gossip address, the node
// is introduced at once instead: a push-pull with it (memberlist's Join).
//
// Nodes this one holds failed are deliberately not introduced, although
// they may heartbeat too (they still think this node alive): a push-pull
// merges the peer's view, and a node that was frozen or cut off holds
// stale suspicions of others, which the merge would spread. memberlist's
// own path is gossip to the dead, then refutation, but the dead message is
// retransmitted only a few times: under heavy loss the node may never hear
// it, and this node then holds it failed until a push-pull between the two,
// up to a minute away (the e2e suite's 10 % loss saw 16 s). So a heartbeat
// from a node held failed asks it to re-advertise itself instead (a
// msgReadvertise; it answers with memberlist's UpdateNode, an alive message
// with a higher incarnation, which revives it everywhere it was failed).
// The same request goes to a node whose failure verdict was overruled
// (agent/detector), at the verdict and at each heartbeat until it is revived.
//
// Introductions are bounded: one per sender per introduceEvery, at most
// introduceQueue waiting, one running at a time.

// introduceQueue is how many introductions may wait; more are dropped and
// retried on a later heartbeat.
const introduceQueue = 8

// introduceEvery is how long after introducing a node it is not
// introduced again: five heartbeat rounds.
func (c *Cluster) introduceEvery() time.Duration {
	return 5 * c.conf.Profile.HeartbeatInterval
}

// strangerLocked notes a heartbeat from a node memberlist has not
// reported and queues its introduction unless one was queued recently.
func (c *Cluster) strangerLocked(hb heartbeat, now time.Time) {
	if t, ok := c.introduced[hb.name]; ok && now.Sub(t) < c.introduceEvery() {
		return
	}
	if len(c.introduced) >= maxUnknown {
		for name, t := range c.introduced {
			if now.Sub(t) >= c.introduceEvery() {
				delete(c.introduced, name)
			}
		}
		if len(c.introduced) >= maxUnknown {
			return
		}
	}
	select {
	case c.introduceCh <- hb:
		c.introduced[hb.name] = now
	default: // busy: a later heartbeat will ask again
	}
}

// introduceLoop runs queued introductions until Shutdown.
func (c *Cluster) introduceLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.shutdownCh:
			return
		case hb := <-c.introduceCh:
			c.mu.Lock()
			p := c.peers[hb.name]
			known := p != nil && p.state() != detector.Unknown
			moved := known && movingLocked(p, time.Now()) && hb.addr == p.movingTo && hostPort(p.addr, p.port) != hb.addr
			var failed *memberlist.Node
			heldFailed := known && p.state().IsFailed()
			if heldFailed || known && (p.state() == detector.Overruled || p.staleLeave) {
				failed = memberNode(hb.name, p.addr, p.port)
			}
			c.mu.Unlock()
			if failed != nil {
				if heldFailed { // overrules log once, in handleNodeLeave
					c.logger.Info("heard from a node held failed; asking it to re-advertise", "peer", hb.name)
				}
				if err := c.ml.Load().SendBestEffort(failed, []byte{msgReadvertise}); err != nil {
					c.logger.Debug("cannot ask for re-advertisement", "peer", hb.name, "err", err)
				}
				continue
			}
			if known && !moved {
				continue // gossip got there first
			}
			c.introductions.Add(1)
			c.logger.Info("heard from a node memberlist has not reported; syncing with it", "peer", hb.name, "addr", hb.addr)
			if _, err := c.ml.Load().Join([]string{hb.addr}); err != nil {
				c.logger.Debug("sync with unlisted node failed", "peer", hb.name, "addr", hb.addr, "err", err)
			}
		}
	}
}

package cluster

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/rpi-cluster/rpi-cluster/agent/detector"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
)

// ackQueue bounds the acknowledgements waiting to go to leaving peers.
// Leaves are rare; a full queue drops the ack and the leaver stops
// waiting at its deadline.
const ackQueue = 64

// leaveAcks tracks which peers have confirmed this node's leave intent.
type leaveAcks struct {
	pending map[string]bool
	done    chan struct{} // closed when pending empties
}

// Leave tells the cluster this node is going away, so peers report it as
// left rather than failed, and waits up to timeout for the news to go out.
// Gossip keeps running until Shutdown.
//
// memberlist reports a leave and a failure the same way, so the leave
// intent has to reach every peer before memberlist's own leave message
// does. Gossip alone cannot promise that: a peer that misses the intent's
// few retransmissions reports a failure first. So the intent goes straight
// to every alive peer over TCP, and Leave waits (up to half the timeout)
// until each has acknowledged it. It is gossiped as well, for peers this
// node does not know yet; peers that still get it late turn "failed" into
// "left" when it arrives, or at the next push-pull.
func (c *Cluster) Leave(timeout time.Duration) error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	switch {
	case c.stopped:
		return fmt.Errorf("leave: %w", ErrShutdown)
	case !c.started:
		return fmt.Errorf("leave: %w", ErrNotStarted)
	}
	deadline := time.Now().Add(timeout)

	c.mu.Lock()
	c.leaving = true
	intent := leaveIntent{Name: c.self.Name, Version: c.self.Version}
	var targets []*memberlist.Node
	acks := &leaveAcks{pending: make(map[string]bool), done: make(chan struct{})}
	for name, p := range c.peers {
		if p.state().IsAlive() {
			targets = append(targets, memberNode(name, p.addr, p.port))
			acks.pending[name] = true
		}
	}
	if len(acks.pending) == 0 {
		close(acks.done)
	}
	c.acks = acks
	c.mu.Unlock()

	body, err := json.Marshal(intent)
	if err != nil {
		return fmt.Errorf("leave: encode intent: %w", err)
	}
	signed := seal(c.key, identity.PurposeLeave, body)
	gossiped := append([]byte{msgLeave}, signed...)
	direct := append([]byte{msgLeaveDirect}, signed...)
	c.broadcasts.QueueBroadcast(&namedBroadcast{key: leaveKey(intent.Name), msg: gossiped})
	// lifeMu is held and the cluster is not stopped, so Shutdown's Wait
	// cannot run concurrently with these Adds.
	for _, n := range targets {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if err := c.ml.Load().SendReliable(n, direct); err != nil {
				c.logger.Debug("cannot send leave intent", "peer", n.Name, "err", err)
			}
		}()
	}
	wait := time.NewTimer(timeout / 2)
	defer wait.Stop()
	select {
	case <-acks.done:
	case <-wait.C:
		c.mu.Lock()
		missing := len(acks.pending)
		c.mu.Unlock()
		c.logger.Warn("leaving before every peer confirmed the leave intent; those may report this node failed until they hear of it",
			"unconfirmed", missing, "peers", len(targets))
	}
	if err := c.ml.Load().Leave(time.Until(deadline)); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	c.logger.Info("left cluster")
	return nil
}

// ackLeave queues an acknowledgement for a peer that sent us its leave
// intent directly. It never blocks the caller (memberlist's packet
// handler).
func (c *Cluster) ackLeave(name string) {
	c.mu.Lock()
	p := c.peers[name]
	if name == c.self.Name || p == nil || p.addr == "" {
		c.mu.Unlock()
		return
	}
	n := memberNode(name, p.addr, p.port)
	c.mu.Unlock()
	select {
	case c.ackCh <- n:
	default:
		c.logger.Warn("too many leave acknowledgements queued; dropping one", "peer", name)
	}
}

// replyLoop answers peers' direct requests, one at a time: it sends the
// queued leave acknowledgements and re-advertises this node when a peer
// holds it failed.
func (c *Cluster) replyLoop() {
	defer c.wg.Done()
	msg, err := encodeJSON(msgLeaveAck, leaveAck{From: c.conf.NodeName})
	if err != nil {
		c.logger.Error("cannot encode leave acknowledgement", "err", err)
		return
	}
	for {
		select {
		case <-c.shutdownCh:
			return
		case n := <-c.ackCh:
			if err := c.ml.Load().SendReliable(n, msg); err != nil {
				c.logger.Debug("cannot acknowledge leave intent", "peer", n.Name, "err", err)
			}
		case <-c.readvertiseCh:
			c.mu.Lock()
			leaving := c.leaving
			c.mu.Unlock()
			if leaving {
				continue // an alive message now would undo the leave
			}
			c.readvertisements.Add(1)
			c.logger.Info("a peer holds this node failed; re-advertising it")
			// The alive message is queued before UpdateNode waits for its
			// last retransmission; waiting longer than a gossip round
			// would only hold up Shutdown, which stops gossip first.
			if err := c.ml.Load().UpdateNode(c.conf.Profile.GossipInterval); err != nil {
				c.logger.Debug("re-advertisement not yet sent", "err", err)
			}
		}
	}
}

// handleLeaveAck records that a peer has our leave intent.
func (c *Cluster) handleLeaveAck(a leaveAck) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.acks == nil || !c.acks.pending[a.From] {
		return
	}
	delete(c.acks.pending, a.From)
	if len(c.acks.pending) == 0 {
		close(c.acks.done)
	}
}

// handleSignedLeave checks a signed leave intent (signature ‖ JSON, kept
// as it is) and hands it to handleLeaveIntent. Only the leaver can sign
// its intent, so it is checked against the key pinned for its name; an
// intent for a name with no pin cannot be checked and is dropped. It
// returns the leaver's name and whether the intent was accepted.
func (c *Cluster) handleSignedLeave(signed []byte) (string, bool) {
	l, sig, body, err := decodeLeave(signed)
	if err != nil {
		c.dropMalformed(err)
		return "", false
	}
	if rj := checkNodeName("leave intent", l.Name); rj != nil {
		c.dropRejected(l.Name, rj)
		return "", false
	}
	if l.Name == c.conf.NodeName {
		return "", false // this node's own, relayed back
	}
	pub, ok := c.pins.Lookup(l.Name)
	if !ok {
		c.dropRejected(l.Name, reject(rejectUnknownKey, "leave intent of %s: no key pinned for it to check the signature against", l.Name))
		return "", false
	}
	if !identity.Verify(pub, identity.PurposeLeave, body, sig) {
		c.dropRejected(l.Name, reject(rejectBadSignature, "leave intent of %s: %w (pinned key %s)", l.Name, identity.ErrBadSignature, identity.Fingerprint(pub)))
		return "", false
	}
	c.handleLeaveIntent(l, signed)
	return l.Name, true
}

// handleLeaveIntent marks a node as leaving, or turns its failure into a
// leave when the intent arrives after memberlist's verdict. signed is the
// intent as the leaver signed it, relayed and kept for push-pull. An
// intent older than the node's record is from an earlier run: ignored.
func (c *Cluster) handleLeaveIntent(l leaveIntent, signed []byte) {
	now := time.Now()
	c.mu.Lock()
	p := c.peers[l.Name]
	if l.Name == c.self.Name || p == nil || p.state() == detector.Unknown || p.live.Leaving() ||
		(p.rec != nil && l.Version < p.rec.Version) {
		c.mu.Unlock()
		return
	}
	p.leaveSigned = signed
	var ev *Event
	if c.det.LeaveIntent(&p.live) {
		c.gen++
		ev = &Event{Type: EventLeave, Member: c.memberLocked(l.Name, p, now), Time: now}
	}
	c.mu.Unlock()
	c.broadcasts.QueueBroadcast(&namedBroadcast{key: leaveKey(l.Name), msg: append([]byte{msgLeave}, signed...)})
	if ev != nil {
		c.logger.Info("node left", "peer", l.Name)
		c.publish(*ev)
	}
}

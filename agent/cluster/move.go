package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/rpi-cluster/rpi-cluster/agent/detector"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
)

// A node's address can change under it: a DHCP renewal hands out another
// lease, a container is reconnected with another IP. memberlist fixes a
// node's address when it is created and has no way to change it: the node
// keeps announcing the old one, and peers refuse an alive message for a
// name that is alive at another address (a conflict) until the old one has
// been dead for DeadNodeReclaimTime. So Readdress moves the node by
// replacing its memberlist:
//
//  1. It sends every peer not known to have left (failed ones too: after
//     a gap without an address it was this node that was cut off) a move
//     notice: a leave intent naming the new address, signed with the
//     node's key, so only the node itself can move its name (another node
//     claiming it is still refused, by its key and by memberlist).
//  2. The old memberlist leaves: peers' memberlists mark the name left,
//     the one state from which they accept it at another address at once.
//     A peer holding the move notice reports no leave or failure.
//  3. A new memberlist over the same transport (bound to every interface)
//     advertises the new address and joins the peers; each reports the
//     node at the new address as an update, and the node's record, signed
//     again with the new address, replaces the old one.
//
// Peers that missed the notice report the node left, then back: never
// failed. A peer that heard the new address before the leave refuses it
// once as a conflict; the node's heartbeats carry the new address, and a
// peer holding a move notice syncs with that address when memberlist does
// not know it yet (see handleHeartbeat). A peer that failed the node while
// it had no address ignores the leave (memberlist drops news of a node it
// holds dead) and takes the name at the new address on the notice's word
// (see checkMoving and reclaimAnyTime).

// moveGrace is how long after a move notice a peer treats the node's
// memberlist leave as part of the move. A move takes a leave and a join,
// well under a second on a LAN; past the grace a leave is a leave again.
const moveGrace = 10 * time.Second

// keptTransport hands memberlist the cluster's transport without letting
// memberlist's Shutdown close it: Readdress replaces the memberlist and
// keeps the listeners; Cluster.Shutdown closes them.
type keptTransport struct{ *CountingTransport }

func (keptTransport) Shutdown() error { return nil }

// Readdress moves this node to addr, an IP of this host: peers list it at
// addr within a few gossip rounds, with its name, key and record. The
// transport must be listening on every interface (BindAddr 0.0.0.0, the
// agent's default): a listener bound to the old address cannot follow.
// The same address again is a no-op.
func (c *Cluster) Readdress(addr string) error {
	ip := net.ParseIP(addr)
	if ip == nil {
		return fmt.Errorf("readdress: %q is not an IP address", addr)
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	switch {
	case c.stopped:
		return fmt.Errorf("readdress: %w", ErrShutdown)
	case !c.started:
		return fmt.Errorf("readdress: %w", ErrNotStarted)
	}
	if b := net.ParseIP(c.conf.BindAddr); b == nil || !b.IsUnspecified() {
		return fmt.Errorf("readdress to %s: gossip is bound to %s; bind it to 0.0.0.0 to let the node follow its address", ip, c.conf.BindAddr)
	}
	old := c.ml.Load()
	oldAddr := old.LocalNode().Addr
	port := int(old.LocalNode().Port)
	if oldAddr.Equal(ip) {
		return nil
	}
	to := net.JoinHostPort(ip.String(), strconv.Itoa(port))

	c.mu.Lock()
	if c.leaving {
		c.mu.Unlock()
		return errors.New("readdress: the node is leaving")
	}
	notice := leaveIntent{Name: c.self.Name, Version: c.self.Version, To: to}
	var peers []*memberlist.Node
	var joinAddrs []string
	for name, p := range c.peers {
		// Peers held failed too: after a gap without an address it is
		// this node that was cut off, and they are likely up.
		if s := p.state(); s.IsAlive() || s.IsFailed() {
			peers = append(peers, memberNode(name, p.addr, p.port))
			joinAddrs = append(joinAddrs, hostPort(p.addr, p.port))
		}
	}
	c.mu.Unlock()

	body, err := json.Marshal(notice)
	if err != nil {
		return fmt.Errorf("readdress: encode move notice: %w", err)
	}
	signed := seal(c.key, identity.PurposeLeave, body)
	// Sent straight to each peer before the leave, over TCP, so the
	// notice is there when the leave arrives; gossiped for the others.
	direct := append([]byte{msgMove}, signed...)
	for _, n := range peers {
		if err := old.SendReliable(n, direct); err != nil {
			c.logger.Debug("cannot send move notice", "peer", n.Name, "err", err)
		}
	}
	c.broadcasts.QueueBroadcast(&namedBroadcast{key: leaveKey(notice.Name), msg: append([]byte{msgMove}, signed...)})

	if err := old.Leave(c.conf.Profile.GossipInterval * 5); err != nil {
		c.logger.Debug("leave of the old address not confirmed", "err", err)
	}
	if err := old.Shutdown(); err != nil {
		c.logger.Debug("shut down the memberlist of the old address", "err", err)
	}
	ml, err := memberlist.Create(c.memberlistConfig(ip.String()))
	if err != nil {
		// The old memberlist is gone: keep it as the one in place, so
		// every call fails as after Shutdown rather than on nil.
		return fmt.Errorf("readdress to %s: create memberlist: %w", ip, err)
	}
	c.ml.Store(ml)
	rec, signedRec := c.adoptLocalAddress(ml)
	hb := net.JoinHostPort(rec.Addr, strconv.Itoa(rec.GossipPort))
	c.hbAddr.Store(&hb)
	c.queueRecord(rec.Name, signedRec)
	c.logger.Info("address changed; node moved", "from", net.JoinHostPort(oldAddr.String(), strconv.Itoa(port)), "to", hb)

	if len(joinAddrs) > 0 {
		if _, err := ml.Join(joinAddrs); err != nil {
			// Peers find the node again through its heartbeats and mDNS.
			c.logger.Warn("rejoin at the new address reached no peer yet", "err", err)
		}
	}
	return nil
}

// handleMoveNotice records that a peer is moving to a new address (see
// Readdress): its memberlist leave that follows is not reported.
func (c *Cluster) handleMoveNotice(signed []byte) {
	l, sig, body, err := decodeLeave(signed)
	if err != nil {
		c.dropMalformed(err)
		return
	}
	if rj := checkNodeName("move notice", l.Name); rj != nil {
		c.dropRejected(l.Name, rj)
		return
	}
	if l.Name == c.conf.NodeName || l.To == "" {
		return
	}
	pub, ok := c.pins.Lookup(l.Name)
	if !ok {
		c.dropRejected(l.Name, reject(rejectUnknownKey, "move notice of %s: no key pinned for it to check the signature against", l.Name))
		return
	}
	if !identity.Verify(pub, identity.PurposeLeave, body, sig) {
		c.dropRejected(l.Name, reject(rejectBadSignature, "move notice of %s: %w (pinned key %s)", l.Name, identity.ErrBadSignature, identity.Fingerprint(pub)))
		return
	}
	now := time.Now()
	c.mu.Lock()
	p := c.peers[l.Name]
	if p == nil || p.state() == detector.Unknown || (p.rec != nil && l.Version < p.rec.Version) ||
		(p.movingTo == l.To && now.Sub(p.movedAt) < moveGrace) {
		c.mu.Unlock()
		return
	}
	p.movingTo, p.movedAt = l.To, now
	c.mu.Unlock()
	c.logger.Info("node is moving to a new address", "peer", l.Name, "to", l.To)
	c.broadcasts.QueueBroadcast(&namedBroadcast{key: leaveKey(l.Name), msg: append([]byte{msgMove}, signed...)})
}

// reclaimAnyTime is the DeadNodeReclaimTime handed to memberlist: it lets
// memberlist take a failed name at another address at once, and leaves
// the decision to checkMoving, which runs first (memberlist asks the alive
// delegate before it compares addresses). memberlist alone would hold a
// failed node's name for the profile's DeadNodeReclaimTime even when the
// node itself, back at a new address after a gap without one (a DHCP
// client that dropped its lease before it got the next), announced the
// move with its key.
const reclaimAnyTime = time.Nanosecond

// checkMoving vets an alive message that puts a known node at another
// address. A node that announced a move less than moveGrace ago is taken
// at its old and its new address only: memberlist takes a node that left
// at any address, and a move is a leave for memberlist. A node held
// failed (or whose failure verdict this node overruled) is taken at the
// address its move notice names, and at any other only once it has been
// failed for the profile's DeadNodeReclaimTime (see reclaimAnyTime); a
// node memberlist holds alive is left to memberlist, which refuses it at
// another address. A refusal is listed as a name conflict.
func (c *Cluster) checkMoving(n *memberlist.Node) error {
	now := time.Now()
	a := n.Address()
	c.mu.Lock()
	p := c.peers[n.Name]
	if p == nil || p.state() == detector.Unknown || a == hostPort(p.addr, p.port) {
		c.mu.Unlock()
		return nil
	}
	moving := movingLocked(p, now)
	var refuse error
	switch {
	case moving && a == p.movingTo:
	case moving:
		refuse = fmt.Errorf("%s is moving to %s; refusing it at %s", n.Name, p.movingTo, a)
	case p.state().IsFailed() && now.Sub(p.live.Since()) < c.conf.Profile.DeadNodeReclaimTime:
		refuse = fmt.Errorf("%s failed at %s %v ago; refusing it at %s until %v have passed, or it announces the move with its key",
			n.Name, hostPort(p.addr, p.port), now.Sub(p.live.Since()).Round(time.Millisecond), a, c.conf.Profile.DeadNodeReclaimTime)
	case p.state() == detector.Overruled && now.Sub(p.live.OverruledAt()) < c.conf.Profile.DeadNodeReclaimTime:
		// memberlist holds it dead while this node holds it alive (see
		// agent/detector): keep the name where it is for the reclaim time,
		// as memberlist would have.
		refuse = fmt.Errorf("%s is alive at %s; refusing it at %s", n.Name, hostPort(p.addr, p.port), a)
	}
	existing := memberNode(n.Name, p.addr, p.port)
	if moving {
		host, port, _ := net.SplitHostPort(p.movingTo)
		portN, _ := strconv.Atoi(port)
		existing = memberNode(n.Name, host, portN)
	}
	c.mu.Unlock()
	if refuse == nil {
		return nil
	}
	c.handleConflict(existing, n)
	return refuse
}

// moveTimedOut fails a node that left its old address for a move
// announced at movedAt and has not shown up at the new one since: it died
// on the way.
func (c *Cluster) moveTimedOut(name string, movedAt time.Time) {
	select {
	case <-c.shutdownCh:
		return
	default:
	}
	now := time.Now()
	c.mu.Lock()
	p := c.peers[name]
	if p == nil || !p.state().IsAlive() || !p.movedAt.Equal(movedAt) || hostPort(p.addr, p.port) == p.movingTo {
		c.mu.Unlock()
		return
	}
	p.movingTo = ""
	c.det.Fail(&p.live, now)
	c.recountLocked()
	ev := c.goneEventLocked(name, p, now, CauseMove, "")
	c.mu.Unlock()
	c.logger.Warn("node announced a move and never showed up at its new address", "peer", name)
	c.reportGone(ev)
}

// movingLocked reports whether p announced a move less than moveGrace
// ago.
func movingLocked(p *peer, now time.Time) bool {
	return p.movingTo != "" && now.Sub(p.movedAt) < moveGrace
}

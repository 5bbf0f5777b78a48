package cluster

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/detector"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
)

// Reaping. memberlist forgets a dead node GossipToTheDeadTime after its
// verdict, but the view here kept every peer it had ever heard of, with its
// record and phi detector, for the life of the process: 2,000 members that
// came and went were listed for ever. As in Serf, a failed node is reaped
// (removed from the view, with all that is kept for it) once it has been
// failed for ReapFailedAfter, Serf's reconnect_timeout: long, because a
// failed Pi is usually one that will be powered back. A node that left
// gracefully is not expected back and goes after ReapLeftAfter, Serf's
// tombstone. A reaped node that comes back is simply new again: memberlist
// reports it alive, and it joins. Its key pin is kept (see identity.Pins):
// a reaped name must not become free for another key to take.
//
// Records seen for a node memberlist never reported alive (status "") are
// kept for ReapLeftAfter from the first sweep that finds them, then dropped
// too: they were never listed, but they take room under maxUnknown.
//
// Force-leave removes a failed or left node now: on the node asked
// (ForceLeave) and, by a signed gossip message, on every peer that holds
// the node failed or left too. A peer that holds it alive ignores the
// message, so a member can never remove a live node from anyone's view.

// Default reap times.
const (
	// DefaultReapFailedAfter is Serf's reconnect_timeout.
	DefaultReapFailedAfter = 24 * time.Hour
	// DefaultReapLeftAfter is shorter: a node that left said it would not
	// be back.
	DefaultReapLeftAfter = time.Hour
	// maxReapInterval bounds the time between sweeps (Serf's
	// ReapInterval), so a reap is at most this late.
	maxReapInterval = 15 * time.Second
)

// EventReap: a failed or left node was removed from the view, reaped or
// force-left. Member is its last entry.
const EventReap EventType = "reap"

// msgForceLeave is a signed forceLeave: signature ‖ JSON, signed by the
// node asked to remove the member (identity.PurposeForceLeave).
const msgForceLeave byte = 11

// Errors of ForceLeave.
var (
	// ErrUnknownMember: the name is not in this node's view.
	ErrUnknownMember = errors.New("no such member")
	// ErrMemberAlive: the node is alive here (or is this node), or its
	// failure is this node's own and not yet memberlist's; it cannot be
	// removed.
	ErrMemberAlive = errors.New("member not failed or left")
)

// forceLeave asks peers to remove a failed or left member.
type forceLeave struct {
	// From is the node that was asked, and signed.
	From string `json:"f"`
	Name string `json:"n"`
	// Version is when From was asked, as a record version.
	Version uint64 `json:"v"`
}

func forceLeaveKey(name string) string { return "f/" + name }

// reapFailedAfter and reapLeftAfter apply the defaults.
func (c *Cluster) reapFailedAfter() time.Duration {
	return cmp.Or(c.conf.ReapFailedAfter, DefaultReapFailedAfter)
}

func (c *Cluster) reapLeftAfter() time.Duration {
	return cmp.Or(c.conf.ReapLeftAfter, DefaultReapLeftAfter)
}

// reapInterval is the time between sweeps: a quarter of the shorter reap
// time, so a node is reaped at most a quarter late, and at most
// maxReapInterval.
func (c *Cluster) reapInterval() time.Duration {
	return min(maxReapInterval, min(c.reapFailedAfter(), c.reapLeftAfter())/4)
}

// reapLoop sweeps the view every reapInterval until Shutdown.
func (c *Cluster) reapLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.reapInterval())
	defer t.Stop()
	for {
		select {
		case <-c.shutdownCh:
			return
		case now := <-t.C:
			c.reap(now)
		}
	}
}

// reap removes the peers that have been failed or left for their reap
// time, and the records of nodes never reported that were held for
// reapLeftAfter; it forgets stale introductions too.
func (c *Cluster) reap(now time.Time) {
	failedAfter, leftAfter := c.reapFailedAfter(), c.reapLeftAfter()
	var reaped []Event
	var since []time.Duration
	c.mu.Lock()
	unknown := 0
	for name, p := range c.peers {
		switch {
		case p.state() == detector.Unknown:
			if p.seenAt.IsZero() {
				p.seenAt = now // first seen by a sweep
			} else if now.Sub(p.seenAt) >= leftAfter {
				c.forgetLocked(name, p)
				unknown++
			}
			continue
		// A node failed here on silence is still alive to memberlist
		// (agent/detector): removed now, it would not be reported again.
		case p.state() == detector.Failed && now.Sub(p.live.Since()) >= failedAfter:
		case p.state() == detector.Left && now.Sub(p.live.Since()) >= leftAfter:
		default:
			continue
		}
		reaped = append(reaped, Event{Type: EventReap, Member: c.memberLocked(name, p, now), Time: now})
		since = append(since, now.Sub(p.live.Since()))
		c.forgetLocked(name, p)
	}
	for name, t := range c.introduced {
		if now.Sub(t) >= c.introduceEvery() {
			delete(c.introduced, name)
		}
	}
	if len(reaped) > 0 {
		c.recountLocked()
		c.reaped.Add(uint64(len(reaped)))
	}
	c.mu.Unlock()
	if unknown > 0 {
		c.logger.Debug("dropped records of nodes never reported alive", "count", unknown)
	}
	for i, ev := range reaped {
		c.logger.Info("reap: removed a node from the view", "peer", ev.Member.Name, "status", ev.Member.Status,
			"for", since[i].Round(time.Second))
		c.publish(ev)
	}
}

// forgetLocked removes name from the view with everything kept for it: its
// record, pending record, phi detector and introduction. Its key pin stays.
// The caller recounts.
func (c *Cluster) forgetLocked(name string, p *peer) {
	if p.state() == detector.Unknown {
		c.unknown--
	}
	delete(c.peers, name)
	delete(c.introduced, name)
}

// ForceLeave removes a failed or left node from the view now, as Serf's
// force-leave does, and gossips a signed request that every peer holding
// it failed or left remove it too. It refuses this node itself and a node
// held alive: those leave by stopping. It returns the node's last entry.
func (c *Cluster) ForceLeave(name string) (Member, error) {
	if err := apitypes.ValidateNodeName(name); err != nil {
		return Member{}, fmt.Errorf("force-leave: %w", err)
	}
	if name == c.conf.NodeName {
		return Member{}, fmt.Errorf("force-leave %s: %w: it is the answering node itself: stop its agent, which leaves gracefully", name, ErrMemberAlive)
	}
	if _, err := c.memberlistOrErr("force-leave " + name); err != nil {
		return Member{}, err
	}
	now := time.Now()
	c.mu.Lock()
	p := c.peers[name]
	if p == nil || p.state() == detector.Unknown {
		c.mu.Unlock()
		return Member{}, fmt.Errorf("force-leave %s: %w: this node does not know it (already reaped?)", name, ErrUnknownMember)
	}
	m := c.memberLocked(name, p, now)
	if s := p.state(); s.IsAlive() || s == detector.Silenced {
		c.mu.Unlock()
		held := "this node holds it " + m.Status
		if s == detector.Silenced {
			held = "its failure here is not yet confirmed by memberlist's probes"
		}
		return m, fmt.Errorf("force-leave %s: %w: %s: stop it first, or wait until it is failed", name, ErrMemberAlive, held)
	}
	c.forgetLocked(name, p)
	c.recountLocked()
	c.reaped.Add(1)
	c.mu.Unlock()

	body, err := json.Marshal(forceLeave{From: c.conf.NodeName, Name: name, Version: nowVersion()})
	if err != nil {
		return m, fmt.Errorf("force-leave %s: encode: %w", name, err)
	}
	msg := append([]byte{msgForceLeave}, seal(c.key, identity.PurposeForceLeave, body)...)
	c.broadcasts.QueueBroadcast(&namedBroadcast{key: forceLeaveKey(name), msg: msg})
	c.logger.Info("reap: force-left a node; asking peers to remove it too", "peer", name, "status", m.Status)
	c.publish(Event{Type: EventReap, Member: m, Time: now})
	return m, nil
}

// handleForceLeave applies a peer's signed force-leave: the named node is
// removed here only if this node holds it failed or left too, and only if
// the sender is alive here and signed with the key pinned for it. Applied,
// the message is relayed as it came. signed is the message without its
// type byte, owned by the caller.
func (c *Cluster) handleForceLeave(signed []byte) {
	if len(signed) > maxRecordSize {
		c.dropMalformed(fmt.Errorf("decode force-leave: %d bytes: %w", len(signed), errMalformed))
		return
	}
	sig, body, err := unseal("force-leave", signed)
	if err != nil {
		c.dropMalformed(err)
		return
	}
	var f forceLeave
	if err := json.Unmarshal(body, &f); err != nil {
		c.dropMalformed(fmt.Errorf("decode force-leave: %w: %w", errMalformed, err))
		return
	}
	if rj := checkNames("force-leave", f.From, []string{f.Name}); rj != nil {
		c.dropRejected(f.From, rj)
		return
	}
	if f.From == c.conf.NodeName || f.Name == c.conf.NodeName {
		return // this node's own, relayed back; or about this node, alive
	}
	pub, ok := c.pins.Lookup(f.From)
	if !ok {
		c.dropRejected(f.From, reject(rejectUnknownKey, "force-leave of %s from %s: no key pinned for the sender to check the signature against", f.Name, f.From))
		return
	}
	if !identity.Verify(pub, identity.PurposeForceLeave, body, sig) {
		c.dropRejected(f.From, reject(rejectBadSignature, "force-leave of %s from %s: %w (pinned key %s)", f.Name, f.From, identity.ErrBadSignature, identity.Fingerprint(pub)))
		return
	}
	now := time.Now()
	c.mu.Lock()
	from, p := c.peers[f.From], c.peers[f.Name]
	if from != nil && from.state().IsAlive() && p != nil && p.state() == detector.Silenced {
		// Failed here on silence, not yet confirmed by memberlist: the
		// sender's memberlist has confirmed (it refuses otherwise), and
		// this node's will in a moment. Dropping it now would keep the
		// node listed, since memberlist often hands over the force-leave
		// before the dead message that came in the same packet.
		p.heldForceLeave = signed
		c.mu.Unlock()
		c.logger.Debug("a peer force-left a node memberlist has not confirmed failed here yet; held until it does", "peer", f.Name, "from", f.From)
		return
	}
	if from == nil || !from.state().IsAlive() || p == nil || (p.state() != detector.Failed && p.state() != detector.Left) {
		alive := p != nil && (p.state().IsAlive() || p.state() == detector.Silenced)
		c.mu.Unlock()
		if alive { // or it came back since the sender gave up on it
			c.logger.Debug("a peer asked to force-leave a node this node holds alive; ignored", "peer", f.Name, "from", f.From)
		}
		return
	}
	m := c.memberLocked(f.Name, p, now)
	c.forgetLocked(f.Name, p)
	c.recountLocked()
	c.reaped.Add(1)
	c.mu.Unlock()
	c.broadcasts.QueueBroadcast(&namedBroadcast{key: forceLeaveKey(f.Name), msg: append([]byte{msgForceLeave}, signed...)})
	c.logger.Info("reap: a peer force-left a node", "peer", f.Name, "from", f.From, "status", m.Status)
	c.publish(Event{Type: EventReap, Member: m, Time: now})
}

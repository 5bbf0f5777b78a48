package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/rpi-cluster/rpi-cluster/agent/detector"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
)

// maxUnknown bounds the records kept for nodes memberlist has not reported
// yet (a record can overtake the alive message that introduces its node).
const maxUnknown = 1024

func encodeMeta(m meta) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode node metadata: %w", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("encode node metadata: %d bytes exceeds memberlist's %d: shorten the cluster name", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

func (c *Cluster) handleNodeMeta(limit int) []byte {
	if len(c.meta) > limit {
		c.logger.Error("node metadata too large", "size", len(c.meta), "limit", limit)
		return nil
	}
	return c.meta
}

// handleAlive refuses nodes of another cluster or without our metadata.
func (c *Cluster) handleAlive(n *memberlist.Node) error {
	if err := c.checkMemberName(n); err != nil {
		return err
	}
	// memberlist asks on every alive message. Metadata byte for byte our
	// own (same cluster and protocol, and the same HTTP port, as agents
	// usually have) passes as ours does, without decoding.
	if err := c.checkMoving(n); err != nil {
		return err
	}
	if string(n.Meta) == string(c.meta) {
		return nil
	}
	return c.checkMeta(n)
}

// handleMerge refuses a join with a peer that knows nodes of another cluster.
func (c *Cluster) handleMerge(peers []*memberlist.Node) error {
	for _, n := range peers {
		if err := c.checkMemberName(n); err != nil {
			return err
		}
		if err := c.checkMeta(n); err != nil {
			return err
		}
	}
	return nil
}

// checkMemberName refuses a member whose name breaks the node name rule:
// memberlist itself takes any string.
func (c *Cluster) checkMemberName(n *memberlist.Node) error {
	if rj := checkNodeName("member at "+n.Address(), n.Name); rj != nil {
		c.dropRejected(n.Name, rj)
		return rj
	}
	return nil
}

func (c *Cluster) checkMeta(n *memberlist.Node) error {
	m, err := decodeMeta(n.Meta)
	if err != nil {
		return fmt.Errorf("node %s at %s: %w", n.Name, n.Address(), err)
	}
	if m.Cluster != c.conf.ClusterName {
		return fmt.Errorf("node %s at %s belongs to cluster %q, not %q", n.Name, n.Address(), m.Cluster, c.conf.ClusterName)
	}
	if m.Proto != protoVersion {
		return fmt.Errorf("node %s at %s speaks protocol %d, this node %d", n.Name, n.Address(), m.Proto, protoVersion)
	}
	return nil
}

func (c *Cluster) handleConflict(existing, other *memberlist.Node) {
	conf := Conflict{Name: existing.Name, ExistingAddr: existing.Address(), OtherAddr: other.Address(), Time: time.Now()}
	c.mu.Lock()
	for i := range c.conflicts {
		k := &c.conflicts[i]
		if k.Name == conf.Name && k.ExistingAddr == conf.ExistingAddr && k.OtherAddr == conf.OtherAddr {
			k.Time = conf.Time // seen again: memberlist reports every alive message
			c.mu.Unlock()
			return
		}
	}
	if len(c.conflicts) == maxConflicts {
		c.conflicts = slices.Delete(c.conflicts, 0, 1)
	}
	c.conflicts = append(c.conflicts, conf)
	c.mu.Unlock()
	c.logger.Warn("two nodes claim the same name; the second is refused until the first is gone: give each node a unique name",
		"name", conf.Name, "existing", conf.ExistingAddr, "other", conf.OtherAddr)
}

// handleNodeJoin: memberlist reports a node alive (new, or back).
func (c *Cluster) handleNodeJoin(n *memberlist.Node) {
	if n.Name == c.conf.NodeName {
		return
	}
	now := time.Now()
	c.mu.Lock()
	p := c.peers[n.Name]
	if p != nil && p.state() == detector.Alive && movingLocked(p, now) && n.Address() == p.movingTo {
		// At its new address (move.go), or back from the stale leave of
		// its old one.
		from := hostPort(p.addr, p.port)
		p.staleLeave = false
		if from == n.Address() {
			c.mu.Unlock()
			return
		}
		c.setAddrLocked(p, n)
		if r := p.pending; r != nil {
			c.applyLocked(p, *r, p.pendingSigned, now)
			p.pending, p.pendingSigned = nil, nil
		}
		ev := Event{Type: EventUpdate, Member: c.memberLocked(n.Name, p, now), Time: now}
		c.mu.Unlock()
		c.logger.Info("node moved", "peer", n.Name, "from", from, "to", n.Address())
		c.publish(ev)
		return
	}
	if p == nil {
		p = &peer{}
		c.peers[n.Name] = p
	} else if p.state() == detector.Unknown {
		c.unknown--
	}
	// Until its first heartbeat says otherwise, expect the period this
	// node's own view of the cluster size gives.
	expect := detector.HeartbeatPeriod(c.det.Timing(), int(c.numAlive.Load())-1)
	p.heldForceLeave = nil // back: a force-leave held for it is stale
	if c.det.Joined(&p.live, expect, now) == detector.Withdrawn {
		c.setAddrLocked(p, n)
		c.mu.Unlock()
		c.logger.Info("node re-advertised itself; memberlist's failure verdict is withdrawn", "peer", n.Name)
		return
	}
	c.setAddrLocked(p, n)
	c.recountLocked()
	if r := p.pending; r != nil {
		c.applyLocked(p, *r, p.pendingSigned, now)
		p.pending, p.pendingSigned = nil, nil
	}
	ev := Event{Type: EventJoin, Member: c.memberLocked(n.Name, p, now), Time: now}
	c.mu.Unlock()
	c.logger.Info("node joined", "peer", n.Name, "addr", n.Address())
	c.publish(ev)
}

// handleNodeLeave: memberlist declared a node dead or left. memberlist v0.7
// does not say which (Node.State is never filled in): the detector decides
// (detector.Gone), after a move has had its say.
func (c *Cluster) handleNodeLeave(n *memberlist.Node) {
	if n.Name == c.conf.NodeName {
		return
	}
	now := time.Now()
	c.mu.Lock()
	p := c.peers[n.Name]
	if p == nil {
		c.mu.Unlock()
		return
	}
	if p.state().IsAlive() && !p.live.Leaving() && movingLocked(p, now) {
		// The leave of its old address (move.go): it comes back at
		// movingTo in a moment. Once it is there, this is the same leave
		// relayed late, which memberlist took for news: ask the node to
		// re-advertise itself.
		if hostPort(p.addr, p.port) == p.movingTo {
			p.staleLeave = true
			c.askReadvertiseLocked(n.Name)
		} else {
			movedAt := p.movedAt
			time.AfterFunc(moveGrace-now.Sub(movedAt), func() { c.moveTimedOut(n.Name, movedAt) })
		}
		c.mu.Unlock()
		return
	}
	heard := now.Sub(p.live.HeardAt())
	switch c.det.Gone(&p.live, now) {
	case detector.GoneOverruled:
		c.overruleLocked(n.Name, now)
		c.mu.Unlock()
		c.logger.Info("memberlist declared a node failed that sent a heartbeat after it was suspected; asking it to re-advertise",
			"peer", n.Name, "last_heartbeat", heard.Round(time.Millisecond))
	case detector.GoneFailed, detector.GoneLeft:
		c.recountLocked()
		ev := c.goneEventLocked(n.Name, p, now, CauseMemberlist, "")
		c.mu.Unlock()
		c.reportGone(ev)
	default: // never reported, or failed here first (on silence)
		held := p.heldForceLeave
		p.heldForceLeave = nil
		c.mu.Unlock()
		if held != nil {
			c.handleForceLeave(held) // memberlist confirms: now it applies
		}
	}
}

// goneEventLocked returns the event of p's failure or leave: the detector
// has moved it to Failed, Silenced or Left. cause and by say who reached a
// failure verdict (see Event). The caller recounts.
func (c *Cluster) goneEventLocked(name string, p *peer, now time.Time, cause Cause, by string) Event {
	if p.state() == detector.Left {
		return Event{Type: EventLeave, Member: c.memberLocked(name, p, now), Time: now}
	}
	return Event{Type: EventFail, Member: c.memberLocked(name, p, now), Time: now, Cause: cause, By: by}
}

// reportGone logs and publishes an event from goneLocked.
func (c *Cluster) reportGone(ev Event) {
	m := ev.Member
	addr := hostPort(m.Addr, m.GossipPort)
	if ev.Type == EventFail {
		c.logger.Warn("node failed", "peer", m.Name, "addr", addr, "cause", ev.Cause)
	} else {
		c.logger.Info("node left", "peer", m.Name, "addr", addr)
	}
	c.publish(ev)
}

// handleNodeUpdate: a node's memberlist metadata or address changed.
func (c *Cluster) handleNodeUpdate(n *memberlist.Node) {
	if n.Name == c.conf.NodeName {
		return
	}
	now := time.Now()
	c.mu.Lock()
	p := c.peers[n.Name]
	if p == nil || p.state() == detector.Unknown {
		c.mu.Unlock()
		return
	}
	c.setAddrLocked(p, n)
	ev := Event{Type: EventUpdate, Member: c.memberLocked(n.Name, p, now), Time: now}
	c.mu.Unlock()
	c.publish(ev)
}

func (c *Cluster) setAddrLocked(p *peer, n *memberlist.Node) {
	c.gen++
	p.addr = n.Addr.String()
	p.port = int(n.Port)
	if m, err := decodeMeta(n.Meta); err == nil {
		p.httpPort = m.HTTPPort
	}
}

// recountLocked refreshes the alive count used for retransmit limits
// after a peer's status changed, and moves the membership generation.
func (c *Cluster) recountLocked() {
	c.gen++
	n := int64(1)
	for _, p := range c.peers {
		if p.state().IsAlive() {
			n++
		}
	}
	c.numAlive.Store(n)
}

// handleMsg dispatches a user message by its type byte. buf is only valid
// during the call.
func (c *Cluster) handleMsg(buf []byte) {
	if len(buf) == 0 {
		c.dropMalformed(errors.New("empty message"))
		return
	}
	body := buf[1:]
	switch buf[0] {
	case msgHeartbeat:
		hb, err := decodeHeartbeat(body)
		if err != nil {
			c.dropMalformed(err)
			return
		}
		if rj := checkHeartbeat(hb); rj != nil {
			c.dropRejected(hb.name, rj)
			return
		}
		c.handleHeartbeat(hb, time.Now())
	case msgRecord:
		c.handleSignedRecord(slices.Clone(body), true)
	case msgLeave:
		c.handleSignedLeave(slices.Clone(body))
	case msgLeaveDirect:
		// Relays go out as ordinary gossip: only the leaver asks for acks.
		if name, ok := c.handleSignedLeave(slices.Clone(body)); ok {
			c.ackLeave(name)
		}
	case msgMove:
		c.handleMoveNotice(slices.Clone(body))
	case msgLeaveAck:
		a, err := decodeLeaveAck(body)
		if err != nil {
			c.dropMalformed(err)
			return
		}
		if rj := checkNodeName("leave acknowledgement", a.From); rj != nil {
			c.dropRejected(a.From, rj)
			return
		}
		c.handleLeaveAck(a)
	case msgSilent:
		from, names, err := decodeNames(body)
		if err != nil {
			c.dropMalformed(err)
			return
		}
		if rj := checkNames("silence report", from, names); rj != nil {
			c.dropRejected(from, rj)
			return
		}
		c.handleSilent(from, names, time.Now())
	case msgVerdict:
		from, names, err := decodeNames(body)
		if err != nil {
			c.dropMalformed(err)
			return
		}
		if rj := checkNames("verdict", from, names); rj != nil {
			c.dropRejected(from, rj)
			return
		}
		for _, name := range names {
			c.handleVerdict(from, name, time.Now())
		}
	case msgReadvertise:
		select {
		case c.readvertiseCh <- struct{}{}:
		default: // one is already queued
		}
	case msgDesired:
		c.handleSignedDesired(slices.Clone(body), true)
	case msgForceLeave:
		c.handleForceLeave(slices.Clone(body))
	default:
		c.dropMalformed(fmt.Errorf("unknown message type %d", buf[0]))
	}
}

func (c *Cluster) dropMalformed(err error) {
	c.malformed.Add(1)
	c.logger.Debug("dropped malformed message", "err", err)
}

func (c *Cluster) handleHeartbeat(hb heartbeat, now time.Time) {
	c.mu.Lock()
	p := c.peers[hb.name]
	if p == nil {
		c.strangerLocked(hb, now)
		c.mu.Unlock()
		return
	}
	if s := p.state(); s != detector.Unknown && s != detector.Silenced &&
		movingLocked(p, now) && hb.addr == p.movingTo && hostPort(p.addr, p.port) != hb.addr {
		// Moved, and memberlist has not taken the new address yet: sync
		// with it there (see move.go).
		c.strangerLocked(hb, now)
	}
	var failedFor time.Duration
	if p.state() == detector.Silenced {
		failedFor = now.Sub(p.live.Since()) // since the verdict
	}
	switch c.det.Heartbeat(&p.live, hb.seq, hb.period, now) {
	case detector.HeartbeatStranger, detector.HeartbeatFromFailed:
		// Unknown to memberlist: introduce it; held failed: alive after
		// all, ask it to re-advertise (introduce.go).
		c.strangerLocked(hb, now)
	case detector.HeartbeatOverruled:
		c.askReadvertiseLocked(hb.name) // alive still: ask again
	case detector.HeartbeatRevived:
		p.heldForceLeave = nil // back: a force-leave held for it is stale
		if r := p.pending; r != nil {
			c.applyLocked(p, *r, p.pendingSigned, now)
			p.pending, p.pendingSigned = nil, nil
		}
		c.recountLocked()
		ev := Event{Type: EventJoin, Member: c.memberLocked(hb.name, p, now), Time: now}
		c.mu.Unlock()
		c.logger.Info("heartbeats resumed from a node failed on silence; it is alive", "peer", hb.name, "failed_for", failedFor.Round(time.Millisecond))
		c.publish(ev)
		return
	}
	c.mu.Unlock()
}

// handleSignedRecord checks a signed record received by gossip (relay
// true) or push-pull and hands it to handleRecord. signed is signature ‖
// JSON, owned by the caller's copy: it is kept as it is. A record that is
// malformed, breaks a naming or field rule, is not signed by the key it
// carries or carries another key than the one pinned for its name is
// dropped and counted. Stale records are dropped before their signature is
// checked, so duplicates cost a JSON decode, not a verification.
func (c *Cluster) handleSignedRecord(signed []byte, relay bool) {
	r, sig, body, err := decodeRecord(signed)
	if err != nil {
		c.dropMalformed(err)
		return
	}
	if rj := checkNodeName("record", r.Name); rj != nil {
		c.dropRejected(r.Name, rj)
		return
	}
	if c.staleRecord(r) {
		return
	}
	if rj := checkRecordFields(r); rj != nil {
		c.dropRejected(r.Name, rj)
		return
	}
	if !identity.Verify(r.IdentityKey, identity.PurposeRecord, body, sig) {
		c.dropRejected(r.Name, reject(rejectBadSignature, "record of %s: %w", r.Name, identity.ErrBadSignature))
		return
	}
	c.handleRecord(r, signed, relay)
}

// staleRecord reports whether this node already holds r's version or a
// newer one of an alive peer at r's address.
func (c *Cluster) staleRecord(r Record) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.peers[r.Name]
	return p != nil && p.state().IsAlive() && p.rec != nil && p.rec.Addr == r.Addr &&
		p.rec.GossipPort == r.GossipPort && r.Addr == p.addr && r.GossipPort == p.port && r.Version <= p.rec.Version
}

// handleRecord applies a verified record (see handleSignedRecord); relay
// true: pass it on when it was news.
//
// A record is applied only if memberlist currently knows its node alive at
// the record's address, and it is newer than what is held — or what is held
// belongs to an address the node no longer has (it came back with a new
// DHCP lease). Records of nodes that are not alive wait as pending and are
// applied if the node comes back; they never bring a node back by
// themselves. Records from a second node using an existing name carry the
// wrong address and are dropped. The record's key must be the one pinned
// for its name; a name seen for the first time is pinned when its record
// is first applied, that is when memberlist knows the node alive at the
// record's address.
func (c *Cluster) handleRecord(r Record, signed []byte, relay bool) {
	now := time.Now()
	c.mu.Lock()
	if r.Name == c.self.Name {
		c.handleOwnRecordLocked(r)
		return
	}
	p := c.peers[r.Name]
	if p == nil {
		if c.unknown >= maxUnknown {
			c.mu.Unlock()
			return
		}
		p = &peer{}
		c.peers[r.Name] = p
		c.unknown++
	}
	if !p.state().IsAlive() {
		if rj := c.checkPinnedLocked(r.Name, r.IdentityKey, false, now); rj != nil {
			c.mu.Unlock()
			c.dropRejected(r.Name, rj)
			return
		}
		if p.pending == nil || r.Version > p.pending.Version {
			p.pending, p.pendingSigned = &r, signed
		}
		c.mu.Unlock()
		return
	}
	prev := p.rec
	if !c.applyLocked(p, r, signed, now) {
		c.mu.Unlock()
		return
	}
	// Only the owner gossips a change of monitoring figures alone;
	// receivers relay records whose services, keys or addresses changed.
	// Every node relaying every 5 s sample would cost each node about
	// N·RetransmitMult·log10(N) record sends per sample period (38 KB/s at
	// N = 100, and a 100-node in-process cluster on two cores could not
	// keep up); the owner's own RetransmitMult·log10(N) sends reach most of
	// a small cluster, and push-pull brings the rest up to date.
	relay = relay && (prev == nil || !onlyMonitoringDiffers(*prev, r))
	ev := Event{Type: EventUpdate, Member: c.memberLocked(r.Name, p, now), Time: now}
	c.mu.Unlock()
	if relay {
		c.queueRecord(r.Name, signed)
	}
	c.publish(ev)
}

// onlyMonitoringDiffers reports whether a and b differ in nothing but their
// monitoring figures and version.
func onlyMonitoringDiffers(a, b Record) bool {
	return a.Name == b.Name && a.Addr == b.Addr && a.GossipPort == b.GossipPort && a.HTTPPort == b.HTTPPort &&
		slices.Equal(a.Services, b.Services) && slices.Equal(a.SSHHostKeys, b.SSHHostKeys) &&
		a.AgentVersion == b.AgentVersion && a.Arch == b.Arch && a.Model == b.Model && identity.Equal(a.IdentityKey, b.IdentityKey)
}

// applyLocked stores r, verified and signed as signed, as p's record if it
// is newer, matches p's address and its key is the one pinned for its name
// (pinning it on first sight).
func (c *Cluster) applyLocked(p *peer, r Record, signed []byte, now time.Time) bool {
	if r.Addr != p.addr || r.GossipPort != p.port {
		c.logger.Debug("ignored record for another address", "peer", r.Name,
			"record_addr", hostPort(r.Addr, r.GossipPort), "member_addr", hostPort(p.addr, p.port))
		return false
	}
	if p.rec != nil && p.rec.Addr == p.addr && p.rec.GossipPort == p.port && r.Version <= p.rec.Version {
		return false // stale or duplicate
	}
	if rj := c.checkPinnedLocked(r.Name, r.IdentityKey, true, now); rj != nil {
		c.dropRejected(r.Name, rj)
		return false
	}
	rc := r.Clone()
	p.rec, p.recSigned = &rc, signed
	return true
}

// handleOwnRecordLocked deals with a verified record carrying this node's
// name. Signed by another key, it is another member speaking for this
// node: refused and listed as a key conflict. Signed by this node's key,
// from this address and not older than the current record, it is from a
// previous run whose clock was ahead: jump past it and rebroadcast.
// Anything else (another address) is an old incarnation or a name
// conflict, which memberlist reports. Unlocks c.mu.
func (c *Cluster) handleOwnRecordLocked(r Record) {
	if rj := c.checkPinnedLocked(r.Name, r.IdentityKey, false, time.Now()); rj != nil {
		c.mu.Unlock()
		c.dropRejected(r.Name, rj)
		return
	}
	if r.Addr != c.self.Addr || r.GossipPort != c.self.GossipPort || r.Version < c.self.Version ||
		(r.Version == c.self.Version && sameRecord(r, c.self)) {
		c.mu.Unlock()
		return
	}
	if r.Version == math.MaxUint64 {
		// Only this node's key could have signed it, so only a run of
		// this node with a broken clock: nothing can outrank it.
		c.mu.Unlock()
		c.logger.Error("found own record from a previous run at the last possible version; peers keep it until they forget this node: remove it with `rpi-agent force-leave` once it is stopped, or reinstall its key", "version", r.Version)
		return
	}
	c.self.Version = r.Version + 1
	rec := c.self.Clone()
	signed := c.signSelfLocked()
	c.mu.Unlock()
	c.logger.Info("found own record from a previous run with a newer version; superseding it", "version", rec.Version)
	c.queueRecord(rec.Name, signed)
}

func sameRecord(a, b Record) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// handleLocalState returns our own record and those of alive peers, and
// the whole desired table. Records of failed or left nodes stay out, so
// anti-entropy cannot spread what memberlist has already declared gone;
// desired entries are the cluster's, not a node's, and always go.
func (c *Cluster) handleLocalState(join bool) []byte {
	desired := c.desiredState()
	c.mu.Lock()
	s := pushPullState{Cluster: c.conf.ClusterName, Desired: desired}
	if c.selfSigned != nil {
		s.Records = append(s.Records, c.selfSigned)
	}
	for _, p := range c.peers {
		if p.state().IsAlive() && p.recSigned != nil {
			s.Records = append(s.Records, p.recSigned)
		}
		if p.state() == detector.Left && p.leaveSigned != nil {
			s.Left = append(s.Left, p.leaveSigned)
		}
	}
	c.mu.Unlock()
	b, err := encodeJSON(msgState, s)
	if err != nil {
		c.logger.Error("cannot encode push-pull state", "err", err)
		return nil
	}
	return b
}

func (c *Cluster) handleRemoteState(buf []byte, join bool) {
	s, err := decodeState(buf)
	if err != nil {
		c.dropMalformed(err)
		return
	}
	if s.Cluster != c.conf.ClusterName {
		c.dropMalformed(fmt.Errorf("push-pull state of cluster %q", s.Cluster))
		return
	}
	// Records first: they pin the keys that leave intents are checked
	// against. Each slice was allocated by the decoder, so it is kept as
	// it is.
	for _, r := range s.Records {
		c.handleSignedRecord(r, false)
	}
	for _, d := range s.Desired {
		c.handleSignedDesired(d, false)
	}
	for _, l := range s.Left {
		c.handleSignedLeave(l)
	}
}

// Self returns this node's own entry.
func (c *Cluster) Self() Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.selfMemberLocked()
}

func (c *Cluster) selfMemberLocked() Member {
	return Member{Record: c.self.Clone(), Status: StatusAlive, PhiThreshold: c.phiThreshold(), Self: true, Signed: c.selfSigned}
}

// phiThreshold is the phi a peer is shown suspect at: the profile's,
// widened by this node's health score.
func (c *Cluster) phiThreshold() float64 { return c.det.Threshold() }

// Members returns every node known, this one included, failed and left
// nodes too, sorted by name. Phi is as computed by this node.
func (c *Cluster) Members() []Member {
	now := time.Now()
	c.mu.Lock()
	out := make([]Member, 0, len(c.peers)+1)
	out = append(out, c.selfMemberLocked())
	for name, p := range c.peers {
		if p.state() != detector.Unknown {
			out = append(out, c.memberLocked(name, p, now))
		}
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Member returns the named node, if known.
func (c *Cluster) Member(name string) (Member, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if name == c.self.Name {
		return c.selfMemberLocked(), true
	}
	p := c.peers[name]
	if p == nil || p.state() == detector.Unknown {
		return Member{}, false
	}
	return c.memberLocked(name, p, time.Now()), true
}

// memberLocked builds the public view of a peer. memberlist's address wins
// over the record's; a record from an old address is not shown as current.
func (c *Cluster) memberLocked(name string, p *peer, now time.Time) Member {
	var r Record
	var signed []byte
	if p.rec != nil && p.rec.Addr == p.addr && p.rec.GossipPort == p.port {
		r, signed = p.rec.Clone(), p.recSigned
	}
	r.Name, r.Addr, r.GossipPort = name, p.addr, p.port
	if r.HTTPPort == 0 {
		r.HTTPPort = p.httpPort
	}
	m := Member{Record: r, Status: p.status(), PhiThreshold: c.phiThreshold(), Signed: signed}
	m.Phi, _ = c.det.Phi(&p.live, now)
	if m.Status == StatusAlive && m.Phi >= m.PhiThreshold {
		m.Status = StatusSuspect
	}
	return m
}

func hostPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

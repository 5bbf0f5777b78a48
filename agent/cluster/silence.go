package cluster

import (
	"encoding/binary"
	"fmt"
	"time"
)

// memberlist declares a node failed when a suspicion of it runs out: a
// probe has to fail first (up to a probe interval after the death, plus the
// probe timeout and the indirect probes), then the suspicion timeout runs,
// then the verdict spreads by gossip. lan's suspicion timeout has to
// outlast a 2 s stall, which puts memberlist's detection at several
// seconds (docs/PERFORMANCE.md).
//
// In a small cluster (FastHeartbeatPeers) every node heartbeats every peer
// directly each FastHeartbeatInterval (50 ms on lan), so each node can
// judge its peers itself: a peer silent for SilenceTimeout (2.35 s) is
// failed at once, with no probe to wait for and nothing to spread. A node
// stalled for 2 s is silent for 2 s, plus up to one interval, plus one
// interval per heartbeat lost around the stall: failing it takes six lost
// in a row on one link, a few in a million at 10 % loss.
//
// Silence is one observer's view, and SWIM probes indirectly because one
// link can fail while the node is fine. So a silence verdict also needs a
// witness: another alive peer that said, within the last SilenceTimeout/4,
// that it finds the node silent as well. Each round a node sends its peers
// the names of those it has not heard for half the SilenceTimeout
// (msgSilent; nothing while it hears everyone). A node behind a broken
// link has no witness; neither has one that was stalled itself and finds
// everybody silent when it wakes, since it heard no report while stalled
// and the others hear everyone. memberlist decides for them, and in a
// cluster of two.
//
// The verdict is this node's: memberlist holds the peer alive until its own
// suspicion runs out, and then agrees (handleNodeLeave publishes nothing
// more). If the peer's heartbeats resume first (it stalled for longer than
// the SilenceTimeout, or a partition healed), it is alive again at once,
// with a join event. Peers failed on silence keep getting heartbeats, so a
// node that comes back hears from everyone at once.

const (
	// minSilenceRounds is the fewest fast heartbeat rounds a silence
	// timeout may span: fewer, and a few lost packets fail a live node.
	minSilenceRounds = 16
	// maxSilentReport bounds the names in one msgSilent so that it fits a
	// UDP packet with memberlist's framing and encryption.
	maxSilentReport = 1000
)

// fastHeartbeats reports whether a node with peers alive peers heartbeats
// all of them every FastHeartbeatInterval.
func fastHeartbeats(p Profile, peers int) bool {
	return p.FastHeartbeatPeers > 0 && peers <= p.FastHeartbeatPeers
}

// roundInterval is the time between heartbeat rounds with peers alive
// peers.
func roundInterval(p Profile, peers int) time.Duration {
	switch {
	case fastHeartbeats(p, peers):
		return p.FastHeartbeatInterval
	case p.WatchPeers > 0:
		return p.WatchInterval
	}
	return p.HeartbeatInterval
}

// silenceLocked returns how long p's heartbeats have been silent and the
// timeout they are judged by, and false if p is not judged on silence: it
// is not alive here, is leaving, or does not send heartbeats fast enough.
// Fast heartbeats are judged only while this node heartbeats fast itself:
// when the cluster grows past FastHeartbeatPeers, a peer that has switched
// to slow rounds may not have told this node yet, and its silence would be
// no silence at all. Watch heartbeats (watch.go) are judged at any size: a
// peer sends them only to the watchers it picked. memberlist's report
// that p is alive counts as a heartbeat, so a node that dies before its
// first heartbeat arrives is judged too. A peer under an overruled verdict
// is judged as well: its heartbeats overruled memberlist, and once they
// stop there is nothing left to wait for.
func (c *Cluster) silenceLocked(p *peer, now time.Time) (silent, timeout time.Duration, judged bool) {
	prof := c.conf.Profile
	if p.status != StatusAlive || p.leaving || p.period == 0 {
		return 0, 0, false
	}
	switch {
	case prof.SilenceTimeout > 0 && p.period <= prof.FastHeartbeatInterval &&
		fastHeartbeats(prof, int(c.numAlive.Load())-1):
		timeout = prof.SilenceTimeout
	case prof.WatchPeers > 0 && p.period == prof.WatchInterval:
		timeout = prof.WatchSilenceTimeout
	default:
		return 0, 0, false
	}
	last := p.heardAt
	if p.since.After(last) {
		last = p.since // alive since: the silence before does not count
	}
	return now.Sub(last), timeout, true
}

// silenceVerdict is a peer failed on silence, for the log; watched is set
// when it was judged on watch heartbeats, and the verdict must be told to
// every peer (watch.go).
type silenceVerdict struct {
	ev      Event
	silent  time.Duration
	witness string
	watched bool
}

// judgeSilenceLocked fails the peers that have been silent for their
// silence timeout and that a witness finds silent too. It appends to
// accused the peers silent for half of it, and those failed here on
// silence, which this node reports as their witness. A degraded node
// (health.go) does neither: it counts the verdicts it holds back.
func (c *Cluster) judgeSilenceLocked(now time.Time, accused []string) ([]silenceVerdict, []string) {
	prof := c.conf.Profile
	if prof.SilenceTimeout == 0 && prof.WatchPeers == 0 {
		return nil, accused
	}
	if c.degraded() {
		c.holdSilenceLocked(now)
		return nil, accused
	}
	var verdicts []silenceVerdict
	size := 0
	accuse := func(name string) {
		if size += 1 + len(name); size <= maxSilentReport {
			accused = append(accused, name)
		}
	}
	for name, p := range c.peers {
		if p.silenced && p.status == StatusFailed {
			accuse(name) // still silent: others may not have judged yet
			continue
		}
		silent, timeout, judged := c.silenceLocked(p, now)
		if !judged || silent < timeout/2 {
			continue
		}
		accuse(name)
		if silent < timeout || now.Sub(p.witnessedAt) > timeout/4 {
			continue
		}
		watched := p.period == prof.WatchInterval
		ev := c.failOnSilenceLocked(name, p, now)
		c.silenceVerdicts.Add(1)
		verdicts = append(verdicts, silenceVerdict{ev: ev, silent: silent, witness: p.witness, watched: watched})
	}
	return verdicts, accused
}

// holdSilenceLocked counts, once per peer until it is heard again, the
// silence verdicts a degraded node holds back.
func (c *Cluster) holdSilenceLocked(now time.Time) {
	for _, p := range c.peers {
		if p.held {
			continue
		}
		if silent, timeout, judged := c.silenceLocked(p, now); judged && silent >= timeout && now.Sub(p.witnessedAt) <= timeout/4 {
			p.held = true
			c.health.Suppressed()
		}
	}
}

// failOnSilenceLocked fails p on silence, its own or a watcher's, and
// returns the fail event. Under an overruled verdict memberlist holds the
// peer dead already: this upholds its verdict, and nothing is left for
// memberlist to agree to.
func (c *Cluster) failOnSilenceLocked(name string, p *peer, now time.Time) Event {
	overruled := !p.overruled.IsZero()
	p.overruled = time.Time{}
	ev := c.goneLocked(name, p, false, now)
	p.silenced = !overruled
	return ev
}

// reportSilence logs and publishes the verdicts of judgeSilenceLocked.
func (c *Cluster) reportSilence(verdicts []silenceVerdict) {
	for _, v := range verdicts {
		c.logger.Info("no heartbeat from a node, and a peer finds it silent too; failing it ahead of memberlist",
			"peer", v.ev.Member.Name, "silent", v.silent.Round(time.Millisecond), "witness", v.witness)
		c.reportGone(v.ev)
	}
}

// handleSilent records a peer's report of the nodes it finds silent: the
// reporter is their witness. Reports from nodes not alive here, and about
// this node or the reporter itself, are ignored.
func (c *Cluster) handleSilent(from string, names []string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w := c.peers[from]; w == nil || w.status != StatusAlive {
		return
	}
	for _, name := range names {
		if name == from || name == c.conf.NodeName {
			continue
		}
		if p := c.peers[name]; p != nil {
			p.witnessedAt, p.witness = now, from
		}
	}
}

// reviveLocked brings p, failed here on silence, back to life: its
// heartbeat hb arrived. It returns the join event.
func (c *Cluster) reviveLocked(p *peer, hb heartbeat, now time.Time) Event {
	p.status, p.silenced = StatusAlive, false
	p.since, p.heardAt, p.lastSeq = now, now, hb.seq
	c.resetDetectorLocked(p, hb.period)
	p.det.Heartbeat(now)
	if r := p.pending; r != nil {
		c.applyLocked(p, *r, p.pendingSigned, now)
		p.pending, p.pendingSigned = nil, nil
	}
	c.recountLocked()
	return Event{Type: EventJoin, Member: c.memberLocked(hb.name, p, now), Time: now}
}

// encodeNames builds a msgSilent or msgVerdict: the sender's name, then the
// names of the peers it finds silent or has failed, each prefixed with its
// length.
func encodeNames(typ byte, from string, names []string) []byte {
	b := make([]byte, 0, 2+len(from)+maxSilentReport)
	b = append(b, typ)
	b = binary.AppendUvarint(b, uint64(len(from)))
	b = append(b, from...)
	for _, n := range names {
		b = binary.AppendUvarint(b, uint64(len(n)))
		b = append(b, n...)
	}
	return b
}

// decodeNames parses the body of a msgSilent or msgVerdict (without the
// type byte).
func decodeNames(body []byte) (from string, names []string, err error) {
	for len(body) > 0 {
		n, k := binary.Uvarint(body)
		if k <= 0 || n == 0 || n > uint64(len(body)-k) {
			return "", nil, fmt.Errorf("decode names: bad name: %w", errMalformed)
		}
		name := string(body[k : k+int(n)])
		body = body[k+int(n):]
		if from == "" {
			from = name
		} else {
			names = append(names, name)
		}
	}
	if from == "" {
		return "", nil, fmt.Errorf("decode names: no sender: %w", errMalformed)
	}
	return from, names, nil
}

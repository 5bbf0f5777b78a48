package detector

import (
	"iter"
	"time"
)

// Detector judges this node's peers. Its contract:
//
//   - in: memberlist's view of each peer (Joined, Gone), the peers'
//     heartbeats (Heartbeat), their leave intents (LeaveIntent), other
//     nodes' silence reports and verdicts (Witnessed, WatcherVerdict),
//     and this node's own timing each round (Round);
//   - out: each peer's State and suspicion level (Phi, Threshold), and
//     the verdicts of each round (Judge). Each transition returns what
//     the caller has to do about it: publish an event, ask the peer to
//     re-advertise itself, introduce it, or nothing.
//
// It does no I/O and starts no goroutines: agent/cluster sends the
// heartbeats a Plan picks, delivers what arrives, and keeps one Peer per
// node beside the node's record, under its own lock. Only Health is safe
// for concurrent use.
type Detector struct {
	t      Timing
	health *Health
}

// New returns a Detector with timing t and a healthy Health.
func New(t Timing) *Detector {
	return &Detector{t: t, health: NewHealth(DefaultCalmRounds)}
}

// Timing returns the detector's timing.
func (d *Detector) Timing() Timing { return d.t }

// Health returns this node's measure of its own lateness.
func (d *Detector) Health() *Health { return d.health }

// Round feeds one heartbeat round's measure of this node's own timing to
// its Health and returns the score.
func (d *Detector) Round(r Round) int { return d.health.Observe(r) }

// Degraded reports whether this node is late enough to hold back its own
// verdicts: only a timing that issues verdicts of its own (Judges) acts
// on local health; memberlist's verdicts are never held back.
func (d *Detector) Degraded() bool { return d.t.Judges() && d.health.Degraded() }

// AnnouncedPeriod is the period to announce in a heartbeat planned with
// period: widened by the health score while degraded. Peers judge on
// silence only the fast and watch periods, so a widened one leaves this
// node to memberlist until it recovers.
func (d *Detector) AnnouncedPeriod(period time.Duration) time.Duration {
	if d.Degraded() {
		return d.health.Scale(period)
	}
	return period
}

// Threshold is the phi a peer is shown suspect at: the timing's, widened
// by the health score when local health acts.
func (d *Detector) Threshold() float64 {
	t := d.t.Phi.Threshold
	if d.t.Judges() {
		t = d.health.ScaleFloat(t)
	}
	return t
}

// Phi returns the suspicion level to show for p at now (see Shown), and
// false if p has no phi detector yet (memberlist never reported it).
func (d *Detector) Phi(p *Peer, now time.Time) (float64, bool) {
	if p.det == nil {
		return 0, false
	}
	return Shown(p.det.Phi(now), d.Threshold(), p.state.IsFailed(), p.state == Left), true
}

// JoinOutcome is what Joined did.
type JoinOutcome int

// Outcomes of Joined.
const (
	// Joined: the peer is (back) alive: publish a join.
	Joined JoinOutcome = iota
	// Withdrawn: the peer was Overruled and memberlist revived it: the
	// overrule ends, nothing was ever reported, nothing is.
	Withdrawn
)

// Joined takes memberlist's report that p is alive, new or back, at now;
// expect is the heartbeat period to expect until its first heartbeat says
// (the period this node's own view of the cluster size gives).
//
// A peer coming (back) to life starts a fresh phi history: the silence
// while it was gone is not an inter-arrival time. memberlist just heard
// from it: that counts as its first heartbeat, so phi rises even for a
// node that dies before sending one.
func (d *Detector) Joined(p *Peer, expect time.Duration, now time.Time) JoinOutcome {
	if p.state == Overruled {
		p.state, p.overruledAt = Alive, time.Time{}
		return Withdrawn
	}
	p.state, p.since = Alive, now
	p.leaving = false
	p.overruledAt = time.Time{}
	p.reset(d.t.Phi, expect)
	p.lastSeq = 0
	p.det.Heartbeat(now)
	return Joined
}

// GoneOutcome is what Gone did.
type GoneOutcome int

// Outcomes of Gone.
const (
	// GoneIgnored: memberlist never reported the peer; nothing changes.
	GoneIgnored GoneOutcome = iota
	// GoneConfirmed: the peer was failed or left here already (Silenced,
	// now Failed); memberlist agrees, and nothing more is reported.
	GoneConfirmed
	// GoneOverruled: the peer outlived memberlist's suspicion and is now
	// Overruled: ask it to re-advertise itself, and call Uphold with now
	// after MinSuspicion.
	GoneOverruled
	// GoneFailed: the peer is now Failed: publish a failure.
	GoneFailed
	// GoneLeft: the peer is now Left: publish a leave.
	GoneLeft
)

// Gone takes memberlist's report that p is dead or left (memberlist does
// not say which: the peer's leave intent decides) at now.
//
// A failure verdict on a peer whose heartbeat arrived less than
// MinSuspicion ago is overruled: that heartbeat was sent after the
// suspicion began. A peer that left and came back can be reported gone
// again right after it rejoins: memberlist still relays the dead message
// of its previous run, takes the new run for dead, and the new run refutes
// a moment later. No verdict about the new run can come that soon, so
// within MinSuspicion of its return it is the old leave.
func (d *Detector) Gone(p *Peer, now time.Time) GoneOutcome {
	switch p.state {
	case Unknown:
		return GoneIgnored
	case Silenced:
		p.state = Failed // since stays the verdict's
		return GoneConfirmed
	case Failed, Left:
		// A leave intent turned a Silenced peer Left before memberlist
		// agreed; no other way leads here.
		return GoneConfirmed
	}
	stale := p.leftLast && now.Sub(p.since) < d.t.MinSuspicion
	if !p.leaving && !stale && outlived(p, now, d.t.MinSuspicion) {
		p.state, p.overruledAt = Overruled, now
		return GoneOverruled
	}
	p.fail(stale, now)
	if p.state == Left {
		return GoneLeft
	}
	return GoneFailed
}

// outlived reports whether p's last heartbeat arrived recently enough to
// overrule a failure verdict reached at now.
func outlived(p *Peer, now time.Time, minSuspicion time.Duration) bool {
	return !p.heardAt.IsZero() && now.Sub(p.heardAt) < minSuspicion
}

// Uphold fails p if it is still under the overrule set at `at`: memberlist
// has not revived it within MinSuspicion. It reports whether p failed.
func (d *Detector) Uphold(p *Peer, at, now time.Time) bool {
	if p.state != Overruled || !p.overruledAt.Equal(at) {
		return false
	}
	p.fail(false, now)
	return true
}

// HeartbeatOutcome is what Heartbeat did.
type HeartbeatOutcome int

// Outcomes of Heartbeat.
const (
	// HeartbeatIgnored: a duplicate, a reordered one, one sent before a
	// silence, or one from a peer that left.
	HeartbeatIgnored HeartbeatOutcome = iota
	// HeartbeatTaken: counted in the peer's phi.
	HeartbeatTaken
	// HeartbeatStranger: memberlist never reported the sender: introduce
	// it (a push-pull with the address the heartbeat names).
	HeartbeatStranger
	// HeartbeatFromFailed: the peer is held failed (memberlist agrees)
	// but heartbeats: ask it to re-advertise itself.
	HeartbeatFromFailed
	// HeartbeatOverruled: taken, from a peer under an overrule: ask it to
	// re-advertise itself again.
	HeartbeatOverruled
	// HeartbeatRevived: the peer was Silenced and is alive again: publish
	// a join.
	HeartbeatRevived
)

// Heartbeat takes a heartbeat from p with sequence number seq, announcing
// period, that arrived at now.
func (d *Detector) Heartbeat(p *Peer, seq uint64, period time.Duration, now time.Time) HeartbeatOutcome {
	switch p.state {
	case Unknown:
		return HeartbeatStranger
	case Silenced:
		if seq <= p.lastSeq {
			return HeartbeatIgnored // sent before the silence
		}
		p.state, p.since = Alive, now
		p.heardAt, p.lastSeq, p.held = now, seq, false
		p.reset(d.t.Phi, period)
		p.det.Heartbeat(now)
		return HeartbeatRevived
	case Failed:
		return HeartbeatFromFailed
	case Left:
		return HeartbeatIgnored
	}
	if seq <= p.lastSeq {
		return HeartbeatIgnored
	}
	p.lastSeq, p.heardAt, p.held = seq, now, false
	if period != p.period {
		// The sender's cluster grew or shrank past a multiple of its
		// fanout: intervals measured at the old period would make phi
		// wrong either way, so start over at the announced one.
		p.reset(d.t.Phi, period)
	}
	p.det.Heartbeat(now)
	if p.state == Overruled {
		return HeartbeatOverruled
	}
	return HeartbeatTaken
}

// LeaveIntent takes p's signed leave intent: memberlist's next verdict on
// it is a leave. A peer held failed already is Left at once; LeaveIntent
// then reports true, and the caller publishes a leave. An intent for a
// peer never reported, or a second one, changes nothing (false).
func (d *Detector) LeaveIntent(p *Peer) bool {
	if p.state == Unknown || p.leaving {
		return false
	}
	p.leaving = true
	if p.state.IsFailed() {
		p.state, p.leftLast = Left, true
		return true
	}
	return false
}

// Witnessed records from's report, at now, that p is silent: from is p's
// witness. The caller drops reports from peers it does not hold alive.
func (d *Detector) Witnessed(p *Peer, from string, now time.Time) {
	p.witnessedAt, p.witness = now, from
}

// WatcherOutcome is what WatcherVerdict did.
type WatcherOutcome int

// Outcomes of WatcherVerdict.
const (
	// VerdictIgnored: p is not alive here, or is leaving.
	VerdictIgnored WatcherOutcome = iota
	// VerdictRefused: this node heard p within half the longer silence
	// timeout (RefuseWithin): it stays alive.
	VerdictRefused
	// VerdictTaken: p is failed on the other node's word: publish a
	// failure.
	VerdictTaken
)

// RefuseWithin is how recently this node must have heard a peer to keep
// it alive against another node's verdict: half the longer of the silence
// and watch silence timeouts, the time in which a live node that reaches
// this node has surely been heard.
func (t Timing) RefuseWithin() time.Duration {
	return max(t.SilenceTimeout, t.WatchSilenceTimeout) / 2
}

// WatcherVerdict takes another node's verdict, at now, that p is failed
// on silence: a watcher's, or in a small cluster any peer's. It returns
// how long ago p was last heard (memberlist's report that p is alive
// counts, as in Silence).
func (d *Detector) WatcherVerdict(p *Peer, now time.Time) (WatcherOutcome, time.Duration) {
	if !p.state.IsAlive() || p.leaving {
		return VerdictIgnored, 0
	}
	last := p.heardAt
	if p.since.After(last) {
		last = p.since
	}
	heard := now.Sub(last)
	if heard < d.t.RefuseWithin() {
		return VerdictRefused, heard
	}
	p.failOnSilence(now)
	return VerdictTaken, heard
}

// Silence returns how long p's heartbeats have been silent at now and the
// timeout they are judged by, and false if p is not judged on silence: it
// is not alive here, is leaving, or does not send heartbeats fast enough.
// fast tells whether this node heartbeats fast itself (FastHeartbeats at
// its own count of alive peers): when the cluster grows past
// FastHeartbeatPeers, a peer that has switched to slow rounds may not
// have told this node yet, and its silence would be no silence at all.
// Watch heartbeats are judged at any size: a peer sends them only to the
// watchers it picked. memberlist's report that p is alive counts as a
// heartbeat (since), so a node that dies before its first heartbeat
// arrives is judged too. A peer under an overrule is judged as well: its
// heartbeats overruled memberlist, and once they stop there is nothing
// left to wait for.
func (d *Detector) Silence(p *Peer, fast bool, now time.Time) (silent, timeout time.Duration, judged bool) {
	t := d.t
	if !p.state.IsAlive() || p.leaving || p.period == 0 {
		return 0, 0, false
	}
	switch {
	case t.SilenceTimeout > 0 && p.period <= t.FastHeartbeatInterval && fast:
		timeout = t.SilenceTimeout
	case t.WatchPeers > 0 && p.period == t.WatchInterval:
		timeout = t.WatchSilenceTimeout
	default:
		return 0, 0, false
	}
	last := p.heardAt
	if p.since.After(last) {
		last = p.since // alive since: the silence before does not count
	}
	return now.Sub(last), timeout, true
}

// MaxSilentReport bounds the bytes of names in one silence report so that
// it fits a UDP packet with memberlist's framing and encryption.
const MaxSilentReport = 1000

// Verdict is a peer failed on silence by Judge.
type Verdict struct {
	Name string
	// Silent is how long it had been silent; Witness is the peer that
	// found it silent too.
	Silent  time.Duration
	Witness string
	// Watched is set when it was judged on watch heartbeats. Every verdict
	// is told to every peer.
	Watched bool
}

// Judge runs one round's silence verdicts over peers at now; fast tells
// whether this node heartbeats fast itself (see Silence). It fails the
// peers that have been silent for their silence timeout and that a
// witness found silent within the last quarter of it, and returns them.
// It appends to accused the peers silent for half the timeout and those
// Silenced here, whom this node reports silent as their witness, up to
// MaxSilentReport bytes of names. A degraded node does neither: it counts
// each verdict it holds back, once per peer until the peer is heard again.
func (d *Detector) Judge(peers iter.Seq2[string, *Peer], fast bool, now time.Time, accused []string) ([]Verdict, []string) {
	t := d.t
	if !t.Judges() {
		return nil, accused
	}
	if d.Degraded() {
		for _, p := range peers {
			if p.held {
				continue
			}
			if silent, timeout, judged := d.Silence(p, fast, now); judged && silent >= timeout && now.Sub(p.witnessedAt) <= timeout/4 {
				p.held = true
				d.health.Suppressed()
			}
		}
		return nil, accused
	}
	var verdicts []Verdict
	size := 0
	accuse := func(name string) {
		if size += 1 + len(name); size <= MaxSilentReport {
			accused = append(accused, name)
		}
	}
	for name, p := range peers {
		if p.state == Silenced {
			accuse(name) // still silent: others may not have judged yet
			continue
		}
		silent, timeout, judged := d.Silence(p, fast, now)
		if !judged || silent < timeout/2 {
			continue
		}
		accuse(name)
		if silent < timeout || now.Sub(p.witnessedAt) > timeout/4 {
			continue
		}
		watched := p.period == t.WatchInterval
		p.failOnSilence(now)
		verdicts = append(verdicts, Verdict{Name: name, Silent: silent, Witness: p.witness, Watched: watched})
	}
	return verdicts, accused
}

// Fail takes memberlist's verdict on p that the caller held back (a move
// the peer announced and never completed), at now, with no overrule: p
// is Failed, or Left if it announced its leave.
func (d *Detector) Fail(p *Peer, now time.Time) {
	p.fail(false, now)
}

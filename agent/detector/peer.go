package detector

import (
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/phi"
)

// State is where a peer stands in this node's view: one state machine for
// every way a peer is judged, by memberlist or by this detector. The
// transitions are the Detector's methods; docs/DESIGN.md ("The failure
// detector") draws them.
type State uint8

// States of a peer.
const (
	// Unknown: a record of the node has been heard of, but memberlist has
	// not reported it. Nothing judges it.
	Unknown State = iota
	// Alive: memberlist reports it alive, and nothing here says otherwise.
	Alive
	// Overruled: memberlist declared it dead, but one of its heartbeats
	// arrived after the suspicion began, so it is held alive and asked to
	// re-advertise itself. memberlist's revival (Joined) ends it; if none
	// comes within MinSuspicion, Uphold fails it.
	Overruled
	// Silenced: failed here on silence, this node's verdict or a
	// watcher's, while memberlist still holds it alive. Its next new
	// heartbeat revives it; memberlist's own verdict (Gone) only confirms.
	Silenced
	// Failed: failed, and memberlist holds it dead too.
	Failed
	// Left: it left gracefully (its leave intent came before or after
	// memberlist's verdict).
	Left
)

// String names the state.
func (s State) String() string {
	switch s {
	case Unknown:
		return "unknown"
	case Alive:
		return "alive"
	case Overruled:
		return "overruled"
	case Silenced:
		return "silenced"
	case Failed:
		return "failed"
	case Left:
		return "left"
	}
	return "invalid"
}

// IsAlive reports whether the state shows the peer alive: Alive, or
// Overruled (memberlist's verdict is set aside until upheld).
func (s State) IsAlive() bool { return s == Alive || s == Overruled }

// IsFailed reports whether the state shows the peer failed: Failed, or
// Silenced (memberlist has not agreed yet).
func (s State) IsFailed() bool { return s == Failed || s == Silenced }

// GetsHeartbeats reports whether this node heartbeats a peer in the
// state: alive ones, and ones failed here on silence, so that a node that
// comes back hears from everyone at once.
func (s State) GetsHeartbeats() bool { return s.IsAlive() || s == Silenced }

// Peer is the detector's state of one peer. The zero Peer is Unknown. The
// caller keeps one per peer beside its record and serialises the calls
// (agent/cluster holds its member lock).
type Peer struct {
	state State
	// since is when the peer entered its current status (alive, failed or
	// left): Overruled keeps Alive's, Failed keeps Silenced's.
	since time.Time
	// leaving is set by the peer's leave intent, so that memberlist's
	// next verdict is a leave, not a failure.
	leaving bool
	// leftLast is set when the peer's last departure was a leave: a
	// relayed copy of that leave can still arrive after it came back.
	leftLast bool
	// overruledAt is when memberlist's verdict was set aside (Overruled).
	overruledAt time.Time

	det *phi.Detector
	// period is the heartbeat period det models: announced by the peer's
	// heartbeats, estimated from the cluster size until the first arrives.
	period  time.Duration
	lastSeq uint64
	// heardAt is when the peer's latest heartbeat arrived.
	heardAt time.Time
	// held is set when this node, degraded, held back a silence verdict
	// on the peer; its next heartbeat clears it, so each is counted once.
	held bool
	// witnessedAt is when witness, another peer, last reported this one
	// silent.
	witnessedAt time.Time
	witness     string
	// sentPeriod is the period this node last announced to the peer.
	sentPeriod time.Duration
}

// State returns the peer's state.
func (p *Peer) State() State { return p.state }

// Since returns when the peer entered its current status.
func (p *Peer) Since() time.Time { return p.since }

// OverruledAt returns when memberlist's verdict was set aside; zero unless
// Overruled.
func (p *Peer) OverruledAt() time.Time { return p.overruledAt }

// Leaving reports whether the peer's leave intent has arrived.
func (p *Peer) Leaving() bool { return p.leaving }

// HeardAt returns when the peer's latest heartbeat arrived.
func (p *Peer) HeardAt() time.Time { return p.heardAt }

// Period returns the heartbeat period the peer's phi detector models.
func (p *Peer) Period() time.Duration { return p.period }

// LastSeq returns the sequence number of the peer's latest heartbeat.
func (p *Peer) LastSeq() uint64 { return p.lastSeq }

// Witness returns the peer that last reported this one silent.
func (p *Peer) Witness() string { return p.witness }

// SentPeriod returns the period this node last announced to the peer.
func (p *Peer) SentPeriod() time.Duration { return p.sentPeriod }

// SetSentPeriod records the period this node announced to the peer.
func (p *Peer) SetSentPeriod(d time.Duration) { p.sentPeriod = d }

// reset gives p a fresh phi detector expecting a heartbeat every period.
func (p *Peer) reset(conf phi.Config, period time.Duration) {
	conf.FirstHeartbeatEstimate = period
	p.det = phi.New(conf)
	p.period = period
}

// fail moves p to Failed, or to Left if it announced its leave (or stale:
// memberlist's verdict is its previous run's leave).
func (p *Peer) fail(stale bool, now time.Time) {
	p.state, p.leftLast = Failed, false
	if p.leaving || stale {
		p.state, p.leftLast = Left, true
	}
	p.overruledAt = time.Time{}
	p.since = now
}

// failOnSilence fails p on silence, its own or a watcher's. Under an
// overrule memberlist holds the peer dead already: this upholds its
// verdict, and nothing is left for memberlist to confirm.
func (p *Peer) failOnSilence(now time.Time) {
	overruled := p.state == Overruled
	p.fail(false, now)
	if !overruled {
		p.state = Silenced
	}
}

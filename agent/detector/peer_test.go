package detector

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/phi"
)

// timing is the test profile's detector timing, with memberlist's
// shortest suspicion at 1 s.
func timing() Timing {
	return Timing{
		HeartbeatInterval: 50 * time.Millisecond, HeartbeatFanout: 8,
		FastHeartbeatPeers: 11, FastHeartbeatInterval: 20 * time.Millisecond, SilenceTimeout: 400 * time.Millisecond,
		WatchPeers: 2, WatchInterval: 25 * time.Millisecond, WatchSilenceTimeout: 500 * time.Millisecond,
		MinSuspicion: time.Second,
		Phi:          phi.Config{Threshold: 8, WindowSize: 100, MinStdDev: 10 * time.Millisecond, FirstHeartbeatEstimate: 50 * time.Millisecond},
	}
}

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

// at is t0 plus ms milliseconds.
func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// peerIn returns a peer in state s that joined at t0 and was last heard
// (heartbeat 5, fast period) at heard; s Unknown has never been reported.
func peerIn(d *Detector, s State, heard time.Time) *Peer {
	p := &Peer{}
	if s == Unknown {
		return p
	}
	d.Joined(p, d.t.FastHeartbeatInterval, t0)
	d.Heartbeat(p, 5, d.t.FastHeartbeatInterval, heard)
	p.state = s
	switch s {
	case Overruled:
		p.overruledAt = heard
	case Silenced, Failed, Left:
		p.since = heard
	}
	return p
}

// The state machine of one peer: every state against every input, with
// the state it leads to and what the caller is told to do.
func TestPeerStateMachine(t *testing.T) {
	d := New(timing())
	// Every peer joined and was last heard at t0.
	now := at(500)   // within MinSuspicion of t0
	late := at(1500) // past MinSuspicion
	type step struct {
		name  string
		from  State
		setup func(p *Peer)
		do    func(p *Peer) any
		want  State
		out   any
	}
	joined := func(p *Peer) any { return d.Joined(p, 50*time.Millisecond, now) }
	goneNow := func(p *Peer) any { return d.Gone(p, now) }
	goneLate := func(p *Peer) any { return d.Gone(p, late) }
	beat := func(seq uint64) func(p *Peer) any {
		return func(p *Peer) any { return d.Heartbeat(p, seq, 20*time.Millisecond, now) }
	}
	leave := func(p *Peer) any { return d.LeaveIntent(p) }
	watcher := func(when time.Time) func(p *Peer) any {
		return func(p *Peer) any { o, _ := d.WatcherVerdict(p, when); return o }
	}
	uphold := func(when time.Time) func(p *Peer) any {
		return func(p *Peer) any { return d.Uphold(p, when, late) }
	}
	leaving := func(p *Peer) { p.leaving = true }
	cameBack := func(p *Peer) { p.leftLast = true } // joined at t0 after a leave

	steps := []step{
		// memberlist reports the peer alive.
		{"join unknown", Unknown, nil, joined, Alive, Joined},
		{"join alive", Alive, nil, joined, Alive, Joined},
		{"join overruled withdraws", Overruled, nil, joined, Alive, Withdrawn},
		{"join silenced", Silenced, nil, joined, Alive, Joined},
		{"join failed", Failed, nil, joined, Alive, Joined},
		{"join left", Left, nil, joined, Alive, Joined},

		// memberlist reports the peer dead or left.
		{"gone unknown", Unknown, nil, goneNow, Unknown, GoneIgnored},
		{"gone alive, heard after the suspicion began", Alive, nil, goneNow, Overruled, GoneOverruled},
		{"gone alive, silent since before", Alive, nil, goneLate, Failed, GoneFailed},
		{"gone alive, leaving", Alive, leaving, goneNow, Left, GoneLeft},
		{"gone alive, just back from a leave", Alive, cameBack, goneNow, Left, GoneLeft},
		{"gone alive, back from a leave long ago", Alive, cameBack, goneLate, Failed, GoneFailed},
		{"gone overruled, heard again", Overruled, nil, goneNow, Overruled, GoneOverruled},
		{"gone overruled, silent", Overruled, nil, goneLate, Failed, GoneFailed},
		{"gone silenced: memberlist confirms", Silenced, nil, goneNow, Failed, GoneConfirmed},
		{"gone failed", Failed, nil, goneNow, Failed, GoneConfirmed},
		{"gone left", Left, nil, goneNow, Left, GoneConfirmed},

		// A heartbeat arrives.
		{"beat unknown", Unknown, nil, beat(6), Unknown, HeartbeatStranger},
		{"beat alive", Alive, nil, beat(6), Alive, HeartbeatTaken},
		{"beat alive, duplicate", Alive, nil, beat(5), Alive, HeartbeatIgnored},
		{"beat overruled", Overruled, nil, beat(6), Overruled, HeartbeatOverruled},
		{"beat silenced revives", Silenced, nil, beat(6), Alive, HeartbeatRevived},
		{"beat silenced, sent before the silence", Silenced, nil, beat(5), Silenced, HeartbeatIgnored},
		{"beat failed", Failed, nil, beat(6), Failed, HeartbeatFromFailed},
		{"beat left", Left, nil, beat(6), Left, HeartbeatIgnored},

		// Its leave intent arrives.
		{"leave unknown", Unknown, nil, leave, Unknown, false},
		{"leave alive", Alive, nil, leave, Alive, false},
		{"leave overruled", Overruled, nil, leave, Overruled, false},
		{"leave silenced", Silenced, nil, leave, Left, true},
		{"leave failed", Failed, nil, leave, Left, true},
		{"leave twice", Failed, leaving, leave, Failed, false},

		// A watcher's verdict arrives.
		{"watcher, alive, heard lately", Alive, nil, watcher(at(100)), Alive, VerdictRefused},
		{"watcher, alive, silent", Alive, nil, watcher(now), Silenced, VerdictTaken},
		{"watcher, overruled, silent: memberlist agrees already", Overruled, nil, watcher(now), Failed, VerdictTaken},
		{"watcher, leaving", Alive, leaving, watcher(now), Alive, VerdictIgnored},
		{"watcher, silenced", Silenced, nil, watcher(now), Silenced, VerdictIgnored},
		{"watcher, failed", Failed, nil, watcher(now), Failed, VerdictIgnored},
		{"watcher, unknown", Unknown, nil, watcher(now), Unknown, VerdictIgnored},
		{"watcher, left", Left, nil, watcher(now), Left, VerdictIgnored},

		// The overrule's deadline.
		{"uphold overruled", Overruled, nil, uphold(t0), Failed, true},
		{"uphold an older overrule", Overruled, nil, uphold(at(-1)), Overruled, false},
		{"uphold alive (withdrawn)", Alive, nil, uphold(t0), Alive, false},
	}
	covered := map[string]map[State]bool{}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			p := peerIn(d, s.from, t0)
			if s.setup != nil {
				s.setup(p)
			}
			out := s.do(p)
			if out != s.out || p.State() != s.want {
				t.Errorf("from %s: got %s (outcome %v), want %s (outcome %v)", s.from, p.State(), out, s.want, s.out)
			}
		})
		kind := fmt.Sprintf("%T", s.out)
		if covered[kind] == nil {
			covered[kind] = map[State]bool{}
		}
		covered[kind][s.from] = true
	}
	// Every input with an outcome of its own is tried from every state.
	for kind, from := range covered {
		for s := Unknown; s <= Left; s++ {
			if !from[s] && kind != "bool" {
				t.Errorf("no step of %s from %s", kind, s)
			}
		}
	}
}

// A peer revived by its heartbeat, or back from memberlist, starts a fresh
// phi history at the period it announces: the silence while it was gone is
// not an inter-arrival time.
func TestRevivalStartsAFreshPhiHistory(t *testing.T) {
	d := New(timing())
	p := peerIn(d, Silenced, t0)
	if d.Heartbeat(p, 6, 20*time.Millisecond, at(10_000)) != HeartbeatRevived {
		t.Fatal("not revived")
	}
	if phi, _ := d.Phi(p, at(10_020)); phi >= 1 {
		t.Errorf("phi %.2f one period after the revival, want near 0", phi)
	}
	if p.Period() != 20*time.Millisecond || !p.Since().Equal(at(10_000)) {
		t.Errorf("period %v since %v", p.Period(), p.Since())
	}
}

// Failed and left peers show phi at the threshold and 0; judged peers
// their own phi.
func TestPhiShownByState(t *testing.T) {
	d := New(timing())
	for s, want := range map[State]string{Alive: "high", Overruled: "high", Silenced: "threshold", Failed: "threshold", Left: "zero"} {
		p := peerIn(d, s, t0)
		phi, ok := d.Phi(p, at(60_000))
		got := "high"
		switch {
		case !ok:
			got = "none"
		case phi == 0:
			got = "zero"
		case phi == d.Threshold():
			got = "threshold"
		}
		if got != want {
			t.Errorf("%s: phi %.2f is %s, want %s", s, phi, got, want)
		}
	}
	if _, ok := d.Phi(&Peer{}, t0); ok {
		t.Error("an unknown peer has a phi")
	}
}

// Judge fails a peer silent for the timeout only with a witness from the
// last quarter of it, reports the peers silent for half of it, and holds
// everything back while this node is degraded.
func TestJudge(t *testing.T) {
	tm := timing()
	d := New(tm)
	peers := map[string]*Peer{
		"quiet":     peerIn(d, Alive, t0),         // silent 450 ms, witnessed
		"lone":      peerIn(d, Alive, t0),         // silent 450 ms, no witness
		"stale":     peerIn(d, Alive, t0),         // silent 450 ms, witness too old
		"half":      peerIn(d, Alive, at(250)),    // silent 200 ms: accused only
		"fresh":     peerIn(d, Alive, at(440)),    // heard 10 ms ago
		"silenced":  peerIn(d, Silenced, at(100)), // still accused
		"leaving":   peerIn(d, Alive, t0),
		"slowpoke":  peerIn(d, Alive, t0), // slow period: not judged
		"unknown":   peerIn(d, Unknown, t0),
		"failed":    peerIn(d, Failed, t0),
		"overruled": peerIn(d, Overruled, t0), // judged like an alive one
	}
	peers["leaving"].leaving = true
	d.Heartbeat(peers["slowpoke"], 6, tm.HeartbeatInterval, t0)
	now := at(450)
	for _, name := range []string{"quiet", "leaving", "slowpoke", "overruled"} {
		d.Witnessed(peers[name], "w", at(400))
	}
	d.Witnessed(peers["stale"], "w", at(340)) // 110 ms ago: more than 400/4

	verdicts, accused := d.Judge(maps.All(peers), true, now, nil)
	var failed []string
	for _, v := range verdicts {
		failed = append(failed, v.Name)
		if v.Witness != "w" || v.Silent != 450*time.Millisecond || v.Watched {
			t.Errorf("verdict %+v", v)
		}
	}
	if fmt.Sprint(slices.Sorted(slices.Values(failed))) != "[overruled quiet]" {
		t.Errorf("failed %v, want [overruled quiet]", slices.Sorted(slices.Values(failed)))
	}
	if fmt.Sprint(slices.Sorted(slices.Values(accused))) != "[half lone overruled quiet silenced stale]" {
		t.Errorf("accused %v", slices.Sorted(slices.Values(accused)))
	}
	if peers["quiet"].State() != Silenced || peers["overruled"].State() != Failed {
		t.Errorf("quiet %s, overruled %s; want silenced, failed", peers["quiet"].State(), peers["overruled"].State())
	}

	// Not heartbeating fast itself, the node judges no fast heartbeats.
	d2 := New(tm)
	p := peerIn(d2, Alive, t0)
	d2.Witnessed(p, "w", at(400))
	if v, _ := d2.Judge(maps.All(map[string]*Peer{"p": p}), false, now, nil); len(v) != 0 {
		t.Errorf("judged fast heartbeats while heartbeating slowly: %v", v)
	}

	// Degraded: nothing is judged or reported; each held verdict counts
	// once until the peer is heard again.
	d3 := New(tm)
	d3.Round(Round{Slip: time.Second, Slack: time.Millisecond})
	p = peerIn(d3, Alive, t0)
	d3.Witnessed(p, "w", at(400))
	for range 3 {
		v, acc := d3.Judge(maps.All(map[string]*Peer{"p": p}), true, now, nil)
		if len(v) != 0 || len(acc) != 0 {
			t.Fatalf("degraded node judged %v, accused %v", v, acc)
		}
	}
	if got := d3.Health().Stats().Suppressed; got != 1 {
		t.Errorf("suppressed %d, want 1", got)
	}
	if p.State() != Alive {
		t.Errorf("degraded node failed a peer: %s", p.State())
	}
}

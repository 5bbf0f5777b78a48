package detector

import (
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/phi"
)

// Timing is what the detector needs of a timing profile. The fields but
// MinSuspicion are agent/cluster's Profile fields of the same names, which
// say what each is for and why each profile's values were chosen.
type Timing struct {
	HeartbeatInterval     time.Duration
	HeartbeatFanout       int
	FastHeartbeatPeers    int
	FastHeartbeatInterval time.Duration
	SilenceTimeout        time.Duration
	WatchPeers            int
	WatchInterval         time.Duration
	WatchSilenceTimeout   time.Duration
	// MinSuspicion is the shortest time in which memberlist can declare an
	// alive node dead: its suspicion timeout at the smallest cluster size
	// (SuspicionMult·ProbeInterval). A heartbeat that arrived less than
	// this before memberlist's verdict was sent after the suspicion began.
	MinSuspicion time.Duration
	Phi          phi.Config
}

// MinSilenceRounds is the fewest heartbeat rounds a silence timeout may
// span: fewer, and a few lost packets fail a live node.
const MinSilenceRounds = 16

// Judges reports whether the timing has the detector issue verdicts of
// its own (silence or watch verdicts). Without them every verdict is
// memberlist's, and local health changes nothing.
func (t Timing) Judges() bool { return t.SilenceTimeout > 0 || t.WatchPeers > 0 }

// FastHeartbeats reports whether a node with peers alive peers heartbeats
// all of them every FastHeartbeatInterval.
func FastHeartbeats(t Timing, peers int) bool {
	return t.FastHeartbeatPeers > 0 && peers <= t.FastHeartbeatPeers
}

// RoundInterval is the time between heartbeat rounds with peers alive
// peers.
func RoundInterval(t Timing, peers int) time.Duration {
	switch {
	case FastHeartbeats(t, peers):
		return t.FastHeartbeatInterval
	case t.WatchPeers > 0:
		return t.WatchInterval
	}
	return t.HeartbeatInterval
}

// HeartbeatPeriod is how often each of n alive peers hears from a node:
// every fast round while n is at most FastHeartbeatPeers, every round
// while n fits in the fanout, every ceil(n/fanout) rounds beyond.
func HeartbeatPeriod(t Timing, n int) time.Duration {
	if FastHeartbeats(t, n) {
		return t.FastHeartbeatInterval
	}
	return SlowPeriod(t, n)
}

// SlowPeriod is how often each of n peers hears from a node in slow
// rounds: every round while n fits in the fanout, every ceil(n/fanout)
// rounds beyond.
func SlowPeriod(t Timing, n int) time.Duration {
	rounds := max(1, (n+t.HeartbeatFanout-1)/t.HeartbeatFanout)
	return time.Duration(rounds) * t.HeartbeatInterval
}

// RoundSlack is how late a heartbeat round after interval may run before
// it counts against this node's health: one round, or the sixteenth of the
// silence timeout the round serves (MinSilenceRounds), whichever is
// longer. A round that late eats a round of the margin every silence
// verdict keeps for lost heartbeats. It follows the timing, so it scales
// with time dilation.
func RoundSlack(t Timing, interval time.Duration) time.Duration {
	timeout := t.HeartbeatInterval
	switch {
	case interval == t.FastHeartbeatInterval && t.SilenceTimeout > 0:
		timeout = t.SilenceTimeout / MinSilenceRounds
	case interval == t.WatchInterval && t.WatchSilenceTimeout > 0:
		timeout = t.WatchSilenceTimeout / MinSilenceRounds
	}
	return max(interval, timeout)
}

package cluster

import "time"

// Local health (detector.Health) acts on what this node decides itself:
//
//   - while degraded it issues no silence verdicts and sends no silence
//     reports, so it neither fails a peer nor serves as another node's
//     witness;
//   - it announces heartbeat periods widened by the score. Peers judge on
//     silence only the fast and watch periods, so they leave a degraded
//     node to memberlist until it recovers. This is how a node says it is
//     degraded without a change to the wire: heartbeats have always
//     carried the period, and nodes of the previous release judge it the
//     same way;
//   - the phi threshold a peer is shown suspect at widens by the score.
//     Silence timeouts need no widening: a degraded node judges nobody,
//     and it judges again only after DefaultCalmRounds rounds on time.
//
// A verdict from a degraded reporter is therefore never sent, rather than
// refused on arrival.
//
// memberlist's verdicts are not held back. Holding them while degraded,
// as overrules that ask the node to re-advertise itself, was tried: in a
// 200-node cluster in one process every held verdict became a request to
// re-advertise, thousands of them, and the run ended with more false
// positives, not fewer (docs/PERFORMANCE.md).
//
// Only profiles that issue verdicts of their own (lan,
// test) act on it; memberlist-lan, the benchmark's stand-in for
// memberlist's defaults, stays memberlist's.

// healthActs reports whether local health changes this node's decisions:
// only with a profile that issues verdicts of its own.
func (c *Cluster) healthActs() bool {
	p := c.conf.Profile
	return p.SilenceTimeout > 0 || p.WatchPeers > 0
}

// degraded reports whether this node is late enough to hold back its own
// verdicts.
func (c *Cluster) degraded() bool {
	return c.healthActs() && c.health.Degraded()
}

// roundSlack is how late a heartbeat round after interval may run before
// it counts against this node's health: one round, or the sixteenth of the
// silence timeout the round serves (minSilenceRounds), whichever is
// longer. A round that late eats a round of the margin every silence
// verdict keeps for lost heartbeats. It follows the profile, so it scales
// with time dilation.
func roundSlack(p Profile, interval time.Duration) time.Duration {
	timeout := p.HeartbeatInterval
	switch {
	case interval == p.FastHeartbeatInterval && p.SilenceTimeout > 0:
		timeout = p.SilenceTimeout / minSilenceRounds
	case interval == p.WatchInterval && p.WatchSilenceTimeout > 0:
		timeout = p.WatchSilenceTimeout / minSilenceRounds
	}
	return max(interval, timeout)
}

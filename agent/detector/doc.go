// Package detector is the failure detector that runs beside memberlist's
// SWIM: one liveness state machine per peer (Peer, State), phi per peer
// from direct heartbeats, the heartbeat rounds that feed it (Plan),
// silence and watcher verdicts (Judge, WatcherVerdict), the overrule of
// memberlist's verdicts that heartbeats outlived (Gone, Uphold), and the
// node's measure of its own lateness (Health). It is pure: no I/O, no
// goroutines, time passed in; agent/cluster runs it (see Detector).
//
// # Heartbeats
//
// Heartbeats go directly to each peer as one best-effort UDP packet, each
// announcing the period until the next, so that each observer measures
// the arrival times of one sender over one path, which is what phi
// models. Slow rounds go to at most HeartbeatFanout peers each
// HeartbeatInterval, walking the peers in a per-node order (HeartbeatKey),
// so every peer hears from a node once per SlowPeriod and a round never
// exceeds the fanout.
//
// # Silence verdicts
//
// memberlist declares a node failed when a suspicion of it runs out: a
// probe has to fail first, then the suspicion timeout runs, then the
// verdict spreads by gossip; a suspicion timeout that outlasts a 2 s stall
// puts that at several seconds (docs/PERFORMANCE.md).
//
// In a small cluster (FastHeartbeatPeers) every node heartbeats every peer
// directly each FastHeartbeatInterval, so each node can judge its peers
// itself: a peer silent for SilenceTimeout is failed at once, with no
// probe to wait for and nothing to spread. A timeout spans at least
// MinSilenceRounds rounds, so failing a node stalled for 2 s takes several
// heartbeats lost in a row on one link.
//
// Silence is one observer's view, and SWIM probes indirectly because one
// link can fail while the node is fine. So a silence verdict also needs a
// witness: another alive peer that said, within the last quarter of the
// timeout, that it finds the node silent as well. Each round a node sends
// the names of the peers it has not heard for half the timeout (a silence
// report; nothing while it hears everyone). A node behind a broken link
// has no witness; neither has one that was stalled itself and finds
// everybody silent when it wakes, since it heard no report while stalled
// and the others hear everyone. memberlist decides for them, and in a
// cluster of two.
//
// A node that reaches a verdict tells every peer, as a watcher does (see
// below). A peer that has not reached its own, because it is degraded
// (see Local health) or has no witness yet, takes it unless it heard the
// node itself within RefuseWithin: one healthy pair of observers decides
// for everyone, and a late observer does not lag the cluster by the
// rounds it needs to recover.
//
// The verdict is this node's (Silenced): memberlist holds the peer alive
// until its own suspicion runs out, and then confirms. If the peer's
// heartbeats resume first, it is alive again at once. Peers failed on
// silence keep getting heartbeats, so a node that comes back hears from
// everyone at once.
//
// # Watched heartbeats
//
// Silence verdicts need every node to hear every other every fast round,
// which is why they stop at FastHeartbeatPeers. Watched heartbeats keep a
// verdict from silence at any size for a flat cost. The alive nodes sit on
// a ring ordered by a hash of their names (RingKey). Each node sends a
// heartbeat every WatchInterval to the WatchPeers nodes that follow it on
// the ring, its watchers, and announces that period in them, so a watcher
// knows to judge it; the rest of its peers get the ordinary slow rounds. A
// watcher fails the node once it has been silent for WatchSilenceTimeout
// and the other watcher has reported it silent too (reports about a node
// go to its watchers), and then sends the verdict to every peer. A peer
// takes it unless it heard from the node itself within half the timeout.
//
// Views of the ring differ for a moment while nodes come and go, so it is
// the watched node that picks its watchers, and a node judges only a peer
// whose latest heartbeat to it announced the watch period. A watcher the
// node drops is told so by a slow-period heartbeat every round for half
// the timeout. A node that hears of a verdict about itself is alive, and
// heartbeats every peer at once: each revives it as soon as that
// heartbeat arrives.
//
// # Overrules
//
// Under heavy loss a node can miss memberlist's suspicion of it, or its
// refutation can miss one observer, and that observer then declares a live
// node failed. Heartbeats are independent evidence of life. A suspicion
// lasts at least MinSuspicion before it becomes a verdict, so a heartbeat
// that arrived less than MinSuspicion before the verdict was sent after
// the suspicion began: the node outlived it. Such a verdict is overruled:
// the node stays alive here and is asked to re-advertise itself, at once
// and at each heartbeat; memberlist's revival ends the overrule. If none
// comes within another MinSuspicion, the verdict is upheld (or sooner, on
// silence). A node killed outright is never overruled: its last heartbeat
// precedes any suspicion of it.
//
// # Local health
//
// A node that is itself late takes its peers for silent (see Health).
// While its score is above zero it issues no silence verdicts and sends no
// silence reports, so it neither fails a peer nor serves as another
// node's witness; it announces heartbeat periods widened by the score,
// which peers do not judge on silence, so they leave it to memberlist
// until it recovers (no wire change: heartbeats have always carried the
// period); and the phi threshold it shows peers suspect at widens by the
// score. It still takes its peers' verdicts: they are healthy nodes'
// judgement, not its own. memberlist's verdicts are not held back: tried, holding them as
// overrules made a 200-node cluster in one process worse, every held
// verdict becoming a request to re-advertise (docs/PERFORMANCE.md). Only
// timings that issue verdicts of their own act on it (Timing.Judges).
package detector

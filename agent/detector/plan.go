package detector

import (
	"cmp"
	"hash/fnv"
	"slices"
	"time"
)

// Target is a peer that gets heartbeats: Key is its place in this node's
// heartbeat order (HeartbeatKey), Ring its place on the watch ring
// (RingKey); Alive is false for a peer failed here on silence, which still
// gets heartbeats but is off the ring.
type Target struct {
	Key   uint64
	Ring  uint64
	Name  string
	Addr  string
	Port  int
	Alive bool
}

// Send is one heartbeat to send, with the period it announces.
type Send struct {
	Name   string
	Addr   string
	Port   int
	Period time.Duration
}

// Plan picks each round's heartbeats; it keeps what rounds need of the
// ones before. The zero Plan is ready to use.
type Plan struct {
	last   uint64    // order key of the last peer sent a slow heartbeat
	fastAt time.Time // the last fast round
	slowAt time.Time // the last slow round among watch rounds
	// dropped are the peers that got watch heartbeats until recently,
	// with when they stop being told the slow period. A dropped watcher is
	// told even if it is no longer alive here: were this node wrong about
	// it, it would go on judging this node.
	dropped map[string]droppedWatcher
	// The watch ring and what follows from it, built for membership
	// generation gen (nil ring: not built): the ring of alive nodes, this
	// node included, sorted; every peer by name; the heartbeats to the
	// watchers; and the peers that are not watchers, for slow rounds.
	gen        uint64
	ring       []ringNode
	byName     map[string]Target
	watchSends []Send
	others     []Target
}

// Next plans the round at now for peers, as of membership generation gen:
// the heartbeats to send, the peers to send the report of accused to, and
// the time to the next round. In a large cluster the ring is rebuilt only
// when gen moves, so a watch round costs O(watchers), not O(N log N).
func (r *Plan) Next(t Timing, self string, peers []Target, gen uint64, accused []string, now time.Time) (sends, reportTo []Send, interval time.Duration) {
	n := len(peers)
	if n == 0 {
		return nil, nil, RoundInterval(t, 0)
	}
	to := func(hp Target, period time.Duration) Send {
		return Send{Name: hp.Name, Addr: hp.Addr, Port: hp.Port, Period: period}
	}
	// Fast rounds go by the peers alive here, as this node's own silence
	// judgement does (Judge's fast): a peer failed here on silence still
	// gets heartbeats, but until memberlist confirms (seconds later) it must
	// not push a cluster at the limit into watch rounds, whose silence
	// timeout is longer.
	if FastHeartbeats(t, alivePeers(peers, t.FastHeartbeatPeers)) {
		r.fastAt = now
		r.setWatchers(nil, now, 0)
		r.ring = nil
		for _, hp := range peers {
			sends = append(sends, to(hp, t.FastHeartbeatInterval))
		}
		return sends, sends, t.FastHeartbeatInterval
	}
	// Just out of fast rounds: tell every peer the new period, so none
	// waits for a fast heartbeat that will not come and takes it for
	// silence.
	leavingFast := now.Sub(r.fastAt) < t.SilenceTimeout
	if t.WatchPeers == 0 {
		fanout := t.HeartbeatFanout
		if leavingFast {
			fanout = n
		}
		targets := heartbeatTargets(peers, r.last, fanout)
		r.last = targets[len(targets)-1].Key
		for _, hp := range targets {
			sends = append(sends, to(hp, HeartbeatPeriod(t, n)))
		}
		return sends, sends, t.HeartbeatInterval
	}

	if r.ring == nil || r.gen != gen {
		r.rebuild(t, self, peers, now)
		r.gen = gen
	}
	sends = append(sends, r.watchSends...)
	if len(r.others) > 0 {
		slow := SlowPeriod(t, len(r.others))
		switch {
		case leavingFast:
			for _, hp := range r.others {
				sends = append(sends, to(hp, slow))
			}
		case now.Sub(r.slowAt) >= t.HeartbeatInterval:
			r.slowAt = now
			targets := heartbeatTargets(r.others, r.last, t.HeartbeatFanout)
			r.last = targets[len(targets)-1].Key
			for _, hp := range targets {
				sends = append(sends, to(hp, slow))
			}
		}
		for name, d := range r.dropped {
			if now.Before(d.until) {
				sends = append(sends, Send{Name: name, Addr: d.addr, Port: d.port, Period: slow})
			} else {
				delete(r.dropped, name)
			}
		}
	}
	// Reports go to each accused node's watchers, the witnesses it may
	// have.
	for _, name := range accused {
		for _, w := range successors(r.ring, name, t.WatchPeers) {
			if w.name != self && !slices.ContainsFunc(reportTo, func(s Send) bool { return s.Name == w.name }) {
				reportTo = append(reportTo, to(r.byName[w.name], 0))
			}
		}
	}
	return sends, reportTo, t.WatchInterval
}

// rebuild makes the watch ring from peers and picks this node's watchers
// on it.
func (r *Plan) rebuild(t Timing, self string, peers []Target, now time.Time) {
	r.ring = append(r.ring[:0], ringNode{key: RingKey(self), name: self})
	clear(r.byName)
	if r.byName == nil {
		r.byName = make(map[string]Target, len(peers))
	}
	for _, hp := range peers {
		r.byName[hp.Name] = hp
		if hp.Alive {
			r.ring = append(r.ring, ringNode{key: hp.Ring, name: hp.Name, addr: hp.Addr, port: hp.Port})
		}
	}
	slices.SortFunc(r.ring, compareRing)
	var watchers []Send
	for _, w := range successors(r.ring, self, t.WatchPeers) {
		watchers = append(watchers, Send{Name: w.name, Addr: w.addr, Port: w.port, Period: t.WatchInterval})
	}
	r.setWatchers(watchers, now, t.WatchSilenceTimeout/2)
	r.others = r.others[:0]
	for _, hp := range peers {
		if !slices.ContainsFunc(watchers, func(w Send) bool { return w.Name == hp.Name }) {
			r.others = append(r.others, hp)
		}
	}
}

// droppedWatcher is a peer that got watch heartbeats until recently: it
// is told the slow period until until.
type droppedWatcher struct {
	addr  string
	port  int
	until time.Time
}

// setWatchers records the heartbeats to the watchers from now on; the
// watchers dropped are told the slow period for tell.
func (r *Plan) setWatchers(watchers []Send, now time.Time, tell time.Duration) {
	for _, old := range r.watchSends {
		if !slices.ContainsFunc(watchers, func(w Send) bool { return w.Name == old.Name }) {
			if r.dropped == nil {
				r.dropped = make(map[string]droppedWatcher)
			}
			r.dropped[old.Name] = droppedWatcher{addr: old.Addr, port: old.Port, until: now.Add(tell)}
		}
	}
	for _, w := range watchers {
		delete(r.dropped, w.Name)
	}
	r.watchSends = append(r.watchSends[:0], watchers...)
}

// HeartbeatKey places peer in self's heartbeat order. The order differs
// from node to node, so a peer's heartbeats from different senders are
// spread over the period, and it does not move when other nodes join or
// leave, so a peer's rhythm is kept.
func HeartbeatKey(self, peer string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(self))
	h.Write([]byte{0})
	h.Write([]byte(peer))
	return h.Sum64()
}

// heartbeatTargets sorts peers by key and returns the fanout peers that
// follow the key last, wrapping around; all of them if there are no more
// than fanout.
func heartbeatTargets(peers []Target, last uint64, fanout int) []Target {
	if len(peers) <= fanout {
		return peers
	}
	slices.SortFunc(peers, func(a, b Target) int { return cmp.Compare(a.Key, b.Key) })
	i, _ := slices.BinarySearchFunc(peers, last, func(p Target, k uint64) int {
		if p.Key <= k {
			return -1
		}
		return 1
	})
	out := make([]Target, 0, fanout)
	for j := range fanout {
		out = append(out, peers[(i+j)%len(peers)])
	}
	return out
}

// ringNode is a node's place on the watch ring.
type ringNode struct {
	key  uint64
	name string
	addr string
	port int
}

// RingKey places a node on the watch ring: the same place on every node.
// FNV alone keeps names that differ in their last characters (pi-21,
// pi-22) close together; the finaliser of MurmurHash3 spreads them.
func RingKey(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	k := h.Sum64()
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	k ^= k >> 33
	return k
}

// compareRing orders the ring by key, then name.
func compareRing(a, b ringNode) int {
	if c := cmp.Compare(a.key, b.key); c != 0 {
		return c
	}
	return cmp.Compare(a.name, b.name)
}

// ringOf builds the ring of names.
func ringOf(names ...string) []ringNode {
	ring := make([]ringNode, 0, len(names))
	for _, n := range names {
		ring = append(ring, ringNode{key: RingKey(n), name: n})
	}
	slices.SortFunc(ring, compareRing)
	return ring
}

// successors returns the k nodes that follow name on ring, a slice sorted
// by compareRing; name need not be on it, and is never returned.
func successors(ring []ringNode, name string, k int) []ringNode {
	at := ringNode{key: RingKey(name), name: name}
	i, _ := slices.BinarySearchFunc(ring, at, compareRing)
	out := make([]ringNode, 0, k)
	for j := 0; j < len(ring) && len(out) < k; j++ {
		if n := ring[(i+j)%len(ring)]; n.name != name {
			out = append(out, n)
		}
	}
	return out
}

// Watchers returns the k nodes of a cluster of nodes that name picks as
// its watchers, in ring order; name need not be among nodes.
func Watchers(nodes []string, name string, k int) []string {
	var out []string
	for _, w := range successors(ringOf(nodes...), name, k) {
		out = append(out, w.name)
	}
	return out
}

// alivePeers counts the alive peers, up to one past limit: enough to
// decide on fast rounds without walking a large cluster every round.
func alivePeers(peers []Target, limit int) int {
	alive := 0
	for _, hp := range peers {
		if hp.Alive {
			if alive++; alive > limit {
				break
			}
		}
	}
	return alive
}

package detector

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// lan is the lan profile's detector timing (agent/cluster's profile.go).
func lan() Timing {
	return Timing{
		HeartbeatInterval: time.Second, HeartbeatFanout: 8,
		FastHeartbeatPeers: 11, FastHeartbeatInterval: 50 * time.Millisecond, SilenceTimeout: 2350 * time.Millisecond,
		WatchPeers: 2, WatchInterval: 200 * time.Millisecond, WatchSilenceTimeout: 3200 * time.Millisecond,
	}
}

func TestHeartbeatTargetsWalkPeersInTurn(t *testing.T) {
	var peers []Target
	for i := range 20 {
		peers = append(peers, Target{Key: HeartbeatKey("self", fmt.Sprintf("pi%02d", i))})
	}
	const fanout = 8
	sent := map[uint64][]int{} // key → rounds it was sent in
	var last uint64
	for round := range 30 {
		targets := heartbeatTargets(peers, last, fanout)
		if len(targets) != fanout {
			t.Fatalf("round %d: %d targets, want %d", round, len(targets), fanout)
		}
		for _, p := range targets {
			sent[p.Key] = append(sent[p.Key], round)
		}
		last = targets[len(targets)-1].Key
	}
	// 30 rounds of 8 is 240 heartbeats: 12 for each of 20 peers, never more
	// than ceil(20/8) = 3 rounds apart.
	for _, p := range peers {
		rounds := sent[p.Key]
		if len(rounds) != 12 {
			t.Errorf("peer %x got %d heartbeats in 30 rounds, want 12", p.Key, len(rounds))
		}
		for i := 1; i < len(rounds); i++ {
			if gap := rounds[i] - rounds[i-1]; gap > 3 {
				t.Errorf("peer %x waited %d rounds", p.Key, gap)
			}
		}
	}

	// A new peer takes its own place; the walk goes on where it was.
	next := heartbeatTargets(peers, last, fanout)[0]
	peers = append(peers, Target{Key: HeartbeatKey("self", "newcomer")})
	if got := heartbeatTargets(peers, last, fanout)[0]; got.Key != next.Key && got.Key != HeartbeatKey("self", "newcomer") {
		t.Errorf("after a join the walk restarts at %x, want %x or the newcomer", got.Key, next.Key)
	}

	if got := heartbeatTargets(peers[:fanout], last, fanout); len(got) != fanout {
		t.Errorf("%d peers with fanout %d: %d targets, want all", fanout, fanout, len(got))
	}
}

func TestHeartbeatPeriod(t *testing.T) {
	p := Timing{HeartbeatInterval: time.Second, HeartbeatFanout: 8}
	for n, want := range map[int]time.Duration{0: time.Second, 1: time.Second, 8: time.Second, 9: 2 * time.Second, 99: 13 * time.Second, 499: 63 * time.Second} {
		if got := HeartbeatPeriod(p, n); got != want {
			t.Errorf("HeartbeatPeriod(%d peers) = %v, want %v", n, got, want)
		}
	}
	// Fast heartbeats: every peer every 50 ms up to 11 peers, then as before.
	p.FastHeartbeatPeers, p.FastHeartbeatInterval = 11, 50*time.Millisecond
	for n, want := range map[int]time.Duration{1: 50 * time.Millisecond, 11: 50 * time.Millisecond, 12: 2 * time.Second, 99: 13 * time.Second} {
		if got := HeartbeatPeriod(p, n); got != want {
			t.Errorf("fast: HeartbeatPeriod(%d peers) = %v, want %v", n, got, want)
		}
		if got, fast := RoundInterval(p, n), n <= 11; (got == p.FastHeartbeatInterval) != fast {
			t.Errorf("fast: RoundInterval(%d peers) = %v", n, got)
		}
	}
}

func ringNames(nodes []ringNode) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.name)
	}
	return out
}

func TestSuccessorsWalkTheRing(t *testing.T) {
	names := []string{"pi-1", "pi-2", "pi-3", "pi-4", "pi-5"}
	ring := ringOf(names...)
	for i, n := range ring {
		got := ringNames(successors(ring, n.name, 2))
		want := []string{ring[(i+1)%5].name, ring[(i+2)%5].name}
		if !slices.Equal(got, want) {
			t.Errorf("successors of %s = %v, want %v", n.name, got, want)
		}
	}
	// A node off the ring (failed here) still has the watchers it would
	// have on it.
	without := ringOf(names[1:]...)
	if got, want := ringNames(successors(without, "pi-1", 2)), ringNames(successors(ring, "pi-1", 2)); !slices.Equal(got, want) {
		t.Errorf("successors of a node off the ring = %v, want %v", got, want)
	}
	// Fewer nodes than watchers: everyone else.
	if got := successors(ringOf("a", "b"), "a", 2); len(got) != 1 || got[0].name != "b" {
		t.Errorf("successors in a ring of two = %v", ringNames(got))
	}
}

// ringPeers returns the names of a cluster of n nodes, pi-0 to pi-<n-1>,
// and pi-0's peers as its heartbeat rounds see them, each at its own port.
func ringPeers(n int) (names []string, peers []Target) {
	for i := range n {
		name := fmt.Sprintf("pi-%d", i)
		names = append(names, name)
		if i > 0 {
			peers = append(peers, Target{Key: HeartbeatKey("pi-0", name), Ring: RingKey(name), Name: name, Addr: "127.0.0.1", Port: 7000 + i, Alive: true})
		}
	}
	return names, peers
}

// The plan of a large cluster's rounds: watch heartbeats to the two
// successors every round, a slow round of the fanout each heartbeat
// interval, a dropped watcher told the slow period for a while, and
// reports to the watchers of an accused node.
func TestRoundPlanWatchesSuccessors(t *testing.T) {
	prof := lan()
	names, peers := ringPeers(20)
	watchers := ringNames(successors(ringOf(names...), "pi-0", 2))
	period := func(sends []Send) map[string]time.Duration {
		m := map[string]time.Duration{}
		for _, s := range sends {
			m[s.Name] = s.Period
		}
		return m
	}

	var r Plan
	gen := uint64(1)
	now := time.Now()
	sends, _, interval := r.Next(prof, "pi-0", peers, gen, nil, now)
	got := period(sends)
	if interval != prof.WatchInterval || len(sends) != 2+prof.HeartbeatFanout {
		t.Fatalf("first round: interval %v, %d heartbeats; want %v and %d", interval, len(sends), prof.WatchInterval, 2+prof.HeartbeatFanout)
	}
	for _, w := range watchers {
		if got[w] != prof.WatchInterval {
			t.Errorf("watcher %s announced %v, want %v", w, got[w], prof.WatchInterval)
		}
	}
	if slow := SlowPeriod(prof, 17); slow != 3*time.Second {
		t.Fatalf("slow period over 17 peers %v", slow)
	}
	for name, p := range got {
		if !slices.Contains(watchers, name) && p != 3*time.Second {
			t.Errorf("%s announced %v, want the slow 3s", name, p)
		}
	}

	// Within the heartbeat interval: the watchers only.
	now = now.Add(prof.WatchInterval)
	sends, _, _ = r.Next(prof, "pi-0", peers, gen, nil, now)
	if got := slices.Sorted(func(yield func(string) bool) {
		for _, s := range sends {
			yield(s.Name)
		}
	}); !slices.Equal(got, slices.Sorted(slices.Values(watchers))) {
		t.Fatalf("watch round went to %v, want %v", got, watchers)
	}

	// A node joins between pi-0 and its second watcher: that watcher is
	// dropped and told the slow period every round for half the timeout.
	var joiner string
	for i := 20; joiner == ""; i++ {
		name := fmt.Sprintf("pi-%d", i)
		if ringNames(successors(ringOf(append(slices.Clone(names), name)...), "pi-0", 2))[1] == name {
			joiner = name
		}
	}
	peers = append(peers, Target{Key: HeartbeatKey("pi-0", joiner), Ring: RingKey(joiner), Name: joiner, Alive: true})
	// The plan follows the peers only when the membership generation
	// moves: the heartbeat loop bumps it on every change.
	if sends, _, _ = r.Next(prof, "pi-0", peers, gen, nil, now); period(sends)[joiner] != 0 {
		t.Fatalf("the joiner got a heartbeat before the generation moved: the ring is rebuilt every round")
	}
	gen++
	for i := range 3 {
		now = now.Add(prof.WatchInterval)
		sends, _, _ = r.Next(prof, "pi-0", peers, gen, nil, now)
		got = period(sends)
		if got[joiner] != prof.WatchInterval || got[watchers[0]] != prof.WatchInterval {
			t.Fatalf("round %d: new watchers announced %v and %v", i, got[joiner], got[watchers[0]])
		}
		if p := got[watchers[1]]; p != SlowPeriod(prof, 18) {
			t.Fatalf("round %d: dropped watcher announced %v, want the slow period", i, p)
		}
	}
	now = now.Add(prof.WatchSilenceTimeout / 2)
	sends, _, _ = r.Next(prof, "pi-0", peers, gen, nil, now)
	if _, told := period(sends)[watchers[1]]; told && len(sends) == 2 {
		t.Fatalf("dropped watcher still told after half the timeout")
	}

	// A report of a silent node goes to its watchers but this one.
	accused := watchers[0]
	_, reportTo, _ := r.Next(prof, "pi-0", peers, gen, []string{accused}, now.Add(prof.WatchInterval))
	var want []string
	ring := ringOf(append(slices.Clone(names), joiner)...)
	for _, w := range successors(ring, accused, 2) {
		if w.name != "pi-0" {
			want = append(want, w.name)
		}
	}
	if got := period(reportTo); len(got) != len(want) {
		t.Fatalf("report went to %v, want %v", got, want)
	} else {
		for _, w := range want {
			if _, ok := got[w]; !ok {
				t.Fatalf("report went to %v, want %v", got, want)
			}
		}
	}
}

// A watcher this node has come to hold failed is dropped and still told
// the slow period: were this node wrong about it, it would otherwise go on
// judging this node on watch heartbeats that no longer come.
func TestRoundPlanTellsAFailedWatcher(t *testing.T) {
	prof := lan()
	names, peers := ringPeers(20)
	watchers := ringNames(successors(ringOf(names...), "pi-0", 2))
	var r Plan
	now := time.Now()
	r.Next(prof, "pi-0", peers, 1, nil, now)

	peers = slices.DeleteFunc(peers, func(hp Target) bool { return hp.Name == watchers[0] })
	for round := range 8 {
		now = now.Add(prof.WatchInterval)
		sends, _, _ := r.Next(prof, "pi-0", peers, 2, nil, now)
		i := slices.IndexFunc(sends, func(s Send) bool { return s.Name == watchers[0] })
		if i < 0 {
			t.Fatalf("round %d: the failed watcher %s is not told", round, watchers[0])
		}
		if s := sends[i]; s.Period != SlowPeriod(prof, len(peers)-2) || s.Port == 0 {
			t.Fatalf("round %d: the failed watcher is told %v at port %d, want the slow period %v at its address",
				round, s.Period, s.Port, SlowPeriod(prof, len(peers)-2))
		}
	}
	now = now.Add(prof.WatchSilenceTimeout / 2)
	sends, _, _ := r.Next(prof, "pi-0", peers, 2, nil, now)
	if slices.ContainsFunc(sends, func(s Send) bool { return s.Name == watchers[0] }) {
		t.Fatalf("the failed watcher is still told after half the timeout")
	}
}

// BenchmarkRoundPlan plans watch rounds at cluster sizes up to 500, side by
// side: "steady", the membership unchanged between rounds as it is almost
// always, and "changed", a new generation every round, which rebuilds the
// ring as every round did before rounds kept it.
func BenchmarkRoundPlan(b *testing.B) {
	prof := lan()
	for _, n := range []int{100, 500} {
		_, peers := ringPeers(n)
		for _, mode := range []string{"steady", "changed"} {
			b.Run(fmt.Sprintf("N=%d/%s", n, mode), func(b *testing.B) {
				var r Plan
				now := time.Now()
				gen := uint64(1)
				b.ReportAllocs()
				for b.Loop() {
					now = now.Add(prof.WatchInterval)
					if mode == "changed" {
						gen++
					}
					if sends, _, _ := r.Next(prof, "pi-0", peers, gen, nil, now); len(sends) < prof.WatchPeers {
						b.Fatalf("%d heartbeats in a round", len(sends))
					}
				}
			})
		}
	}
}

// A cluster at the fast-round limit in which a peer was just failed on
// silence stays in fast rounds: the failed peer still gets heartbeats, but
// counts as gone, as it does for this node's own judgement. Counted as a
// peer, it pushed every node into watch rounds until memberlist confirmed
// the failure, so a second death in that window took the watchers' longer
// timeout.
func TestRoundPlanCountsOnlyAlivePeersForFastRounds(t *testing.T) {
	timing := lan()
	var peers []Target
	for i := range timing.FastHeartbeatPeers {
		peers = append(peers, Target{Key: HeartbeatKey("self", fmt.Sprintf("pi%02d", i)), Name: fmt.Sprintf("pi%02d", i), Alive: true})
	}
	peers = append(peers, Target{Key: HeartbeatKey("self", "gone"), Name: "gone"}) // failed here on silence
	var r Plan
	sends, _, interval := r.Next(timing, "self", peers, 1, nil, time.Unix(1000, 0))
	if interval != timing.FastHeartbeatInterval || len(sends) != len(peers) {
		t.Fatalf("%d alive peers and one failed on silence: a round of %d heartbeats, next in %v; want fast rounds (%v) to all %d",
			timing.FastHeartbeatPeers, len(sends), interval, timing.FastHeartbeatInterval, len(peers))
	}
	for _, s := range sends {
		if s.Period != timing.FastHeartbeatInterval {
			t.Fatalf("%s told period %v, want %v", s.Name, s.Period, timing.FastHeartbeatInterval)
		}
	}
}

package cluster

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// watchProfile turns watched heartbeats on with test timings and no fast
// heartbeats, and makes memberlist's own verdict take 3 s, so a failure
// reported well before that is a silence verdict.
var watchProfile = withProfile(func(p *Profile) {
	// No fast heartbeats: six nodes are past the limit.
	p.FastHeartbeatPeers, p.FastHeartbeatInterval, p.SilenceTimeout = 0, 0, 0
	p.HeartbeatInterval = 100 * time.Millisecond
	p.WatchPeers, p.WatchInterval, p.WatchSilenceTimeout = 2, 20*time.Millisecond, 800*time.Millisecond
	p.SuspicionMult = 30
})

func ringOf(names ...string) []ringNode {
	var ring []ringNode
	for _, n := range names {
		ring = append(ring, ringNode{key: ringKey(n), name: n})
	}
	slices.SortFunc(ring, compareRing)
	return ring
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
func ringPeers(n int) (names []string, peers []heartbeatPeer) {
	for i := range n {
		name := fmt.Sprintf("pi-%d", i)
		names = append(names, name)
		if i > 0 {
			peers = append(peers, heartbeatPeer{key: heartbeatKey("pi-0", name), ring: ringKey(name), name: name, addr: "127.0.0.1", port: 7000 + i, alive: true})
		}
	}
	return names, peers
}

// The plan of a large cluster's rounds: watch heartbeats to the two
// successors every round, a slow round of the fanout each heartbeat
// interval, a dropped watcher told the slow period for a while, and
// reports to the watchers of an accused node.
func TestRoundPlanWatchesSuccessors(t *testing.T) {
	prof, err := ProfileByName("lan")
	if err != nil {
		t.Fatal(err)
	}
	names, peers := ringPeers(20)
	watchers := ringNames(successors(ringOf(names...), "pi-0", 2))
	period := func(sends []heartbeatSend) map[string]time.Duration {
		m := map[string]time.Duration{}
		for _, s := range sends {
			m[s.name] = s.period
		}
		return m
	}

	var r roundPlan
	gen := uint64(1)
	now := time.Now()
	sends, _, interval := r.next(prof, "pi-0", peers, gen, nil, now)
	got := period(sends)
	if interval != prof.WatchInterval || len(sends) != 2+prof.HeartbeatFanout {
		t.Fatalf("first round: interval %v, %d heartbeats; want %v and %d", interval, len(sends), prof.WatchInterval, 2+prof.HeartbeatFanout)
	}
	for _, w := range watchers {
		if got[w] != prof.WatchInterval {
			t.Errorf("watcher %s announced %v, want %v", w, got[w], prof.WatchInterval)
		}
	}
	if slow := slowPeriod(prof, 17); slow != 3*time.Second {
		t.Fatalf("slow period over 17 peers %v", slow)
	}
	for name, p := range got {
		if !slices.Contains(watchers, name) && p != 3*time.Second {
			t.Errorf("%s announced %v, want the slow 3s", name, p)
		}
	}

	// Within the heartbeat interval: the watchers only.
	now = now.Add(prof.WatchInterval)
	sends, _, _ = r.next(prof, "pi-0", peers, gen, nil, now)
	if got := slices.Sorted(func(yield func(string) bool) {
		for _, s := range sends {
			yield(s.name)
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
	peers = append(peers, heartbeatPeer{key: heartbeatKey("pi-0", joiner), ring: ringKey(joiner), name: joiner, alive: true})
	// The plan follows the peers only when the membership generation
	// moves: the heartbeat loop bumps it on every change.
	if sends, _, _ = r.next(prof, "pi-0", peers, gen, nil, now); period(sends)[joiner] != 0 {
		t.Fatalf("the joiner got a heartbeat before the generation moved: the ring is rebuilt every round")
	}
	gen++
	for i := range 3 {
		now = now.Add(prof.WatchInterval)
		sends, _, _ = r.next(prof, "pi-0", peers, gen, nil, now)
		got = period(sends)
		if got[joiner] != prof.WatchInterval || got[watchers[0]] != prof.WatchInterval {
			t.Fatalf("round %d: new watchers announced %v and %v", i, got[joiner], got[watchers[0]])
		}
		if p := got[watchers[1]]; p != slowPeriod(prof, 18) {
			t.Fatalf("round %d: dropped watcher announced %v, want the slow period", i, p)
		}
	}
	now = now.Add(prof.WatchSilenceTimeout / 2)
	sends, _, _ = r.next(prof, "pi-0", peers, gen, nil, now)
	if _, told := period(sends)[watchers[1]]; told && len(sends) == 2 {
		t.Fatalf("dropped watcher still told after half the timeout")
	}

	// A report of a silent node goes to its watchers but this one.
	accused := watchers[0]
	_, reportTo, _ := r.next(prof, "pi-0", peers, gen, []string{accused}, now.Add(prof.WatchInterval))
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

// watchersOf returns the nodes that name picks as its watchers in a
// cluster of nodes and, if not among them, name.
func watchersOf(nodes []*Cluster, name string) []*Cluster {
	names := []string{name}
	for _, n := range nodes {
		if n.conf.NodeName != name {
			names = append(names, n.conf.NodeName)
		}
	}
	var out []*Cluster
	for _, w := range successors(ringOf(names...), name, 2) {
		for _, n := range nodes {
			if n.conf.NodeName == w.name {
				out = append(out, n)
			}
		}
	}
	return out
}

// watching waits until o judges name on watch heartbeats.
func watching(t *testing.T, o *Cluster, name string) {
	t.Helper()
	testutil.WaitFor(t, waitTimeout, func() error {
		o.mu.Lock()
		defer o.mu.Unlock()
		if p := o.peers[name]; p == nil || p.period != o.conf.Profile.WatchInterval {
			return fmt.Errorf("%s does not get watch heartbeats from %s", o.conf.NodeName, name)
		}
		return nil
	})
}

// In a cluster past the fast heartbeat limit, a dead node's two watchers
// fail it on silence and every other peer takes their verdict, long before
// memberlist's suspicion runs out; memberlist's verdict adds no event.
func TestWatchersFailDeadNodeForEveryone(t *testing.T) {
	var nodes []*Cluster
	for i := range 6 {
		nodes = append(nodes, startNode(t, fmt.Sprintf("wd%d", i), fmt.Sprintf("127.0.1.%d", 171+i), watchProfile))
	}
	formCluster(t, nodes...)
	victim, observers := nodes[5], nodes[:5]
	watchers := watchersOf(nodes, victim.conf.NodeName)
	for _, w := range watchers {
		watching(t, w, victim.conf.NodeName)
	}
	var events []*collector
	for _, o := range observers {
		events = append(events, collect(o))
	}
	victim.Shutdown()
	testutil.WaitFor(t, waitTimeout, expect(observers, victim.conf.NodeName, status(StatusFailed)))
	own, taken := 0, 0
	for _, o := range observers {
		s := o.Stats()
		own += int(s.SilenceVerdicts)
		taken += int(s.WatcherVerdicts)
		if n := o.ml.Load().NumMembers(); n != 6 {
			t.Errorf("%s: memberlist counts %d members, want 6: the verdict came from memberlist", o.conf.NodeName, n)
		}
	}
	if own < 1 || own > 2 || own+taken != 5 {
		t.Errorf("%d verdicts of watchers and %d taken from them, want 1-2 and 5 in all", own, taken)
	}
	testutil.WaitFor(t, waitTimeout, func() error {
		for _, o := range observers {
			if n := o.ml.Load().NumMembers(); n != 5 {
				return fmt.Errorf("%s: memberlist still counts %d members", o.conf.NodeName, n)
			}
		}
		return nil
	})
	for i, o := range observers {
		if n := events[i].count(EventFail, victim.conf.NodeName); n != 1 {
			t.Errorf("%s: %d fail events, want 1", o.conf.NodeName, n)
		}
	}
}

// A node whose watchers cannot hear it is failed by them, but peers that
// still hear it keep it alive; it comes back at the watchers as soon as
// their link heals.
func TestWatcherVerdictKeptOutByPeersThatHearTheNode(t *testing.T) {
	var nodes []*Cluster
	for i := range 5 {
		nodes = append(nodes, startNode(t, fmt.Sprintf("wk%d", i), fmt.Sprintf("127.0.1.%d", 181+i), watchProfile))
	}
	// Watchers follow from names alone, so they are known before wk5 starts.
	watchers := watchersOf(nodes, "wk5")
	var muted []string
	var others []*Cluster
	for _, n := range nodes {
		if slices.Contains(watchers, n) {
			muted = append(muted, addr(n))
		} else {
			others = append(others, n)
		}
	}
	victim, gate := gatedNode(t, "wk5", "127.0.1.186", muted, false, watchProfile)
	formCluster(t, append(slices.Clone(nodes), victim)...)
	for _, w := range watchers {
		watching(t, w, "wk5")
	}
	events := collect(watchers[0])
	gate.mute.Store(true) // wk5 -> its watchers is cut

	testutil.WaitFor(t, waitTimeout, expect(watchers, "wk5", status(StatusFailed)))
	// The watchers told everyone as they failed wk5; a record change of
	// theirs arriving everywhere comes after.
	for _, w := range watchers {
		barrier(t, w, others)
	}
	for _, o := range others {
		if m, _ := o.Member("wk5"); m.Status != StatusAlive {
			t.Errorf("%s sees wk5 %s, want alive: it hears wk5", o.conf.NodeName, m.Status)
		}
		if n := o.Stats().WatcherVerdicts; n != 0 {
			t.Errorf("%s took %d verdicts, want 0", o.conf.NodeName, n)
		}
	}
	gate.mute.Store(false)
	testutil.WaitFor(t, waitTimeout, expect(watchers, "wk5", status(StatusAlive)))
	testutil.WaitFor(t, waitTimeout, events.reached(EventJoin, "wk5", 1))
	if f, j := events.count(EventFail, "wk5"), events.count(EventJoin, "wk5"); f != 1 || j != 1 {
		t.Errorf("watcher: %d fail and %d join events, want 1 and 1", f, j)
	}
}

// A node that its watchers cannot hear, and that nobody else has heard of
// lately, is failed everywhere on their verdict. It gets the verdict and
// heartbeats every peer, so everyone but the watchers takes it back at
// once, where its next slow round is a minute away; the watchers follow
// when their link heals. Without the refutation the others would hold it
// failed for that minute, or until memberlist's push-pull.
func TestWatcherVerdictRefutedByTheNode(t *testing.T) {
	slowRounds := func(c *Config) { c.Profile.HeartbeatInterval = time.Minute }
	var nodes []*Cluster
	for i := range 5 {
		nodes = append(nodes, startNode(t, fmt.Sprintf("wr%d", i), fmt.Sprintf("127.0.1.%d", 191+i), watchProfile, slowRounds))
	}
	watchers := watchersOf(nodes, "wr5")
	var muted []string
	var others []*Cluster
	for _, n := range nodes {
		if slices.Contains(watchers, n) {
			muted = append(muted, addr(n))
		} else {
			others = append(others, n)
		}
	}
	victim, gate := gatedNode(t, "wr5", "127.0.1.196", muted, false, watchProfile, slowRounds)
	formCluster(t, append(slices.Clone(nodes), victim)...)
	for _, w := range watchers {
		watching(t, w, "wr5")
	}
	// Until the others have not heard wr5 for half the timeout: they take
	// the verdict then.
	half := victim.conf.Profile.WatchSilenceTimeout / 2
	testutil.WaitFor(t, waitTimeout, func() error {
		for _, o := range others {
			o.mu.Lock()
			heard := time.Since(o.peers["wr5"].heardAt)
			o.mu.Unlock()
			if heard < half+100*time.Millisecond {
				return fmt.Errorf("%s heard wr5 %v ago", o.conf.NodeName, heard)
			}
		}
		return nil
	})
	var events []*collector
	for _, o := range others {
		events = append(events, collect(o))
	}
	gate.mute.Store(true) // wr5 -> its watchers is cut

	testutil.WaitFor(t, waitTimeout, expect(watchers, "wr5", status(StatusFailed)))
	testutil.WaitFor(t, waitTimeout, func() error {
		if victim.Stats().Refutations == 0 {
			return fmt.Errorf("wr5 has not refuted a verdict")
		}
		return nil
	})
	// A peer that got the refutation before a verdict keeps wr5 alive
	// throughout (it has just heard it); one that took a verdict first
	// fails wr5 and takes it back.
	testutil.WaitFor(t, waitTimeout, func() error {
		for i, o := range others {
			f, j := events[i].count(EventFail, "wr5"), events[i].count(EventJoin, "wr5")
			if s := o.Stats(); f != j || f != int(s.WatcherVerdicts) || s.SilenceVerdicts != 0 {
				return fmt.Errorf("%s: %d fail and %d join events for wr5, %d verdicts taken and %d own",
					o.conf.NodeName, f, j, s.WatcherVerdicts, s.SilenceVerdicts)
			}
			if m, _ := o.Member("wr5"); m.Status != StatusAlive {
				return fmt.Errorf("%s sees wr5 %s", o.conf.NodeName, m.Status)
			}
		}
		return nil
	})
	gate.mute.Store(false)
	testutil.WaitFor(t, waitTimeout, expect(watchers, "wr5", status(StatusAlive)))
}

// A watcher this node has come to hold failed is dropped and still told
// the slow period: were this node wrong about it, it would otherwise go on
// judging this node on watch heartbeats that no longer come.
func TestRoundPlanTellsAFailedWatcher(t *testing.T) {
	prof, err := ProfileByName("lan")
	if err != nil {
		t.Fatal(err)
	}
	names, peers := ringPeers(20)
	watchers := ringNames(successors(ringOf(names...), "pi-0", 2))
	var r roundPlan
	now := time.Now()
	r.next(prof, "pi-0", peers, 1, nil, now)

	peers = slices.DeleteFunc(peers, func(hp heartbeatPeer) bool { return hp.name == watchers[0] })
	for round := range 8 {
		now = now.Add(prof.WatchInterval)
		sends, _, _ := r.next(prof, "pi-0", peers, 2, nil, now)
		i := slices.IndexFunc(sends, func(s heartbeatSend) bool { return s.name == watchers[0] })
		if i < 0 {
			t.Fatalf("round %d: the failed watcher %s is not told", round, watchers[0])
		}
		if s := sends[i]; s.period != slowPeriod(prof, len(peers)-2) || s.port == 0 {
			t.Fatalf("round %d: the failed watcher is told %v at port %d, want the slow period %v at its address",
				round, s.period, s.port, slowPeriod(prof, len(peers)-2))
		}
	}
	now = now.Add(prof.WatchSilenceTimeout / 2)
	sends, _, _ := r.next(prof, "pi-0", peers, 2, nil, now)
	if slices.ContainsFunc(sends, func(s heartbeatSend) bool { return s.name == watchers[0] }) {
		t.Fatalf("the failed watcher is still told after half the timeout")
	}
}

// BenchmarkRoundPlan plans watch rounds at cluster sizes up to 500, side by
// side: "steady", the membership unchanged between rounds as it is almost
// always, and "changed", a new generation every round, which rebuilds the
// ring as every round did before rounds kept it.
func BenchmarkRoundPlan(b *testing.B) {
	prof, err := ProfileByName("lan")
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{100, 500} {
		_, peers := ringPeers(n)
		for _, mode := range []string{"steady", "changed"} {
			b.Run(fmt.Sprintf("N=%d/%s", n, mode), func(b *testing.B) {
				var r roundPlan
				now := time.Now()
				gen := uint64(1)
				b.ReportAllocs()
				for b.Loop() {
					now = now.Add(prof.WatchInterval)
					if mode == "changed" {
						gen++
					}
					if sends, _, _ := r.next(prof, "pi-0", peers, gen, nil, now); len(sends) < prof.WatchPeers {
						b.Fatalf("%d heartbeats in a round", len(sends))
					}
				}
			})
		}
	}
}

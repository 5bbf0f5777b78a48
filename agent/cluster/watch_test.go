package cluster

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/detector"
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
	for _, w := range detector.Watchers(names, name, 2) {
		for _, n := range nodes {
			if n.conf.NodeName == w {
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
		if p := o.peers[name]; p == nil || p.live.Period() != o.conf.Profile.WatchInterval {
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
	judges := map[string]bool{}
	for _, o := range observers {
		if o.Stats().SilenceVerdicts > 0 {
			judges[o.conf.NodeName] = true
		}
	}
	for i, o := range observers {
		if n := events[i].count(EventFail, victim.conf.NodeName); n != 1 {
			t.Errorf("%s: %d fail events, want 1", o.conf.NodeName, n)
		}
		// Each event names who reached the verdict: a watcher its own
		// silence verdict, every other peer the watcher it took it from.
		cause, by, err := events[i].failCause(victim.conf.NodeName)
		switch {
		case err != nil:
			t.Error(err)
		case judges[o.conf.NodeName] && cause != CauseSilence:
			t.Errorf("%s judged the victim itself but its event has cause %q", o.conf.NodeName, cause)
		case !judges[o.conf.NodeName] && (cause != CauseWatcher || !judges[by]):
			t.Errorf("%s took a watcher's verdict but its event has cause %q by %q, want %q by one of %v", o.conf.NodeName, cause, by, CauseWatcher, judges)
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
			heard := time.Since(o.peers["wr5"].live.HeardAt())
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

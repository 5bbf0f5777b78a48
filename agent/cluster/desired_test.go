package cluster

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/identity"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// Desired-state tests use 127.0.8.0/24 (port 0).

// desiredEverywhere waits until every node holds want for want.Service
// (same replicas, version and writer).
func desiredEverywhere(nodes []*Cluster, want Desired) func() error {
	return func() error {
		for _, n := range nodes {
			got, ok := n.DesiredFor(want.Service)
			if !ok {
				return fmt.Errorf("%s has no desired state for %s", n.conf.NodeName, want.Service)
			}
			if got.Replicas != want.Replicas || got.Version != want.Version || got.UpdatedBy != want.UpdatedBy {
				return fmt.Errorf("%s has %s=%d (v%d by %s), want %d (v%d by %s)", n.conf.NodeName, want.Service,
					got.Replicas, got.Version, got.UpdatedBy, want.Replicas, want.Version, want.UpdatedBy)
			}
		}
		return nil
	}
}

func TestDesiredSurvivesLossOfWriterAndReachesLateJoiner(t *testing.T) {
	a := startNode(t, "a", "127.0.8.1")
	b := startNode(t, "b", "127.0.8.2")
	c := startNode(t, "c", "127.0.8.3")
	join(t, b, a)
	join(t, c, a)
	testutil.WaitFor(t, waitTimeout, allAlive([]*Cluster{a, b, c}, 3))

	events := collect(c)
	set, err := a.SetDesired("nginx_webserver", 2)
	if err != nil {
		t.Fatal(err)
	}
	if set.Replicas != 2 || set.UpdatedBy != "a" || set.Version == 0 || set.UpdatedAt.IsZero() {
		t.Fatalf("SetDesired returned %+v", set)
	}
	testutil.WaitFor(t, waitTimeout, desiredEverywhere([]*Cluster{a, b, c}, set))
	testutil.WaitFor(t, waitTimeout, func() error {
		events.mu.Lock()
		defer events.mu.Unlock()
		for _, ev := range events.events {
			if ev.Type == EventDesired && ev.Desired.Service == "nginx_webserver" && ev.Desired.Version == set.Version {
				return nil
			}
		}
		return fmt.Errorf("c got no desired event among %d events", len(events.events))
	})

	// Kill the writer without leaving: the survivors keep the entry.
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, waitTimeout, expect([]*Cluster{b, c}, "a", status(StatusFailed)))
	testutil.WaitFor(t, waitTimeout, desiredEverywhere([]*Cluster{b, c}, set))

	// Let the broadcasts run out, so the late joiner can only learn the
	// entry from push-pull state.
	testutil.WaitFor(t, waitTimeout, func() error {
		for _, n := range []*Cluster{b, c} {
			if q := n.broadcasts.NumQueued(); q > 0 {
				return fmt.Errorf("%s still has %d broadcasts queued", n.conf.NodeName, q)
			}
		}
		return nil
	})
	d := startNode(t, "d", "127.0.8.4")
	join(t, d, b)
	testutil.WaitFor(t, waitTimeout, desiredEverywhere([]*Cluster{d}, set))

	// A change on a survivor reaches everyone, the late joiner included.
	added, err := d.AddDesired("nginx_webserver", 1)
	if err != nil {
		t.Fatal(err)
	}
	if added.Replicas != 3 || added.Version <= set.Version || added.UpdatedBy != "d" {
		t.Fatalf("AddDesired returned %+v after %+v", added, set)
	}
	testutil.WaitFor(t, waitTimeout, desiredEverywhere([]*Cluster{b, c, d}, added))
}

func TestConcurrentDesiredWritesConverge(t *testing.T) {
	nodes := []*Cluster{
		startNode(t, "a", "127.0.8.11"),
		startNode(t, "b", "127.0.8.12"),
		startNode(t, "c", "127.0.8.13"),
	}
	formCluster(t, nodes...)

	for round := range 5 {
		var wg sync.WaitGroup
		results := make([]Desired, 2)
		for i := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d, err := nodes[i].SetDesired("web", 10*round+i+1)
				if err != nil {
					t.Error(err)
				}
				results[i] = d
			}()
		}
		wg.Wait()
		winner := results[0]
		if results[1].newer(winner) {
			winner = results[1]
		}
		testutil.WaitFor(t, waitTimeout, desiredEverywhere(nodes, winner))
	}
}

func TestDesiredTieBreaksByWriter(t *testing.T) {
	c := startNode(t, "a", "127.0.8.21")
	at := time.Now().UTC()
	c.handleDesired(Desired{Service: "web", Replicas: 1, Version: 100, UpdatedBy: "m", UpdatedAt: at}, nil, false)
	c.handleDesired(Desired{Service: "web", Replicas: 2, Version: 100, UpdatedBy: "b", UpdatedAt: at}, nil, false)
	if d, _ := c.DesiredFor("web"); d.Replicas != 1 || d.UpdatedBy != "m" {
		t.Fatalf("same version: the greater writer name must win, got %+v", d)
	}
	c.handleDesired(Desired{Service: "web", Replicas: 3, Version: 100, UpdatedBy: "z", UpdatedAt: at}, nil, false)
	if d, _ := c.DesiredFor("web"); d.Replicas != 3 || d.UpdatedBy != "z" {
		t.Fatalf("same version: the greater writer name must win, got %+v", d)
	}
}

func TestStaleDesiredUpdatesAreIgnored(t *testing.T) {
	c := startNode(t, "a", "127.0.8.31")
	events := collect(c)
	tomb, err := c.SetDesired("web", 0)
	if err != nil {
		t.Fatal(err)
	}

	// An older positive count still circulating must not resurrect the
	// service, whether it arrives by gossip or by push-pull.
	zz, _ := identity.Generate()
	stale := Desired{Service: "web", Replicas: 4, Version: tomb.Version - 1, UpdatedBy: "zz", UpdatedAt: time.Now(), WriterKey: zz.Public()}
	msg := desiredMsg(t, zz, stale)
	c.handleMsg(msg)
	state, err := encodeJSON(msgState, pushPullState{Cluster: "rpi", Desired: [][]byte{msg[1:]}})
	if err != nil {
		t.Fatal(err)
	}
	c.handleRemoteState(state, false)
	if d, ok := c.DesiredFor("web"); !ok || d.Replicas != 0 || d.Version != tomb.Version {
		t.Fatalf("a stale update replaced the tombstone: %+v (ok %v)", d, ok)
	}

	// The same message with a newer version is applied: the check above
	// is not passing because messages are ignored altogether.
	fresh := stale
	fresh.Version = tomb.Version + 1
	c.handleMsg(desiredMsg(t, zz, fresh))
	if d, _ := c.DesiredFor("web"); d.Replicas != 4 || d.Version != fresh.Version {
		t.Fatalf("a newer update was not applied: %+v", d)
	}
	// A version further ahead of this node's clock than maxDesiredAhead
	// is refused: it would outrank later writes for that long.
	far := fresh
	far.Version = uint64(time.Now().Add(maxDesiredAhead + time.Minute).UnixNano())
	c.handleMsg(desiredMsg(t, zz, far))
	if d, _ := c.DesiredFor("web"); d.Version != fresh.Version {
		t.Fatalf("an entry %v ahead was applied: %+v", maxDesiredAhead+time.Minute, d)
	}
	if got := c.Stats().Rejected["clock_ahead"]; got != 1 {
		t.Fatalf("clock_ahead refusals: %d, want 1", got)
	}
	// And the next local write outranks what was learnt, even though the
	// learnt version could be ahead of this node's clock.
	ahead := fresh
	ahead.Version = uint64(time.Now().Add(maxDesiredAhead / 2).UnixNano())
	c.handleMsg(desiredMsg(t, zz, ahead))
	next, err := c.AddDesired("web", -1)
	if err != nil {
		t.Fatal(err)
	}
	if next.Version <= ahead.Version || next.Replicas != 3 {
		t.Fatalf("local write after a version from the future: %+v, want version > %d and 3 replicas", next, ahead.Version)
	}

	// Events arrive through a channel: wait for all four (tombstone, fresh,
	// ahead, local write), then check no stale one slipped in.
	var versions []uint64
	testutil.WaitFor(t, waitTimeout, func() error {
		events.mu.Lock()
		defer events.mu.Unlock()
		versions = versions[:0]
		for _, ev := range events.events {
			if ev.Type == EventDesired {
				versions = append(versions, ev.Desired.Version)
			}
		}
		if len(versions) < 4 {
			return fmt.Errorf("%d desired events, want 4", len(versions))
		}
		return nil
	})
	want := []uint64{tomb.Version, fresh.Version, ahead.Version, next.Version}
	if fmt.Sprint(versions) != fmt.Sprint(want) {
		t.Fatalf("desired event versions %v, want %v (stale updates must not emit events)", versions, want)
	}

	if got := c.Stats().MalformedMessages; got != 0 {
		t.Fatalf("%d messages counted malformed", got)
	}
	c.handleMsg(desiredMsg(t, zz, Desired{Service: "web", Replicas: -1, Version: 1, UpdatedBy: "x"}))
	if got := c.Stats().MalformedMessages; got != 1 {
		t.Fatalf("negative replicas: %d malformed, want 1", got)
	}
}

func TestDesiredChangesAreChecked(t *testing.T) {
	p, _ := ProfileByName("test")
	c, err := Create(&Config{NodeName: "a", ClusterName: "rpi", BindAddr: "127.0.8.41", Profile: p})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Shutdown()
	// Changes before Start are kept and gossiped once started.
	if _, err := c.SetDesired("web", 2); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		op      func() (Desired, error)
		wantErr string
	}{
		{"empty name", func() (Desired, error) { return c.SetDesired("", 1) }, "service name"},
		{"long name", func() (Desired, error) { return c.SetDesired(strings.Repeat("x", 64), 1) }, "service name"},
		{"negative", func() (Desired, error) { return c.SetDesired("web", -1) }, "want 0 to"},
		{"too many", func() (Desired, error) { return c.SetDesired("web", MaxReplicas+1) }, "want 0 to"},
		{"huge delta", func() (Desired, error) { return c.AddDesired("web", int(^uint(0)>>1)) }, "want 0 to"},
	} {
		if _, err := tc.op(); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.wantErr)
		}
	}
	if d, _ := c.DesiredFor("web"); d.Replicas != 2 {
		t.Fatalf("a refused change altered the entry: %+v", d)
	}

	d, err := c.AddDesired("web", -5)
	if err != nil || d.Replicas != 0 {
		t.Fatalf("lowering below 0: %+v, %v; want 0 replicas", d, err)
	}
	if d, ok := c.DesiredFor("web"); !ok || d.Replicas != 0 {
		t.Fatalf("0 replicas must keep a tombstone, got %+v, %v", d, ok)
	}
	d, err = c.AddDesired("new", 3)
	if err != nil || d.Replicas != 3 {
		t.Fatalf("adding to an unknown service: %+v, %v", d, err)
	}
	all := c.Desired()
	if len(all) != 2 || all[0].Service != "new" || all[1].Service != "web" {
		t.Fatalf("Desired() = %+v, want new and web, sorted", all)
	}
	if _, ok := c.DesiredFor("never"); ok {
		t.Fatal("DesiredFor of a service never set reported ok")
	}
	for i := len(all); i < maxDesired; i++ {
		if _, err := c.SetDesired(fmt.Sprintf("svc-%d", i), 1); err != nil {
			t.Fatalf("service %d of %d: %v", i, maxDesired, err)
		}
	}
	if _, err := c.SetDesired("one-too-many", 1); !errors.Is(err, ErrTooManyServices) {
		t.Fatalf("past %d services: got %v, want ErrTooManyServices", maxDesired, err)
	}
	if _, err := c.SetDesired("web", 1); err != nil {
		t.Fatalf("a full table must still accept changes to known services: %v", err)
	}
}

package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// joinTimeout is the TCP timeout of the churn test's nodes. A join is a
// push-pull of the seed's whole state, which a machine loaded by other
// tests stretched past the test profile's 500 ms on either side.
const joinTimeout = 5 * time.Second

// startMember starts a short-lived node that logs nothing and joins it to
// one of seeds; it is shut down when the test ends. Unlike startNode it
// may run in any goroutine. Its own probes, gossip and heartbeats run at
// a tenth of the test profile's pace: a hundred members at that pace
// saturate two cores, and it is the observers' timings that are under
// test. A join that fails is tried twice more, with other seeds.
func startMember(t *testing.T, name, ip string, seeds []*Cluster) (*Cluster, error) {
	p, _ := ProfileByName("test")
	p.ProbeInterval, p.ProbeTimeout, p.GossipInterval = time.Second, 500*time.Millisecond, 200*time.Millisecond
	p.HeartbeatInterval, p.Phi.FirstHeartbeatEstimate = 500*time.Millisecond, 500*time.Millisecond
	p.PushPullInterval, p.TCPTimeout = 30*time.Second, joinTimeout
	c, err := Create(&Config{NodeName: name, ClusterName: "rpi", BindAddr: ip, HTTPPort: 8080, Profile: p,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Shutdown() })
	for attempt := 0; ; attempt++ {
		seed := seeds[rand.IntN(len(seeds))]
		_, err := c.Join([]string{addr(seed)})
		if err == nil {
			return c, nil
		}
		if attempt == 2 {
			return nil, fmt.Errorf("%s joins %s: %w", name, seed.conf.NodeName, err)
		}
	}
}

// churnTracker follows what the observers report about each member.
type churnTracker struct {
	mu sync.Mutex
	// listed, gone and reaped hold a bit per observer: reported alive;
	// reported failed, left or reaped; reaped.
	listed, gone, reaped map[string]uint8
	all                  uint8
}

func trackChurn(obs []*Cluster) *churnTracker {
	tr := &churnTracker{listed: map[string]uint8{}, gone: map[string]uint8{}, reaped: map[string]uint8{}, all: 1<<len(obs) - 1}
	for i, o := range obs {
		ch, _ := o.Subscribe(1 << 14)
		go func() {
			for ev := range ch {
				bit, name := uint8(1)<<i, ev.Member.Name
				tr.mu.Lock()
				switch ev.Type {
				case EventJoin:
					tr.listed[name] |= bit
				case EventFail, EventLeave:
					tr.gone[name] |= bit
				case EventReap:
					tr.gone[name] |= bit
					tr.reaped[name] |= bit
				}
				tr.mu.Unlock()
			}
		}()
	}
	return tr
}

// waitAll waits until every observer has set name in m.
func (tr *churnTracker) waitAll(m map[string]uint8, name, what string, timeout time.Duration) error {
	return testutil.Poll(timeout, 10*time.Millisecond, func() error {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		if m[name] != tr.all {
			return fmt.Errorf("not every observer reported %s %s (%03b) after %v", name, what, m[name], timeout)
		}
		return nil
	})
}

// viewOnly reports what o lists or keeps beyond the live nodes want.
func viewOnly(o *Cluster, want []string) error {
	var names []string
	count := map[string]int{}
	for _, m := range o.Members() {
		names = append(names, m.Name)
		count[m.Status]++
	}
	if !slices.Equal(names, want) {
		return fmt.Errorf("%s lists %d members %v, want %v", o.conf.NodeName, len(names), count, want)
	}
	o.mu.Lock()
	peers, unknown, introduced := len(o.peers), o.unknown, len(o.introduced)
	o.mu.Unlock()
	if peers != len(want)-1 || unknown != 0 || introduced != 0 {
		return fmt.Errorf("%s keeps %d peers (%d never reported) and %d introductions, want %d, 0 and 0",
			o.conf.NodeName, peers, unknown, introduced, len(want)-1)
	}
	if n := o.ml.Load().NumMembers(); n != len(want) {
		return fmt.Errorf("%s: memberlist still holds %d nodes, want %d", o.conf.NodeName, n, len(want))
	}
	return nil
}

// 2,000 members come and go, one in five killed and the others leaving,
// through three observers that reap failed nodes after 2 s and left ones
// after 1 s. They come 50 at a time: each batch joins (one of the
// observers each), is listed by all three and goes. A batch starts only
// once at most 25 killed members are still held alive somewhere: with more
// dead than living, memberlist's probes (one node per probe interval per
// observer, slowed up to eightfold by Lifeguard while the indirect probes
// it sends through the dead go unanswered) fall minutes behind, and that
// is detection, not reaping. Once the last batch has gone, the observers'
// views return to the three of them and every map kept per peer shrinks
// back.
func TestChurnIsReaped(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 members: not in -short")
	}
	total, batch := 2000, 50
	if raceEnabled {
		// The race detector makes each member about ten times dearer: on
		// two loaded cores 200 members took four minutes and timed joins
		// out. The reap paths race with gossip in the other reap tests.
		total, batch = 100, 25
	}
	const joining, killEvery, maxGhosts = 10, 5, 25
	var obs []*Cluster
	for i := range 3 {
		o := startNode(t, fmt.Sprintf("o%d", i+1), fmt.Sprintf("127.0.30.%d", i+1), withReap(2*time.Second, time.Second),
			withProfile(func(p *Profile) { p.TCPTimeout = joinTimeout }))
		obs = append(obs, o)
	}
	formCluster(t, obs...)
	tr := trackChurn(obs)

	start := time.Now()
	var killed []string
	for b := range total / batch {
		testutil.WaitFor(t, time.Minute, func() error {
			tr.mu.Lock()
			defer tr.mu.Unlock()
			ghosts := 0
			for _, name := range killed {
				if tr.gone[name] != tr.all {
					ghosts++
				}
			}
			if ghosts > maxGhosts {
				return fmt.Errorf("%d killed members still held alive somewhere", ghosts)
			}
			return nil
		})
		members := make([]*Cluster, batch)
		errs := make([]error, batch)
		var wg sync.WaitGroup
		sem := make(chan struct{}, joining)
		for i := range batch {
			id := b*batch + i
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				name := fmt.Sprintf("m%d", id)
				members[i], errs[i] = startMember(t, name, fmt.Sprintf("127.0.%d.%d", 31+id/250%4, 1+id%250), obs)
				if errs[i] == nil {
					errs[i] = tr.waitAll(tr.listed, name, "alive", 30*time.Second)
				}
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		for i, m := range members {
			if i%killEvery == 0 {
				killed = append(killed, m.conf.NodeName)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if i%killEvery != 0 {
					m.Leave(time.Second)
				}
				m.Shutdown()
			}()
		}
		wg.Wait()
		if b%10 == 9 {
			t.Logf("%d members came and went after %v", (b+1)*batch, time.Since(start).Round(time.Millisecond))
		}
	}

	want := []string{"o1", "o2", "o3"}
	testutil.WaitFor(t, time.Minute, func() error {
		for _, o := range obs {
			if err := viewOnly(o, want); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("views back to the live members after %v", time.Since(start).Round(time.Millisecond))
	// Reap events are published just after the view changes.
	testutil.WaitFor(t, waitTimeout, func() error {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		for id := range total {
			if name := fmt.Sprintf("m%d", id); tr.reaped[name] != tr.all {
				return fmt.Errorf("%s was not reaped by every observer (%03b)", name, tr.reaped[name])
			}
		}
		return nil
	})
}

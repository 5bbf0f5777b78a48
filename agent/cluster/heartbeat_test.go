package cluster

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// With a fanout below the number of peers every node still hears from
// every other, at the period the sender announces, and a dead node's phi
// still rises everywhere.
func TestHeartbeatFanoutSmallerThanCluster(t *testing.T) {
	fanout1 := func(c *Config) {
		c.Profile.HeartbeatFanout = 1
		// Slow rounds only: no fast or watched heartbeats.
		c.Profile.FastHeartbeatPeers, c.Profile.FastHeartbeatInterval, c.Profile.SilenceTimeout = 0, 0, 0
		c.Profile.WatchPeers, c.Profile.WatchInterval, c.Profile.WatchSilenceTimeout = 0, 0, 0
	}
	var nodes []*Cluster
	for i := 1; i <= 5; i++ {
		nodes = append(nodes, startNode(t, fmt.Sprintf("f%d", i), fmt.Sprintf("127.0.1.%d", 80+i), fanout1))
	}
	formCluster(t, nodes...)
	want := 4 * nodes[0].conf.Profile.HeartbeatInterval // 4 peers, one per round
	testutil.WaitFor(t, waitTimeout, func() error {
		for _, o := range nodes {
			o.mu.Lock()
			for name, p := range o.peers {
				if p.live.LastSeq() == 0 || p.live.Period() != want {
					err := fmt.Errorf("%s: %s heartbeat seq %d period %v, want one at %v", o.conf.NodeName, name, p.live.LastSeq(), p.live.Period(), want)
					o.mu.Unlock()
					return err
				}
			}
			o.mu.Unlock()
		}
		return nil
	})
	for _, o := range nodes {
		for _, m := range o.Members() {
			if !m.Self && m.Phi >= m.PhiThreshold {
				t.Errorf("%s sees live %s with phi %.2f", o.conf.NodeName, m.Name, m.Phi)
			}
		}
	}

	if err := nodes[4].Shutdown(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, waitTimeout, expect(nodes[:4], "f5", func(m Member) error {
		if m.Status != StatusFailed || m.Phi < m.PhiThreshold {
			return fmt.Errorf("status %s phi %.2f, want failed over %.0f", m.Status, m.Phi, m.PhiThreshold)
		}
		return nil
	}))
	// The survivors now have 3 peers each and announce it.
	want = 3 * nodes[0].conf.Profile.HeartbeatInterval
	testutil.WaitFor(t, waitTimeout, func() error {
		for _, o := range nodes[:4] {
			o.mu.Lock()
			for name, p := range o.peers {
				if p.state().IsAlive() && p.live.Period() != want {
					err := fmt.Errorf("%s: %s period %v, want %v", o.conf.NodeName, name, p.live.Period(), want)
					o.mu.Unlock()
					return err
				}
			}
			o.mu.Unlock()
		}
		return nil
	})
}

// A heartbeat from a node memberlist does not list (the gossip announcing
// it was missed) makes the receiver sync with it at once.
func TestHeartbeatFromStrangerIntroducesIt(t *testing.T) {
	a := startNode(t, "s1", "127.0.1.91")
	x := startNode(t, "s2", "127.0.1.92")
	if _, ok := a.Member("s2"); ok {
		t.Fatal("s1 knows s2 before anything was sent")
	}
	hb := encodeHeartbeat("s2", addr(x), 7, time.Second)
	a.handleMsg(hb)
	a.handleMsg(hb) // a second one within introduceEvery queues nothing more
	testutil.WaitFor(t, waitTimeout, allAlive([]*Cluster{a, x}, 2))
	if n := a.Stats().Introductions; n != 1 {
		t.Errorf("s1 synced with s2 %d times, want once", n)
	}
	// Once listed alive, its heartbeats are just heartbeats.
	a.handleMsg(encodeHeartbeat("s2", addr(x), 1<<62, time.Second))
	if n := a.Stats().Introductions; n != 1 {
		t.Errorf("after a heartbeat from a listed node: %d syncs, want 1", n)
	}
}

// Every field of Record but Monitoring and Version must make
// onlyMonitoringDiffers false, or a change to it would not be relayed.
func TestOnlyMonitoringDiffersCoversEveryField(t *testing.T) {
	base := Record{Name: "pi1", Addr: "10.0.0.1", GossipPort: 7946, HTTPPort: 8080, Services: []string{"web"},
		SSHHostKeys: []string{"ssh-ed25519 AAAA"}, AgentVersion: "1", Arch: "arm64", Model: "Pi 4", Version: 1}
	other := base.Clone()
	other.Version = 2
	other.Monitoring.Load1 = 3
	if !onlyMonitoringDiffers(base, other) {
		t.Fatal("a monitoring-only change is reported as more")
	}
	rt := reflect.TypeOf(base)
	for i := range rt.NumField() {
		f := rt.Field(i)
		if f.Name == "Monitoring" || f.Name == "Version" {
			continue
		}
		changed := base.Clone()
		v := reflect.ValueOf(&changed).Elem().Field(i)
		switch v.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Int:
			v.SetInt(v.Int() + 1)
		case reflect.Slice:
			if v.Type().Elem().Kind() == reflect.Uint8 {
				v.Set(reflect.Append(v, reflect.ValueOf(byte('x'))))
			} else {
				v.Set(reflect.Append(v, reflect.ValueOf("x")))
			}
		default:
			t.Fatalf("field %s of kind %s: teach this test (and onlyMonitoringDiffers) about it", f.Name, v.Kind())
		}
		if onlyMonitoringDiffers(base, changed) {
			t.Errorf("a change of %s is taken for a monitoring-only change, so it would not be relayed", f.Name)
		}
	}
}

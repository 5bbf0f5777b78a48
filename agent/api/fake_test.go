package api

import (
	"context"
	"errors"
	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// fakeBackend is an in-memory Backend. It records the writes it gets so
// tests can prove that rejected requests never reach it.
type fakeBackend struct {
	mu       sync.Mutex
	self     string
	nodes    []apitypes.Node
	stats    GossipStats
	subs     map[int]chan apitypes.Event
	nextSub  int
	writes   atomic.Int64
	writeErr error
	desired  fakeDesired
	keys     fakeKeys
}

func newFakeBackend(self string, nodes ...apitypes.Node) *fakeBackend {
	return &fakeBackend{self: self, nodes: nodes, subs: map[int]chan apitypes.Event{}}
}

func (f *fakeBackend) Self() apitypes.Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.nodes {
		if n.Name == f.self {
			return n
		}
	}
	return apitypes.Node{Name: f.self}
}

func (f *fakeBackend) Nodes() []apitypes.Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Clone(f.nodes)
	slices.SortFunc(out, func(a, b apitypes.Node) int { return cmpString(a.Name, b.Name) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (f *fakeBackend) change(service string, add bool) (bool, error) {
	f.writes.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.writeErr != nil {
		return false, f.writeErr
	}
	for i := range f.nodes {
		n := &f.nodes[i]
		if n.Name != f.self {
			continue
		}
		has := slices.Contains(n.Services, service)
		switch {
		case add && !has:
			n.Services = append(slices.Clone(n.Services), service)
			slices.Sort(n.Services)
			return true, nil
		case !add && has:
			n.Services = slices.DeleteFunc(slices.Clone(n.Services), func(s string) bool { return s == service })
			return true, nil
		}
		return false, nil
	}
	return false, errors.New("self not in node list")
}

func (f *fakeBackend) AddService(_ context.Context, service string) (bool, error) {
	return f.change(service, true)
}

func (f *fakeBackend) RemoveService(_ context.Context, service string) (bool, error) {
	return f.change(service, false)
}

func (f *fakeBackend) Subscribe() (<-chan apitypes.Event, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.nextSub
	f.nextSub++
	ch := make(chan apitypes.Event, 16)
	f.subs[id] = ch
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			delete(f.subs, id)
			close(ch)
		})
	}
}

// subscribers returns how many subscriptions are open.
func (f *fakeBackend) subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// publish sends ev to every subscriber, dropping it for full ones as the
// real backend does.
func (f *fakeBackend) publish(ev apitypes.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ch := range f.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

func (f *fakeBackend) GossipStats() GossipStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

func ptr[T any](v T) *T { return &v }

// testNodes is a 4-node cluster seen by pi-1: one suspect, one failed.
func testNodes() []apitypes.Node {
	sampled := time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)
	return []apitypes.Node{
		{
			Name: "pi-1", Address: "10.0.0.11", GossipPort: 7946, HTTPPort: 8080, Status: apitypes.StatusAlive,
			Services: []string{"nginx_webserver"}, PhiThreshold: 8, Version: "v1.0.0", Arch: "arm64",
			Model: "Raspberry Pi 4 Model B Rev 1.4", RecordVersion: 7,
			Monitoring: apitypes.Monitoring{CPUs: 4, CPUPercent: 12.5, MemTotal: 4 << 30, MemUsed: 1 << 30,
				Load1: 0.52, Load5: 0.40, Load15: 0.31, TempC: ptr(48.3), DiskUsedPercent: 37.5, UptimeS: 3600, SampledAt: sampled},
		},
		{
			Name: "pi-2", Address: "10.0.0.12", GossipPort: 7946, HTTPPort: 8080, Status: apitypes.StatusAlive,
			Services: []string{"nginx_webserver", "redis"}, Phi: 0.84, PhiThreshold: 8, Version: "v1.0.0", Arch: "arm64",
			Model: "Raspberry Pi 5 Model B Rev 1.0", RecordVersion: 3,
			Monitoring: apitypes.Monitoring{CPUs: 4, CPUPercent: 55, MemTotal: 8 << 30, MemUsed: 6 << 30,
				Load1: 2.1, Load5: 1.7, Load15: 1.2, TempC: ptr(61.0), DiskUsedPercent: 71, UptimeS: 7200, SampledAt: sampled},
		},
		{
			Name: "pi-3", Address: "10.0.0.13", GossipPort: 7947, HTTPPort: 8080, Status: apitypes.StatusSuspect,
			Phi: 6.1, PhiThreshold: 8, Version: "v1.0.0", Arch: "arm",
			Monitoring: apitypes.Monitoring{CPUs: 1, CPUPercent: 97, MemTotal: 512 << 20, MemUsed: 400 << 20,
				Load1: 3.9, Load5: 3.5, Load15: 2.8, DiskUsedPercent: 90, SampledAt: sampled},
		},
		{
			Name: "pi-4", Address: "10.0.0.14", GossipPort: 7946, HTTPPort: 8080, Status: apitypes.StatusFailed,
			Services: []string{"redis"}, Phi: 14.2, PhiThreshold: 8, Version: "v0.9.0", Arch: "arm64",
			Monitoring: apitypes.Monitoring{CPUs: 4, CPUPercent: 3, MemTotal: 2 << 30, MemUsed: 1 << 29, SampledAt: sampled},
		},
	}
}

// update changes one node in place.
func (f *fakeBackend) update(name string, fn func(*apitypes.Node)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.nodes {
		if f.nodes[i].Name == name {
			fn(&f.nodes[i])
		}
	}
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
	"github.com/rpi-cluster/rpi-cluster/inventory"
)

// fakeNet is a host's interfaces whose address the test changes: eth0
// with one address, or none while the network is down.
type fakeNet struct {
	mu    sync.Mutex
	addr  net.IP
	reads int
}

func (f *fakeNet) set(ip string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addr = net.ParseIP(ip)
}

func (f *fakeNet) list() ([]HostInterface, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	lo := HostInterface{Interface: net.Interface{Index: 1, Name: "lo", Flags: net.FlagUp | net.FlagLoopback}, Addrs: []net.IP{net.ParseIP("127.0.0.1")}}
	eth := HostInterface{Interface: net.Interface{Index: 2, Name: "eth0", Flags: net.FlagUp | net.FlagRunning | net.FlagMulticast,
		HardwareAddr: net.HardwareAddr{0xb8, 0x27, 0xeb, 1, 2, 3}}, Default: true}
	if f.addr != nil {
		eth.Addrs = []net.IP{f.addr}
	}
	return []HostInterface{lo, eth}, nil
}

func (f *fakeNet) readCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

// followingConf is an agent config that leaves the address to the agent:
// gossip on every interface, no advertise address.
func followingConf(t *testing.T, name string) *Config {
	conf := DefaultConfig()
	conf.Name = name
	conf.Bind = "0.0.0.0:0"
	conf.HTTP = "127.0.0.1:0"
	conf.MDNS = false
	conf.DataDir = filepath.Join(t.TempDir(), name)
	conf.SSHHostKeys = ""
	conf.MonitorInterval = 500 * time.Millisecond
	return conf
}

// An agent started before the network has an address waits for one,
// saying so once, and starts at the address that appears.
func TestAgentWaitsForNetwork(t *testing.T) {
	fn := &fakeNet{}
	conf := followingConf(t, "late")
	var logs testutil.SyncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	opts := []Option{WithInterfaces(fn.list), WithAddressPoll(10 * time.Millisecond)}
	notified := testutil.NotifySocket(t, filepath.Join(t.TempDir(), "notify"))

	if _, err := Create(conf, logger, opts...); err == nil || !strings.Contains(err.Error(), "no network interface that is up has an IPv4 address") {
		t.Fatalf("Create without an address: %v, want an error saying what is missing", err)
	}
	done := make(chan error, 1)
	go func() { done <- WaitForNetwork(context.Background(), conf, logger, opts...) }()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := fn.readCount(); n < 6 {
			return fmt.Errorf("interfaces read %d times, want several", n)
		}
		return nil
	})
	select {
	case err := <-done:
		t.Fatalf("returned before the network was up: %v", err)
	default:
	}
	// systemd is told why the start takes long, so it does not time it
	// out and restart the agent in a loop.
	if msg := notified(); !strings.Contains(msg, "EXTEND_TIMEOUT_USEC=") || !strings.Contains(msg, "STATUS=waiting for the network") {
		t.Fatalf("told systemd %q, want a status and a start timeout extension", msg)
	}
	fn.set("127.0.2.81")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("still waiting 5 s after the address appeared")
	}
	if n := strings.Count(logs.String(), "waiting for the network"); n != 1 {
		t.Fatalf("said it waits %d times, want once:\n%s", n, logs.String())
	}

	profile, _ := cluster.ProfileByName("test")
	a, err := Create(conf, logger, append(opts, WithProfile(profile))...)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Shutdown() })
	if ip, _ := a.Cluster().LocalAddr(); ip != "127.0.2.81" {
		t.Fatalf("advertises %s, want the address that appeared, 127.0.2.81", ip)
	}
}

// Stopping an agent that waits for the network ends the wait.
func TestWaitForNetworkHonoursShutdown(t *testing.T) {
	fn := &fakeNet{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- WaitForNetwork(ctx, followingConf(t, "late"), slog.New(slog.NewTextHandler(tlogWriter{t}, nil)),
			WithInterfaces(fn.list), WithAddressPoll(10*time.Millisecond))
	}()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if fn.readCount() == 0 {
			return errors.New("not looking yet")
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("still waiting 5 s after being stopped")
	}
}

// An agent whose address changes (a DHCP renewal to another lease) moves:
// every peer lists it at the new address within a few seconds and never
// reports it failed, and the inventory gives the new ansible_host.
func TestAgentFollowsItsAddress(t *testing.T) {
	fn := &fakeNet{}
	fn.set("127.0.2.82")
	profile, _ := cluster.ProfileByName("test")
	m, err := Create(followingConf(t, "mover"), slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
		WithProfile(profile), WithInterfaces(fn.list), WithAddressPoll(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	p1 := startAgent(t, 83, joinTo(m))
	p2 := startAgent(t, 84, joinTo(m))
	all := []*Agent{m, p1, p2}
	waitAlive(t, all, 3)

	var mu sync.Mutex
	var bad []string
	for _, p := range []*Agent{p1, p2} {
		events, cancel := p.Cluster().Subscribe(64)
		t.Cleanup(cancel)
		go func() {
			for ev := range events {
				if ev.Member.Name == "mover" && (ev.Type == cluster.EventFail || ev.Type == cluster.EventLeave) {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%s: %s", p.Name(), ev.Type))
					mu.Unlock()
				}
			}
		}()
	}

	moved := time.Now()
	fn.set("127.0.2.85")
	c, err := client.New("http://"+p1.HTTPAddr(), "")
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		for _, p := range []*Agent{p1, p2} {
			mm, ok := p.Cluster().Member("mover")
			if !ok || mm.Addr != "127.0.2.85" || mm.Status != cluster.StatusAlive {
				return fmt.Errorf("%s sees mover at %s (%s), want alive at 127.0.2.85", p.Name(), mm.Addr, mm.Status)
			}
		}
		nodes, err := c.Nodes(context.Background())
		if err != nil {
			return err
		}
		inv := inventory.Build(nodes, inventory.Options{})
		if h := inv.Vars["mover"].AnsibleHost; h != "127.0.2.85" {
			return fmt.Errorf("inventory from %s: ansible_host %q, want 127.0.2.85", p1.Name(), h)
		}
		return nil
	})
	t.Logf("peers and inventory show the new address %v after it changed", time.Since(moved).Round(time.Millisecond))
	waitAlive(t, all, 3)
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("peers reported the moving node gone: %v", bad)
	}
}

func TestChooseAddress(t *testing.T) {
	up := net.FlagUp | net.FlagRunning | net.FlagMulticast
	iface := func(i int, name string, flags net.Flags, def bool, addrs ...string) HostInterface {
		hi := HostInterface{Interface: net.Interface{Index: i, Name: name, Flags: flags}, Default: def}
		for _, a := range addrs {
			hi.Addrs = append(hi.Addrs, net.ParseIP(a))
		}
		return hi
	}
	lo := iface(1, "lo", up|net.FlagLoopback, false, "127.0.0.1", "::1")
	for _, tc := range []struct {
		name   string
		ifaces []HostInterface
		want   string
	}{
		{"nothing up yet", []HostInterface{lo, iface(2, "eth0", up, false)}, "<nil>"},
		{"link-local only", []HostInterface{lo, iface(2, "eth0", up, false, "169.254.3.4", "fe80::1")}, "<nil>"},
		{"no carrier", []HostInterface{lo, iface(2, "eth0", net.FlagUp, true, "192.168.1.20")}, "<nil>"},
		{"dhcp lease", []HostInterface{lo, iface(2, "eth0", up, true, "192.168.1.20")}, "192.168.1.20"},
		{"default route before a bridge", []HostInterface{lo, iface(2, "docker0", up, false, "172.17.0.1"), iface(3, "wlan0", up, true, "10.0.0.7")}, "10.0.0.7"},
		{"private before public", []HostInterface{lo, iface(2, "eth0", up, true, "203.0.113.5", "192.168.1.20")}, "192.168.1.20"},
		{"public when alone", []HostInterface{lo, iface(2, "eth0", up, true, "203.0.113.5")}, "203.0.113.5"},
	} {
		if got := ChooseAddress(tc.ifaces).String(); got != tc.want {
			t.Errorf("%s: ChooseAddress = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestDefaultRouteInterface(t *testing.T) {
	routes := filepath.Join(t.TempDir(), "route")
	table := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n" +
		"wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
	if err := os.WriteFile(routes, []byte(table), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := defaultRouteInterface(routes); got != "wlan0" {
		t.Fatalf("default route via %q, want wlan0", got)
	}
	if got := defaultRouteInterface(filepath.Join(t.TempDir(), "missing")); got != "" {
		t.Fatalf("no route table: %q, want empty", got)
	}
}

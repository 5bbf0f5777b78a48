package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// Network is the emulated cards' LAN: a Linux bridge with the host at the
// first address of a /24, a tap per machine, and dnsmasq as the LAN's DHCP
// server (and nothing else: no DNS, no forwarding). It must be made in a
// network namespace of its own (see Isolated), so no packet of it can leave
// the machine.
type Network struct {
	Bridge string
	Host   netip.Addr // the bridge's address: the workstation, and the DHCP server
	prefix netip.Prefix
	dir    string

	mu      sync.Mutex
	hosts   map[string]netip.Addr // MAC → reserved address
	taps    []string
	dnsmasq *exec.Cmd
	log     *testutil.SyncBuffer
	done    chan struct{}
}

// Isolated checks that this process runs in a network namespace with no
// interface but loopback: the emulated LAN is made there so that nothing
// on it (DHCP, mDNS, gossip) can reach a real network. Run the tests under
// `unshare --net` (make test-emulated does).
func Isolated() error {
	// Asked over netlink: /sys/class/net shows the namespace that mounted
	// /sys, not this one.
	ifaces, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	var others []string
	for _, i := range ifaces {
		if i.Name != "lo" {
			others = append(others, i.Name)
		}
	}
	if len(others) > 0 {
		return fmt.Errorf("this network namespace has interfaces besides lo (%s): the emulated LAN is only made in an isolated one; run under `unshare --net` (make test-emulated)", strings.Join(others, ", "))
	}
	return nil
}

// NewNetwork brings lo up, creates bridge on prefix (a /24; the host takes
// .1) and starts dnsmasq serving leases from .100 to .199 on it only.
// Logs and leases go to dir.
func NewNetwork(ctx context.Context, dir, bridge string, prefix netip.Prefix) (*Network, error) {
	if prefix.Bits() != 24 || !prefix.Addr().Is4() {
		return nil, fmt.Errorf("network: %s: want an IPv4 /24", prefix)
	}
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		return nil, errors.New("network: dnsmasq not found: apt-get install dnsmasq-base")
	}
	prefix = prefix.Masked()
	n := &Network{Bridge: bridge, Host: prefix.Addr().Next(), prefix: prefix, dir: dir, hosts: map[string]netip.Addr{}, log: &testutil.SyncBuffer{}, done: make(chan struct{})}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", bridge, "type", "bridge", "mcast_snooping", "0"},
		{"addr", "add", n.Host.String() + "/24", "dev", bridge},
		{"link", "set", bridge, "up"},
	} {
		if err := ip(ctx, args...); err != nil {
			n.Close()
			return nil, err
		}
	}
	if err := n.writeHosts(); err != nil {
		n.Close()
		return nil, err
	}
	base := prefix.Addr().As4()
	lo, hi := base, base
	lo[3], hi[3] = 100, 199
	n.dnsmasq = exec.CommandContext(ctx, "dnsmasq", "--keep-in-foreground", "--log-facility=-", "--log-dhcp",
		// As root: the hosts and lease files live in the caller's private
		// directory, and the server exists only in an isolated namespace.
		"--user=root", "--conf-file=/dev/null", "--port=0", "--interface="+bridge, "--bind-interfaces", "--except-interface=lo",
		"--dhcp-authoritative", "--dhcp-range="+netip.AddrFrom4(lo).String()+","+netip.AddrFrom4(hi).String()+",255.255.255.0,2m",
		"--dhcp-hostsfile="+n.hostsFile(), "--dhcp-leasefile="+filepath.Join(dir, "dnsmasq.leases"),
		"--pid-file="+filepath.Join(dir, "dnsmasq.pid"))
	n.dnsmasq.Stdout, n.dnsmasq.Stderr = n.log, n.log
	n.dnsmasq.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.dnsmasq.Start(); err != nil {
		n.dnsmasq = nil
		n.Close()
		return nil, fmt.Errorf("network: start dnsmasq: %w", err)
	}
	go func() { _ = n.dnsmasq.Wait(); close(n.done) }()
	// Until dnsmasq has written its pid file it has no SIGHUP handler, and
	// a Reserve then would kill it.
	pidFile := filepath.Join(dir, "dnsmasq.pid")
	if err := testutil.Poll(10*time.Second, 20*time.Millisecond, func() error {
		select {
		case <-n.done:
			return nil
		default:
		}
		if data, err := os.ReadFile(pidFile); err != nil || len(data) == 0 {
			return fmt.Errorf("no pid file yet")
		}
		return nil
	}); err != nil {
		n.Close()
		return nil, fmt.Errorf("network: dnsmasq did not start in 10s: %s", n.log.String())
	}
	select {
	case <-n.done:
		n.Close()
		return nil, fmt.Errorf("network: dnsmasq exited: %s", n.log.String())
	default:
	}
	return n, nil
}

func (n *Network) hostsFile() string { return filepath.Join(n.dir, "dnsmasq.hosts") }

func (n *Network) writeHosts() error {
	var lines []string
	for mac, a := range n.hosts {
		lines = append(lines, mac+","+a.String())
	}
	sort.Strings(lines)
	tmp := n.hostsFile() + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("network: dhcp hosts: %w", err)
	}
	return os.Rename(tmp, n.hostsFile())
}

// Reserve makes the DHCP server give mac the address host (.2 to .254 of
// the prefix): a reservation as on a home router. A changed reservation
// takes effect when the client next asks for its old address from scratch
// (after a link flap or a restart of its DHCP client): it is refused
// (DHCPNAK) and given the new one.
func (n *Network) Reserve(mac string, host int) (netip.Addr, error) {
	if host < 2 || host > 254 {
		return netip.Addr{}, fmt.Errorf("network: host number %d out of 2..254", host)
	}
	a := n.prefix.Addr().As4()
	a[3] = byte(host)
	addr := netip.AddrFrom4(a)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.hosts[strings.ToLower(mac)] = addr
	if err := n.writeHosts(); err != nil {
		return netip.Addr{}, err
	}
	if n.dnsmasq != nil && n.dnsmasq.Process != nil {
		// SIGHUP rereads --dhcp-hostsfile.
		if err := n.dnsmasq.Process.Signal(syscall.SIGHUP); err != nil {
			return netip.Addr{}, fmt.Errorf("network: reload dnsmasq: %w", err)
		}
	}
	return addr, nil
}

// AddTap creates a tap device on the bridge for one machine.
func (n *Network) AddTap(ctx context.Context, name string) error {
	for _, args := range [][]string{
		{"tuntap", "add", "dev", name, "mode", "tap"},
		{"link", "set", name, "master", n.Bridge},
		{"link", "set", name, "up"},
	} {
		if err := ip(ctx, args...); err != nil {
			return err
		}
	}
	n.mu.Lock()
	n.taps = append(n.taps, name)
	n.mu.Unlock()
	return nil
}

// Log returns what dnsmasq logged (every DHCP exchange).
func (n *Network) Log() string { return n.log.String() }

// Close stops dnsmasq and removes the taps and the bridge.
func (n *Network) Close() {
	if n.dnsmasq != nil && n.dnsmasq.Process != nil {
		_ = n.dnsmasq.Process.Kill()
		select {
		case <-n.done:
		case <-time.After(5 * time.Second):
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n.mu.Lock()
	taps := n.taps
	n.mu.Unlock()
	for _, t := range taps {
		_ = ip(ctx, "link", "del", t)
	}
	_ = ip(ctx, "link", "del", n.Bridge)
}

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

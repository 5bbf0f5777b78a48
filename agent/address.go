package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/sdnotify"
)

// addressPoll is how often the agent reads its network interfaces to see
// whether its address changed (a DHCP renewal to another lease, a
// container reconnected with another IP) and, before it starts, whether an
// address has appeared. Reading the interfaces costs a few system calls;
// a change is followed within this time plus a gossip round.
const addressPoll = 3 * time.Second

// lostAddressPoll is how often the agent reads its interfaces while its
// address is gone and no other is up: a DHCP client that dropped the old
// lease gets the next within seconds, and peers hold the node failed until
// it moves to it.
const lostAddressPoll = 500 * time.Millisecond

// HostInterface is one network interface with its addresses, as the agent
// reads them to choose its name and the address it advertises.
type HostInterface struct {
	net.Interface
	Addrs []net.IP
	// Default is set on the interface of the IPv4 default route.
	Default bool
}

// Interfaces lists the host's network interfaces with their addresses.
type Interfaces func() ([]HostInterface, error)

// WithInterfaces replaces the host's interfaces, for tests.
func WithInterfaces(list Interfaces) Option { return func(a *Agent) { a.interfaces = list } }

// WithAddressPoll replaces addressPoll, for tests.
func WithAddressPoll(d time.Duration) Option { return func(a *Agent) { a.addressPoll = d } }

// systemInterfaces reads the host's interfaces and their addresses.
func systemInterfaces() ([]HostInterface, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	def := defaultRouteInterface("/proc/net/route")
	out := make([]HostInterface, 0, len(ifaces))
	for _, ifi := range ifaces {
		hi := HostInterface{Interface: ifi, Default: ifi.Name == def}
		addrs, err := ifi.Addrs()
		if err != nil {
			return nil, fmt.Errorf("list addresses of %s: %w", ifi.Name, err)
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				hi.Addrs = append(hi.Addrs, n.IP)
			}
		}
		out = append(out, hi)
	}
	return out, nil
}

// defaultRouteInterface names the interface of the IPv4 default route in
// routes (Linux's /proc/net/route); "" when there is none or it cannot be
// read.
func defaultRouteInterface(routes string) string {
	data, err := os.ReadFile(routes)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		// Iface Destination Gateway Flags ... Mask ...
		f := strings.Fields(line)
		if len(f) >= 8 && f[1] == "00000000" && f[7] == "00000000" {
			return f[0]
		}
	}
	return ""
}

// followsAddress reports whether conf leaves the advertised address to the
// agent: no advertise address given and gossip bound to every interface.
// Only then can it choose one, and follow it when it changes.
func followsAddress(conf *Config) bool {
	if conf.Advertise != "" {
		return false
	}
	host, _, err := splitHostPort(conf.Bind, 7946)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "" || ip != nil && ip.IsUnspecified()
}

// ChooseAddress returns the IPv4 address to advertise, from interfaces
// that are up, running (a link) and not the loopback: the interface of the
// default route before the others (a bridge such as docker0 has private
// addresses too), and on each a private address (RFC 1918) before any other
// unicast address but link-local ones; the order of the interfaces breaks
// ties. nil when there is none: the network is not up yet.
func ChooseAddress(ifaces []HostInterface) net.IP {
	var best net.IP
	bestRank := 4
	for _, ifi := range ifaces {
		if ifi.Flags&(net.FlagUp|net.FlagRunning) != net.FlagUp|net.FlagRunning || ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		for _, ip := range ifi.Addrs {
			ip4 := ip.To4()
			if ip4 == nil || ip4.IsUnspecified() || ip4.IsLinkLocalUnicast() || ip4.IsMulticast() {
				continue
			}
			rank := 0 // private, on the default route's interface
			if !ip4.IsPrivate() {
				rank++
			}
			if !ifi.Default {
				rank += 2
			}
			if rank < bestRank {
				best, bestRank = ip4, rank
			}
		}
	}
	return best
}

// hasAddress reports whether ip is still on an interface that is up.
func hasAddress(ifaces []HostInterface, ip net.IP) bool {
	for _, ifi := range ifaces {
		if ifi.Flags&net.FlagUp == 0 {
			continue
		}
		if slices.ContainsFunc(ifi.Addrs, ip.Equal) {
			return true
		}
	}
	return false
}

// netIfaces turns HostInterfaces back into the net.Interfaces
// DefaultNodeName reads.
func netIfaces(ifaces []HostInterface) []net.Interface {
	out := make([]net.Interface, len(ifaces))
	for i, ifi := range ifaces {
		out[i] = ifi.Interface
	}
	return out
}

// networkMissing says what the agent still lacks to start: a MAC address
// to derive its name from (when it has to), an address to advertise (when
// it chooses one). Empty when it has what it needs.
func networkMissing(conf *Config, ifaces []HostInterface) string {
	if conf.Name == "" {
		hostname, _ := os.Hostname()
		if _, err := DefaultNodeName(hostname, netIfaces(ifaces)); err != nil {
			return "no network interface has a MAC address to name this node after (hostname " + strconv.Quote(hostname) + "); set name to start without one"
		}
	}
	if followsAddress(conf) && ChooseAddress(ifaces) == nil {
		return "no network interface that is up has an IPv4 address to advertise; set advertise to start without one"
	}
	return ""
}

// WaitForNetwork returns once the host has what the agent needs to start
// (see networkMissing), reading the interfaces every addressPoll: an agent
// started before the network is up waits for it instead of failing. It
// says once what it waits for, and when it has it; it returns ctx's error
// when ctx is done first (the agent is being stopped).
func WaitForNetwork(ctx context.Context, conf *Config, logger *slog.Logger, opts ...Option) error {
	a := &Agent{}
	for _, o := range opts {
		o(a)
	}
	list := a.listInterfaces()
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	var waiting string
	started := time.Now()
	tick := time.NewTicker(a.pollInterval())
	defer tick.Stop()
	for {
		ifaces, err := list()
		missing := "cannot read the network interfaces: " + fmt.Sprint(err)
		if err == nil {
			missing = networkMissing(conf, ifaces)
		}
		if missing == "" {
			if waiting != "" {
				logger.Info("network is up; starting", "waited", time.Since(started).Round(time.Millisecond))
			}
			return nil
		}
		if waiting == "" {
			logger.Warn("waiting for the network", "missing", missing, "retry_every", a.pollInterval())
		} else if missing != waiting {
			logger.Info("still waiting for the network", "missing", missing)
		}
		waiting = missing
		// systemd (Type=notify) would time the start out and restart
		// the agent in a loop: tell it why it waits, and to wait on.
		state := fmt.Sprintf("STATUS=waiting for the network: %s\nEXTEND_TIMEOUT_USEC=%d\n%s",
			missing, (4 * a.pollInterval()).Microseconds(), sdnotify.Watchdog)
		if _, err := sdnotify.Notify(state); err != nil {
			logger.Debug("cannot tell systemd the agent waits", "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the network: %w", errors.Join(ctx.Err(), errors.New(missing)))
		case <-tick.C:
		}
	}
}

func (a *Agent) listInterfaces() Interfaces {
	if a.interfaces != nil {
		return a.interfaces
	}
	return systemInterfaces
}

func (a *Agent) pollInterval() time.Duration {
	if a.addressPoll > 0 {
		return a.addressPoll
	}
	return addressPoll
}

// followAddress moves the node when the address it advertises leaves its
// interfaces and another appears, until ctx is done. An address that is
// gone with none to replace it is waited for, looking every
// lostAddressPoll: peers see the node fail, as they would a node
// unplugged, and see it back at the new address as soon as it moves there
// (a signed move lets them take it although they hold it failed).
func (a *Agent) followAddress(ctx context.Context) {
	list := a.listInterfaces()
	poll := a.pollInterval()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	var lost bool
	setLost := func(l bool) {
		if l != lost {
			tick.Reset(map[bool]time.Duration{false: poll, true: min(poll, lostAddressPoll)}[l])
		}
		lost = l
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cur, _ := a.cluster.LocalAddr()
		curIP := net.ParseIP(cur)
		ifaces, err := list()
		if err != nil {
			a.logger.Debug("cannot read the network interfaces", "err", err)
			continue
		}
		if curIP != nil && hasAddress(ifaces, curIP) {
			setLost(false)
			continue
		}
		next := ChooseAddress(ifaces)
		if next == nil {
			if !lost {
				a.logger.Warn("this node's address is gone and no other is up yet; waiting for one", "addr", cur)
			}
			setLost(true)
			continue
		}
		setLost(false)
		a.logger.Info("this node's address changed; moving", "from", cur, "to", next.String())
		if err := a.cluster.Readdress(next.String()); err != nil {
			a.logger.Error("cannot move to the new address", "to", next.String(), "err", err)
			continue
		}
		if a.disc != nil {
			a.disc.SetAddrs([]net.IP{next})
		}
	}
}

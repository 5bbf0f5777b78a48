package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/grandcat/zeroconf"
)

// zeroconfMDNS is the real MDNS, on github.com/grandcat/zeroconf.
type zeroconfMDNS struct {
	logger *slog.Logger
}

// NewZeroconf returns the real mDNS implementation. Browsing listens for
// IPv4 answers (gossip addresses are IPv4 first); advertising answers on
// IPv4 and, where available, IPv6.
func NewZeroconf(logger *slog.Logger) MDNS {
	if logger == nil {
		logger = slog.Default()
	}
	return &zeroconfMDNS{logger: logger}
}

// Advertise registers self until ctx is done, then unregisters it, which
// sends a goodbye (TTL 0) so browsers forget the node at once.
//
// The host name in the SRV record is "<instance>.rpi-cluster.local.", not the
// machine's "<hostname>.local.", so our A records never compete with the
// operating system's own mDNS responder (avahi) for its name.
func (z *zeroconfMDNS) Advertise(ctx context.Context, self Peer, ifaces []net.Interface) error {
	ips := advertisedIPs(self.Addrs, ifaces)
	if len(ips) == 0 {
		return fmt.Errorf("advertise %s: no address to announce on %s", self.Instance, ifaceNames(ifaces))
	}
	host := hostLabel(self.Instance) + ".rpi-cluster"
	srv, err := zeroconf.RegisterProxy(escapeInstance(self.Instance), ServiceType, Domain,
		self.GossipPort, host, ips, encodeTXT(self), ifaces)
	if err != nil {
		return fmt.Errorf("advertise %s on %s: %w", self.Instance, ifaceNames(ifaces), err)
	}
	stopWeb, err := advertiseHTTP(self, host, ips, ifaces)
	if err != nil {
		srv.Shutdown()
		return err
	}
	z.logger.Debug("advertising", "instance", self.Instance, "addrs", ips, "port", self.GossipPort)
	<-ctx.Done()
	stopWeb()
	srv.Shutdown()
	z.logger.Debug("advertisement withdrawn", "instance", self.Instance)
	return nil
}

// Browse queries once on ifaces and reports answers until ctx is done. It
// returns nil only then: a resolver that stops early (its socket failed, the
// interface went away) is an error, so the caller backs off and resolves
// the interfaces again.
func (z *zeroconfMDNS) Browse(ctx context.Context, ifaces []net.Interface, found func(Peer)) error {
	r, err := zeroconf.NewResolver(zeroconf.SelectIfaces(ifaces), zeroconf.SelectIPTraffic(zeroconf.IPv4))
	if err != nil {
		return fmt.Errorf("browse %s on %s: %w", ServiceType, ifaceNames(ifaces), err)
	}
	entries := make(chan *zeroconf.ServiceEntry, 16)
	err = r.Browse(ctx, ServiceType, Domain, entries)
	// The resolver closes entries when ctx ends, when it fails later on,
	// and after a failed Browse; it blocks on a full channel, so drain it to
	// the end either way.
	for e := range entries {
		if p, ok := peerFromEntry(e); ok {
			found(p)
		}
	}
	switch {
	case err != nil:
		return fmt.Errorf("browse %s on %s: %w", ServiceType, ifaceNames(ifaces), err)
	case ctx.Err() == nil:
		return fmt.Errorf("browse %s on %s: resolver stopped (the interface may be gone)", ServiceType, ifaceNames(ifaces))
	}
	return nil
}

// Browse is a one-shot browse for workstation tools: it collects the agents
// answering on iface ("" = every multicast interface) until ctx is done and
// returns them sorted by instance name. With cluster set, agents of other
// clusters are left out. The end of ctx is the normal end, not an error.
func Browse(ctx context.Context, iface, cluster string) ([]Peer, error) {
	ifaces, err := Interfaces(iface)
	if err != nil {
		return nil, fmt.Errorf("browse: %w", err)
	}
	var mu sync.Mutex
	byKey := make(map[string]Peer)
	found := func(p Peer) {
		if cluster != "" && p.Cluster != cluster {
			return
		}
		mu.Lock()
		byKey[p.Instance+"\x00"+p.GossipAddr()] = p
		mu.Unlock()
	}
	// Rounds of growing length, each with a fresh query, as Discovery runs
	// them. A failed first round is an error; a later one ends the browse
	// with what was found so far.
	z := NewZeroconf(slog.Default())
	for round, first := minRound, true; ctx.Err() == nil; round, first = min(2*round, maxRound), false {
		rctx, cancel := context.WithTimeout(ctx, round)
		err := z.Browse(rctx, ifaces, found)
		cancel()
		if err != nil && ctx.Err() == nil {
			if first {
				return nil, err
			}
			slog.Warn("mdns browse ended early", "err", err)
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	peers := make([]Peer, 0, len(byKey))
	for _, p := range byKey {
		peers = append(peers, p)
	}
	sort.Slice(peers, func(i, j int) bool {
		if peers[i].Instance != peers[j].Instance {
			return peers[i].Instance < peers[j].Instance
		}
		return peers[i].GossipAddr() < peers[j].GossipAddr()
	})
	return peers, nil
}

// encodeTXT is the TXT record of self: schema version, cluster, HTTP port,
// agent version.
func encodeTXT(self Peer) []string {
	txt := []string{"v=" + TXTSchema, "cluster=" + self.Cluster}
	if self.HTTPPort > 0 {
		txt = append(txt, "http="+strconv.Itoa(self.HTTPPort))
	}
	if self.Version != "" {
		txt = append(txt, "version="+self.Version)
	}
	return txt
}

// peerFromEntry converts a resolved DNS-SD entry. Unknown TXT keys are
// ignored, so newer agents may add some.
func peerFromEntry(e *zeroconf.ServiceEntry) (Peer, bool) {
	p := Peer{Instance: unescapeInstance(e.Instance), GossipPort: e.Port}
	for _, kv := range e.Text {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "cluster":
			p.Cluster = v
		case "http":
			p.HTTPPort, _ = strconv.Atoi(v)
		case "version":
			p.Version = v
		}
	}
	p.Addrs = append(p.Addrs, e.AddrIPv4...)
	p.Addrs = append(p.Addrs, e.AddrIPv6...)
	return p, p.Instance != "" && p.GossipPort > 0
}

// advertisedIPs are self's specific addresses, or when it has none the
// interfaces' IPv4 and global IPv6 addresses.
func advertisedIPs(addrs []net.IP, ifaces []net.Interface) []string {
	var out []string
	for _, ip := range addrs {
		if ip != nil && !ip.IsUnspecified() {
			out = append(out, ip.String())
		}
	}
	if len(out) > 0 {
		return out
	}
	for _, ifi := range ifaces {
		as, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range as {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.IsLoopback() {
				continue
			}
			if ipn.IP.To4() != nil || ipn.IP.IsGlobalUnicast() {
				out = append(out, ipn.IP.String())
			}
		}
	}
	return out
}

// escapeInstance escapes the characters that would split a DNS-SD instance
// name into labels or break its presentation format.
func escapeInstance(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `.`, `\.`, ` `, `\ `)
	return r.Replace(s)
}

// unescapeInstance undoes the presentation-format escapes of a DNS label:
// "\." and "\ " and decimal "\DDD".
func unescapeInstance(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			if n, err := strconv.Atoi(s[i+1 : i+4]); err == nil && n < 256 {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i+1])
		i++
	}
	return b.String()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// hostLabel turns a node name into a DNS host label: lowercase letters,
// digits and hyphens, at most 63 characters.
func hostLabel(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	label := strings.Trim(b.String(), "-")
	if len(label) > 63 {
		label = strings.TrimRight(label[:63], "-")
	}
	if label == "" {
		label = "node"
	}
	return label
}

func ifaceNames(ifaces []net.Interface) string {
	if len(ifaces) == 0 {
		return "all interfaces"
	}
	names := make([]string, len(ifaces))
	for i, ifi := range ifaces {
		names[i] = ifi.Name
	}
	return strings.Join(names, ",")
}

// Interfaces resolves the --interface setting. A name must be an existing
// interface that is up and multicast-capable; "" means every such interface
// except loopback. The errors say what was wrong and what to do.
func Interfaces(name string) ([]net.Interface, error) {
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	if name == "" {
		var out []net.Interface
		for _, ifi := range all {
			if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 && ifi.Flags&net.FlagLoopback == 0 {
				out = append(out, ifi)
			}
		}
		if len(out) == 0 {
			return nil, errors.New("mdns: no network interface is up and multicast-capable (check the network, or disable mdns and use join)")
		}
		return out, nil
	}
	for _, ifi := range all {
		if ifi.Name != name {
			continue
		}
		switch {
		case ifi.Flags&net.FlagUp == 0:
			return nil, fmt.Errorf("mdns interface %q is down (bring it up, or choose another interface)", name)
		case ifi.Flags&net.FlagMulticast == 0:
			return nil, fmt.Errorf("mdns interface %q cannot do multicast (choose another interface, or disable mdns and use join)", name)
		}
		return []net.Interface{ifi}, nil
	}
	names := make([]string, 0, len(all))
	for _, ifi := range all {
		names = append(names, ifi.Name)
	}
	return nil, fmt.Errorf("mdns interface %q does not exist (this machine has: %s)", name, strings.Join(names, ", "))
}

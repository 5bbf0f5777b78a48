// Package mdns is what the agent's discovery and the workstation tools share
// about finding agents on the LAN: the DNS-SD service name, the TXT record's
// schema, the one browse round on github.com/grandcat/zeroconf and the
// one-shot browse the tools run when no agent is named. The agent's
// advertising, and its rounds of browsing and joining, stay in
// agent/discovery; the tools import only this package.
package mdns

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
	"time"

	"github.com/grandcat/zeroconf"
)

// DNS-SD names under which agents advertise themselves.
const (
	ServiceType = "_rpi-cluster._tcp"
	Domain      = "local."
)

// TXTSchema is the version of the TXT record layout ("v=1"). Readers ignore
// keys they do not know, so adding keys does not need a new version.
const TXTSchema = "1"

// DefaultHTTPPort is the agent's API port when a TXT record gives none.
const DefaultHTTPPort = 8080

// Peer is an agent as announced over mDNS.
type Peer struct {
	// Instance is the DNS-SD instance name: the node name.
	Instance string
	// Cluster is the cluster name from the TXT record; peers of another
	// cluster are never joined.
	Cluster string
	// Version is the agent version from the TXT record.
	Version string
	// Addrs are the node's addresses, IPv4 first.
	Addrs []net.IP
	// GossipPort is the SRV port: memberlist's port.
	GossipPort int
	// HTTPPort is the agent's API port from the TXT record.
	HTTPPort int
}

// GossipAddr is the "ip:port" to join: the first IPv4 address with the
// gossip port, or the first address of any kind when there is no IPv4
// address; "" when there is no usable address.
func (p Peer) GossipAddr() string {
	var ip net.IP
	for _, a := range p.Addrs {
		if a4 := a.To4(); a4 != nil && !a4.IsUnspecified() {
			ip = a4
			break
		}
	}
	if ip == nil {
		for _, a := range p.Addrs {
			if len(a) == net.IPv6len && !a.IsUnspecified() {
				ip = a
				break
			}
		}
	}
	if ip == nil || p.GossipPort <= 0 {
		return ""
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(p.GossipPort))
}

// APIURLs are the base URLs of p's API, one per address (IPv4 first), so a
// client can fall through to the next.
func (p Peer) APIURLs() []string {
	port := p.HTTPPort
	if port == 0 {
		port = DefaultHTTPPort
	}
	var urls []string
	for _, ip := range p.Addrs {
		if ip == nil || ip.IsUnspecified() {
			continue
		}
		urls = append(urls, "http://"+net.JoinHostPort(ip.String(), strconv.Itoa(port)))
	}
	return urls
}

// EncodeTXT is the TXT record of self: schema version, cluster, HTTP port,
// agent version.
func EncodeTXT(self Peer) []string {
	txt := []string{"v=" + TXTSchema, "cluster=" + self.Cluster}
	if self.HTTPPort > 0 {
		txt = append(txt, "http="+strconv.Itoa(self.HTTPPort))
	}
	if self.Version != "" {
		txt = append(txt, "version="+self.Version)
	}
	return txt
}

// PeerFromEntry converts a resolved DNS-SD entry. Unknown TXT keys are
// ignored, so newer agents may add some.
func PeerFromEntry(e *zeroconf.ServiceEntry) (Peer, bool) {
	p := Peer{Instance: UnescapeInstance(e.Instance), GossipPort: e.Port}
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

// EscapeInstance escapes the characters that would split a DNS-SD instance
// name into labels or break its presentation format.
func EscapeInstance(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `.`, `\.`, ` `, `\ `)
	return r.Replace(s)
}

// UnescapeInstance undoes the presentation-format escapes of a DNS label:
// "\." and "\ " and decimal "\DDD".
func UnescapeInstance(s string) string {
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

// IfaceNames lists ifaces for messages: "eth0,wlan0", or "all interfaces".
func IfaceNames(ifaces []net.Interface) string {
	if len(ifaces) == 0 {
		return "all interfaces"
	}
	names := make([]string, len(ifaces))
	for i, ifi := range ifaces {
		names[i] = ifi.Name
	}
	return strings.Join(names, ",")
}

// Interfaces resolves an mDNS interface setting. A name must be an existing
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

// BrowseRound queries once on ifaces and reports the agents answering, and
// any announcements heard, to found until ctx is done. It returns nil only
// then: a resolver that stops early (its socket failed, the interface went
// away) is an error, so the caller backs off and resolves the interfaces
// again. Browsing listens for IPv4 answers (gossip addresses are IPv4
// first).
func BrowseRound(ctx context.Context, ifaces []net.Interface, found func(Peer)) error {
	r, err := zeroconf.NewResolver(zeroconf.SelectIfaces(ifaces), zeroconf.SelectIPTraffic(zeroconf.IPv4))
	if err != nil {
		return fmt.Errorf("browse %s on %s: %w", ServiceType, IfaceNames(ifaces), err)
	}
	entries := make(chan *zeroconf.ServiceEntry, 16)
	err = r.Browse(ctx, ServiceType, Domain, entries)
	// The resolver closes entries when ctx ends, when it fails later on,
	// and after a failed Browse; it blocks on a full channel, so drain it to
	// the end either way.
	for e := range entries {
		if p, ok := PeerFromEntry(e); ok {
			found(p)
		}
	}
	switch {
	case err != nil:
		return fmt.Errorf("browse %s on %s: %w", ServiceType, IfaceNames(ifaces), err)
	case ctx.Err() == nil:
		return fmt.Errorf("browse %s on %s: resolver stopped (the interface may be gone)", ServiceType, IfaceNames(ifaces))
	}
	return nil
}

// Lengths of the one-shot browse's rounds: each round sends a fresh query,
// the first soon, later ones less often, as the agent's discovery does.
const (
	minRound = time.Second
	maxRound = 30 * time.Second
)

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
	// A failed first round is an error; a later one ends the browse with
	// what was found so far.
	for round, first := minRound, true; ctx.Err() == nil; round, first = min(2*round, maxRound), false {
		rctx, cancel := context.WithTimeout(ctx, round)
		err := BrowseRound(rctx, ifaces, found)
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

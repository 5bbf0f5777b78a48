package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/grandcat/zeroconf"

	"github.com/rpi-cluster/rpi-cluster/internal/mdns"
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
		self.GossipPort, host, ips, mdns.EncodeTXT(self), ifaces)
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

// Browse is one round of mdns.BrowseRound.
func (z *zeroconfMDNS) Browse(ctx context.Context, ifaces []net.Interface, found func(Peer)) error {
	return mdns.BrowseRound(ctx, ifaces, found)
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

func escapeInstance(s string) string { return mdns.EscapeInstance(s) }

func unescapeInstance(s string) string { return mdns.UnescapeInstance(s) }

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

func ifaceNames(ifaces []net.Interface) string { return mdns.IfaceNames(ifaces) }

// Interfaces resolves the --interface setting (see mdns.Interfaces).
func Interfaces(name string) ([]net.Interface, error) { return mdns.Interfaces(name) }

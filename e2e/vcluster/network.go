package vcluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
)

// DefaultSubnet is the private network `rpi-vcluster up` uses unless told
// otherwise: unlikely to clash with home, office or cloud networks.
const DefaultSubnet = "10.213.7.0/24"

// autoSubnets are tried in order when no subnet is given, so that concurrent
// runs (several engineers, CI) each get their own network.
func autoSubnets() []netip.Prefix {
	var out []netip.Prefix
	for i := 8; i < 250; i++ {
		out = append(out, netip.MustParsePrefix(fmt.Sprintf("10.213.%d.0/24", i)))
	}
	return out
}

// Route is one IPv4 route of the host.
type Route struct {
	Iface string
	Dst   netip.Prefix
}

// HostRoutes reads the host's IPv4 routing table from /proc/net/route.
func HostRoutes() ([]Route, error) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return nil, fmt.Errorf("read routes: %w", err)
	}
	defer f.Close()
	return parseProcRoutes(f)
}

// parseProcRoutes parses the /proc/net/route format: hexadecimal,
// little-endian destination and mask per line.
func parseProcRoutes(r io.Reader) ([]Route, error) {
	var routes []Route
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue // header
		}
		f := strings.Fields(sc.Text())
		if len(f) < 8 {
			continue
		}
		dst, err1 := hexIPv4(f[1])
		mask, err2 := hexIPv4(f[7])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("parse route %q: bad address", sc.Text())
		}
		ones := 0
		for _, b := range mask.As4() {
			for i := 7; i >= 0; i-- {
				if b&(1<<i) != 0 {
					ones++
				}
			}
		}
		routes = append(routes, Route{Iface: f[0], Dst: netip.PrefixFrom(dst, ones)})
	}
	return routes, sc.Err()
}

func hexIPv4(s string) (netip.Addr, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 4 {
		return netip.Addr{}, fmt.Errorf("bad hex address %q", s)
	}
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], binary.LittleEndian.Uint32(b))
	return netip.AddrFrom4(a), nil
}

// overlappingRoute returns the first route other than the default route
// whose destination overlaps subnet.
func overlappingRoute(routes []Route, subnet netip.Prefix) (Route, bool) {
	for _, r := range routes {
		if r.Dst.Bits() == 0 {
			continue
		}
		if r.Dst.Overlaps(subnet) {
			return r, true
		}
	}
	return Route{}, false
}

// nodeIP is the fixed address of node index i (1-based): .11, .12, ...
func nodeIP(subnet netip.Prefix, i int) (netip.Addr, error) {
	if i < 1 || i > 200 {
		return netip.Addr{}, fmt.Errorf("node index %d out of range 1..200", i)
	}
	a := subnet.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) + uint32(10+i)
	binary.BigEndian.PutUint32(a[:], v)
	ip := netip.AddrFrom4(a)
	if !subnet.Contains(ip) {
		return netip.Addr{}, fmt.Errorf("node %d does not fit in %s", i, subnet)
	}
	return ip, nil
}

func (c *Cluster) createNetwork(ctx context.Context) error {
	if out, err := c.d.Run(ctx, "network", "inspect", "--format",
		`{{index .Labels "`+LabelRun+`"}} {{range .IPAM.Config}}{{.Subnet}}{{end}}`, c.Network); err == nil {
		f := strings.Fields(out)
		if len(f) != 2 || f[0] != c.RunID {
			return fmt.Errorf("create network %s: a network of that name exists and is not this run's: remove it (docker network rm %s)", c.Network, c.Network)
		}
		p, err := netip.ParsePrefix(f[1])
		if err != nil {
			return fmt.Errorf("create network %s: existing subnet %q: %w", c.Network, f[1], err)
		}
		c.Subnet = p
		c.log.Info("reusing network", "network", c.Network, "subnet", p)
		return nil
	}
	routes, err := HostRoutes()
	if err != nil {
		return fmt.Errorf("create network: %w", err)
	}
	var candidates []netip.Prefix
	if c.opts.Subnet != "" {
		p, err := netip.ParsePrefix(c.opts.Subnet)
		if err != nil || !p.Addr().Is4() || p.Bits() > 24 {
			return fmt.Errorf("create network: subnet %q: want an IPv4 prefix of /24 or larger, e.g. %s", c.opts.Subnet, DefaultSubnet)
		}
		if r, ok := overlappingRoute(routes, p); ok {
			return fmt.Errorf("create network: subnet %s overlaps the host route %s on %s: pick another with --subnet", p, r.Dst, r.Iface)
		}
		candidates = []netip.Prefix{p.Masked()}
	} else {
		for _, p := range autoSubnets() {
			if _, ok := overlappingRoute(routes, p); !ok {
				candidates = append(candidates, p)
			}
		}
	}
	var lastErr error
	for _, p := range candidates {
		gw := p.Addr().Next()
		// Not --internal: Docker's isolation rules for internal networks
		// drop every packet not addressed to the subnet, multicast (mDNS)
		// included. Without masquerading, nothing from the nodes gets a
		// usable route out; link-local multicast is never routed anyway.
		_, err := c.d.Run(ctx, "network", "create", "--driver", "bridge",
			"--opt", "com.docker.network.bridge.enable_ip_masquerade=false",
			"--subnet", p.String(), "--gateway", gw.String(),
			"--label", LabelRun+"="+c.RunID, "--label", LabelSession+"="+c.opts.Session, c.Network)
		if err == nil {
			c.Subnet = p
			c.log.Info("network created", "network", c.Network, "subnet", p)
			return nil
		}
		lastErr = err
		var ce *CommandError
		if errors.As(err, &ce) && strings.Contains(ce.Stderr, "overlaps") && c.opts.Subnet == "" {
			continue // another run holds it: try the next
		}
		break
	}
	if lastErr == nil {
		lastErr = errors.New("no free subnet in 10.213.8.0-10.213.249.0")
	}
	return fmt.Errorf("create network %s: %w", c.Network, lastErr)
}

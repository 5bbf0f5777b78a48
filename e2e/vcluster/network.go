package vcluster

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
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

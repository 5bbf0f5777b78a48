package toolkit

import (
	"context"
	"net"
	"strconv"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/discovery"
)

// BrowseTimeout bounds the mDNS fallback: how long the tools listen for
// agents answering on the LAN.
const BrowseTimeout = 2 * time.Second

// Browse is the mDNS fallback used by Connect when neither --agent,
// RPI_AGENT nor the workstation config names an agent. Tests set it to nil
// so nothing is ever multicast from a test.
var Browse BrowseFunc = BrowseMDNS

// BrowseMDNS browses for agents of cluster on iface ("" = every multicast
// interface) for BrowseTimeout and returns their API base URLs, every
// address of each agent (IPv4 first) so Find can fall through.
func BrowseMDNS(ctx context.Context, iface, cluster string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, BrowseTimeout)
	defer cancel()
	peers, err := discovery.Browse(ctx, iface, cluster)
	if err != nil {
		return nil, err
	}
	var urls []string
	for _, p := range peers {
		port := p.HTTPPort
		if port == 0 {
			port = 8080
		}
		for _, ip := range p.Addrs {
			if ip == nil || ip.IsUnspecified() {
				continue
			}
			urls = append(urls, "http://"+net.JoinHostPort(ip.String(), strconv.Itoa(port)))
		}
	}
	return urls, nil
}

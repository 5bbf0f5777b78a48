package toolkit

import (
	"context"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/mdns"
)

// BrowseTimeout bounds the mDNS fallback: how long the tools listen for
// agents answering on the LAN.
const BrowseTimeout = 2 * time.Second

// Browse is the mDNS fallback used by Connect when neither --agent,
// RPI_AGENT nor the workstation config names an agent. Tests set it to nil
// so nothing is ever multicast from a test, or to a fake.
var Browse BrowseFunc = BrowseMDNS

// BrowseMDNS browses for agents of every cluster on iface ("" = every
// multicast interface) for BrowseTimeout; Connect picks the cluster, so it
// can say which others answered.
func BrowseMDNS(ctx context.Context, iface string) ([]mdns.Peer, error) {
	ctx, cancel := context.WithTimeout(ctx, BrowseTimeout)
	defer cancel()
	return mdns.Browse(ctx, iface, "")
}

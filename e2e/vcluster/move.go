package vcluster

import (
	"context"
	"fmt"
	"net/netip"
)

// Move gives the node another address, as a DHCP renewal to a new lease
// does: it is taken off the network and connected again at the next free
// address of the subnet, keeping its container, name and data. n.IP is the
// new address on return.
func (c *Cluster) Move(ctx context.Context, n *Node) (netip.Addr, error) {
	c.mu.Lock()
	idx := c.next
	c.next++
	c.mu.Unlock()
	ip, err := nodeIP(c.Subnet, idx)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("move %s: %w", n, err)
	}
	if err := c.docker(ctx, "disconnect", n, "network", "disconnect", c.Network, n.Container); err != nil {
		return netip.Addr{}, fmt.Errorf("move: %w", err)
	}
	if err := c.docker(ctx, "connect at "+ip.String(), n, "network", "connect", "--ip", ip.String(), c.Network, n.Container); err != nil {
		return netip.Addr{}, fmt.Errorf("move: %w", err)
	}
	c.mu.Lock()
	n.IP = ip
	c.mu.Unlock()
	return ip, nil
}

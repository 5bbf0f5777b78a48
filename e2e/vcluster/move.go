package vcluster

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
)

// Move gives the node another address, as a DHCP renewal to a new lease
// does: it is taken off the network and connected again at the next free
// address of the subnet, keeping its container, name and data. n.IP is the
// new address on return.
func (c *Cluster) Move(ctx context.Context, n *Node) (netip.Addr, error) {
	ip, err := c.nextIP()
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

// Renumber changes the node's address in place, as a DHCP client renewing
// to another lease does: the next free address of the subnet is added to
// its interface and the old one removed (with secondaries promoted, so the
// new one and the routes stay), inside its network namespace. Docker still
// lists the old address; n.IP is the new one on return.
func (c *Cluster) Renumber(ctx context.Context, n *Node) (netip.Addr, error) {
	ip, err := c.nextIP()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("renumber %s: %w", n, err)
	}
	pid, err := c.pid(ctx, n)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("renumber %s: %w", n, err)
	}
	bits := strconv.Itoa(c.Subnet.Bits())
	for _, cmd := range [][]string{
		{"sysctl", "-qw", "net.ipv4.conf.all.promote_secondaries=1"},
		{"sysctl", "-qw", "net.ipv4.conf.eth0.promote_secondaries=1"},
		{"ip", "addr", "add", ip.String() + "/" + bits, "dev", "eth0"},
		{"ip", "addr", "del", n.IP.String() + "/" + bits, "dev", "eth0"},
	} {
		if _, err := run(ctx, nil, "nsenter", append([]string{"-t", pid, "-n"}, cmd...)...); err != nil {
			return netip.Addr{}, fmt.Errorf("renumber %s to %s: %w", n, ip, err)
		}
	}
	c.log.Info("renumbered", "node", n.String(), "to", ip)
	c.mu.Lock()
	n.IP = ip
	c.mu.Unlock()
	return ip, nil
}

// DropAddress takes the node's address off its interface, inside its
// network namespace, as a DHCP client does when its lease is refused
// (DHCPNAK) before it asks for another: the node is left with no address
// and no route until AddAddress. Docker still lists the old address.
func (c *Cluster) DropAddress(ctx context.Context, n *Node) error {
	bits := strconv.Itoa(c.Subnet.Bits())
	if err := c.inNetns(ctx, n, []string{"ip", "addr", "del", n.IP.String() + "/" + bits, "dev", "eth0"}); err != nil {
		return fmt.Errorf("drop the address of %s: %w", n, err)
	}
	c.log.Info("address dropped", "node", n.String(), "addr", n.IP)
	return nil
}

// AddAddress gives a node without an address (see DropAddress) the next
// free address of the subnet and its default route back, as a DHCP client
// does with its new lease. n.IP is the new address on return.
func (c *Cluster) AddAddress(ctx context.Context, n *Node) (netip.Addr, error) {
	ip, err := c.nextIP()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("address %s: %w", n, err)
	}
	bits := strconv.Itoa(c.Subnet.Bits())
	if err := c.inNetns(ctx, n,
		[]string{"ip", "addr", "add", ip.String() + "/" + bits, "dev", "eth0"},
		[]string{"ip", "route", "replace", "default", "via", c.Subnet.Addr().Next().String(), "dev", "eth0"},
	); err != nil {
		return netip.Addr{}, fmt.Errorf("address %s at %s: %w", n, ip, err)
	}
	c.log.Info("address added", "node", n.String(), "addr", ip)
	c.mu.Lock()
	n.IP = ip
	c.mu.Unlock()
	return ip, nil
}

// inNetns runs each command in the node's network namespace, in order.
func (c *Cluster) inNetns(ctx context.Context, n *Node, cmds ...[]string) error {
	pid, err := c.pid(ctx, n)
	if err != nil {
		return err
	}
	for _, cmd := range cmds {
		if _, err := run(ctx, nil, "nsenter", append([]string{"-t", pid, "-n"}, cmd...)...); err != nil {
			return err
		}
	}
	return nil
}

// nextIP takes the next free address of the cluster's subnet.
func (c *Cluster) nextIP() (netip.Addr, error) {
	c.mu.Lock()
	idx := c.next
	c.next++
	c.mu.Unlock()
	return nodeIP(c.Subnet, idx)
}

package vcluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

func (c *Cluster) docker(ctx context.Context, op string, n *Node, args ...string) error {
	if _, err := c.d.Run(ctx, args...); err != nil {
		return fmt.Errorf("%s %s: %w", op, n, err)
	}
	c.log.Info(op, "node", n.String())
	return nil
}

// Kill sends SIGKILL to the node: the agent gets no chance to leave.
func (c *Cluster) Kill(ctx context.Context, n *Node) error {
	return c.docker(ctx, "kill", n, "kill", n.Container)
}

// Stop stops the node gracefully (SIGTERM: the agent leaves).
func (c *Cluster) Stop(ctx context.Context, n *Node) error {
	return c.docker(ctx, "stop", n, "stop", n.Container)
}

// Start starts a stopped or killed node again, same container and volume.
func (c *Cluster) Start(ctx context.Context, n *Node) error {
	return c.docker(ctx, "start", n, "start", n.Container)
}

// Restart stops the node gracefully and starts it again.
func (c *Cluster) Restart(ctx context.Context, n *Node) error {
	return c.docker(ctx, "restart", n, "restart", n.Container)
}

// Pause freezes every process of the node (cgroup freezer).
func (c *Cluster) Pause(ctx context.Context, n *Node) error {
	return c.docker(ctx, "pause", n, "pause", n.Container)
}

// Unpause thaws a paused node.
func (c *Cluster) Unpause(ctx context.Context, n *Node) error {
	return c.docker(ctx, "unpause", n, "unpause", n.Container)
}

// Disconnect takes the node off the cluster network: it loses its
// interface and reaches nobody.
func (c *Cluster) Disconnect(ctx context.Context, n *Node) error {
	return c.docker(ctx, "disconnect", n, "network", "disconnect", c.Network, n.Container)
}

// Reconnect puts a disconnected node back on the network at its address.
func (c *Cluster) Reconnect(ctx context.Context, n *Node) error {
	return c.docker(ctx, "reconnect", n, "network", "connect", "--ip", n.IP.String(), c.Network, n.Container)
}

// Partition splits the network into the given groups: nodes of different
// groups drop each other's packets (blackhole routes), nodes of one group
// still talk. Heal undoes it.
func (c *Cluster) Partition(ctx context.Context, groups ...[]*Node) error {
	return c.partition(ctx, "add", groups)
}

// Heal removes the routes a Partition added.
func (c *Cluster) Heal(ctx context.Context, groups ...[]*Node) error {
	return c.partition(ctx, "del", groups)
}

func (c *Cluster) partition(ctx context.Context, verb string, groups [][]*Node) error {
	var errs []error
	for gi, g := range groups {
		for _, n := range g {
			for gj, other := range groups {
				if gi == gj {
					continue
				}
				for _, o := range other {
					if _, err := c.Exec(ctx, n, "ip", "route", verb, "blackhole", o.IP.String()+"/32"); err != nil {
						errs = append(errs, err)
					}
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("partition %s: %w", verb, err)
	}
	return nil
}

// Netem applies a netem discipline to the node's eth0, e.g.
// Netem(ctx, n, "delay", "100ms", "20ms"). Kernels built without netem
// answer "Specified qdisc kind is unknown"; PacketLoss works on those too.
func (c *Cluster) Netem(ctx context.Context, n *Node, spec ...string) error {
	args := append([]string{"tc", "qdisc", "replace", "dev", "eth0", "root", "netem"}, spec...)
	if _, err := c.Exec(ctx, n, args...); err != nil {
		return fmt.Errorf("netem: %w", err)
	}
	return nil
}

// ClearNetem removes the node's netem discipline. Removing none is fine.
func (c *Cluster) ClearNetem(ctx context.Context, n *Node) error {
	out, err := c.Exec(ctx, n, "sh", "-c", "tc qdisc del dev eth0 root 2>&1 || true")
	if err != nil {
		return fmt.Errorf("clear netem: %w: %s", err, out)
	}
	return nil
}

// PacketLoss drops percent of the packets the node sends on eth0, or stops
// dropping when percent is 0. It uses `tc netem loss` where the kernel has
// netem, and otherwise an nftables rule (numgen random) in the node's own
// network namespace, run from the host with nsenter; either disappears with
// the container. It returns which mechanism it used.
func (c *Cluster) PacketLoss(ctx context.Context, n *Node, percent float64) (string, error) {
	if percent < 0 || percent >= 100 {
		return "", fmt.Errorf("packet loss %v%%: want 0 <= percent < 100", percent)
	}
	if percent == 0 {
		errNetem := c.ClearNetem(ctx, n)
		errNft := c.nft(ctx, n, "delete table inet rpi_e2e_loss", true)
		return "", errors.Join(errNetem, errNft)
	}
	if err := c.Netem(ctx, n, "loss", strconv.FormatFloat(percent, 'f', -1, 64)+"%"); err == nil {
		return "netem", nil
	} else if !strings.Contains(err.Error(), "qdisc kind is unknown") {
		return "", err
	}
	perMille := int(percent * 10)
	script := fmt.Sprintf(`table inet rpi_e2e_loss {
	chain out {
		type filter hook output priority 0; policy accept;
		oifname "eth0" numgen random mod 1000 < %d drop
	}
}
`, perMille)
	_ = c.nft(ctx, n, "delete table inet rpi_e2e_loss", true)
	if err := c.nftScript(ctx, n, script); err != nil {
		return "", fmt.Errorf("packet loss on %s: %w", n, err)
	}
	return "nftables", nil
}

func (c *Cluster) pid(ctx context.Context, n *Node) (string, error) {
	pid, err := c.d.Run(ctx, "inspect", "--format", "{{.State.Pid}}", n.Container)
	if err != nil {
		return "", err
	}
	if pid == "0" || pid == "" {
		return "", fmt.Errorf("%s is not running", n)
	}
	return pid, nil
}

func (c *Cluster) nft(ctx context.Context, n *Node, cmd string, ignoreErr bool) error {
	pid, err := c.pid(ctx, n)
	if err != nil {
		return err
	}
	args := append([]string{"-t", pid, "-n", "nft"}, strings.Fields(cmd)...)
	if _, err := run(ctx, nil, "nsenter", args...); err != nil && !ignoreErr {
		return err
	}
	return nil
}

func (c *Cluster) nftScript(ctx context.Context, n *Node, script string) error {
	pid, err := c.pid(ctx, n)
	if err != nil {
		return err
	}
	_, err = run(ctx, strings.NewReader(script), "nsenter", "-t", pid, "-n", "nft", "-f", "-")
	return err
}

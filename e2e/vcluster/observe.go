package vcluster

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// Exec runs a command in the node and returns its trimmed output.
func (c *Cluster) Exec(ctx context.Context, n *Node, cmd ...string) (string, error) {
	out, err := c.d.Run(ctx, append([]string{"exec", n.Container}, cmd...)...)
	if err != nil {
		return out, fmt.Errorf("exec in %s: %w", n, err)
	}
	return out, nil
}

// Logs returns the last tail lines of the node's journal for this boot:
// first boot, the agent, sshd and systemd itself. A node that is not
// running has no journal to ask; then it is the container's output
// (systemd's console).
func (c *Cluster) Logs(ctx context.Context, n *Node, tail int) (string, error) {
	out, err := c.Exec(ctx, n, "journalctl", "--boot", "--no-pager", "--lines", strconv.Itoa(tail))
	if err == nil {
		return out, nil
	}
	out, err = run(ctx, nil, "sh", "-c", `"$0" logs --tail "$1" "$2" 2>&1`, c.d.bin(), strconv.Itoa(tail), n.Container)
	if err != nil {
		return out, fmt.Errorf("logs of %s: %w", n, err)
	}
	return out, nil
}

// Booted returns nil once systemd in the node has started every unit of
// the boot, else what is still starting or what failed. A degraded boot
// (a unit failed) is an error naming the failed units.
func (c *Cluster) Booted(ctx context.Context, n *Node) error {
	state, _ := c.Exec(ctx, n, "systemctl", "is-system-running")
	switch state {
	case "running":
		return nil
	case "degraded":
		failed, _ := c.Exec(ctx, n, "systemctl", "--failed", "--no-legend", "--plain")
		return fmt.Errorf("%s booted degraded: failed units: %s", n, failed)
	}
	return fmt.Errorf("%s is still booting (systemd says %q)", n, state)
}

// Unit returns properties of a unit in the node (systemctl show), e.g.
// Unit(ctx, n, "rpi-agent.service", "ActiveState", "MainPID").
func (c *Cluster) Unit(ctx context.Context, n *Node, unit string, props ...string) (map[string]string, error) {
	out, err := c.Exec(ctx, n, "systemctl", "show", unit, "--property", strings.Join(props, ","))
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, len(props))
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m, nil
}

// Views asks every node in observers for its /v1/nodes. A node that does not
// answer has no entry and an error in the joined error.
func (c *Cluster) Views(ctx context.Context, observers []*Node) (map[*Node][]apitypes.Node, error) {
	type result struct {
		n     *Node
		nodes []apitypes.Node
		err   error
	}
	ch := make(chan result, len(observers))
	for _, o := range observers {
		go func() {
			rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			nodes, err := o.Client().Nodes(rctx)
			ch <- result{o, nodes, err}
		}()
	}
	views := make(map[*Node][]apitypes.Node, len(observers))
	var errs []error
	for range observers {
		r := <-ch
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.n, r.err))
			continue
		}
		views[r.n] = r.nodes
	}
	return views, errors.Join(errs...)
}

// StatusOf returns the status of the node at ip in view, or "" if absent.
func StatusOf(view []apitypes.Node, ip netip.Addr) string {
	for _, n := range view {
		if n.Address == ip.String() {
			return n.Status
		}
	}
	return ""
}

// ExpectStatus checks that every observer sees every target with status.
// It returns what is still missing, nil when all agree.
func (c *Cluster) ExpectStatus(ctx context.Context, observers, targets []*Node, status string) error {
	views, err := c.Views(ctx, observers)
	if err != nil {
		return err
	}
	var missing []string
	for _, o := range observers {
		for _, t := range targets {
			if got := StatusOf(views[o], t.IP); got != status {
				missing = append(missing, fmt.Sprintf("%s sees %s as %q", o, t, got))
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("want %s: %s", status, strings.Join(missing, "; "))
	}
	return nil
}

// Converged returns nil when every node in nodes sees exactly nodes alive,
// each with its gossiped record (monitoring, SSH host keys), else what is
// still missing.
func (c *Cluster) Converged(ctx context.Context, nodes []*Node) error {
	views, err := c.Views(ctx, nodes)
	if err != nil {
		return err
	}
	want := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		want[n.IP.String()] = true
	}
	var missing []string
	for _, o := range nodes {
		for _, m := range views[o] {
			if m.Status == apitypes.StatusAlive && !want[m.Address] {
				missing = append(missing, fmt.Sprintf("%s sees unexpected %s(%s) alive", o, m.Name, m.Address))
			}
			// Membership travels ahead of the node record (monitoring,
			// host keys); converged means the records arrived too.
			if want[m.Address] && m.Monitoring.SampledAt.IsZero() {
				missing = append(missing, fmt.Sprintf("%s has no record of %s(%s) yet", o, m.Name, m.Address))
			}
		}
		for _, t := range nodes {
			if s := StatusOf(views[o], t.IP); s != apitypes.StatusAlive {
				missing = append(missing, fmt.Sprintf("%s sees %s as %q", o, t, s))
			}
		}
	}
	if len(missing) > 0 {
		return errors.New(strings.Join(missing, "; "))
	}
	return nil
}

// WaitConverged waits until every node sees all of nodes (nil: every node
// of the cluster) alive, then records each node's name. It returns the
// time it took.
func (c *Cluster) WaitConverged(ctx context.Context, nodes []*Node, timeout time.Duration) (time.Duration, error) {
	if nodes == nil {
		nodes = c.Nodes()
	}
	start := time.Now()
	if err := Poll(ctx, timeout, 250*time.Millisecond, func() error { return c.Converged(ctx, nodes) }); err != nil {
		return time.Since(start), fmt.Errorf("wait for %d nodes to converge: %w", len(nodes), err)
	}
	took := time.Since(start)
	return took, c.Refresh(ctx, nodes)
}

// Refresh reads each node's name from its agent.
func (c *Cluster) Refresh(ctx context.Context, nodes []*Node) error {
	for _, n := range nodes {
		self, err := n.Client().Self(ctx)
		if err != nil {
			return fmt.Errorf("refresh %s: %w", n.Container, err)
		}
		c.mu.Lock()
		n.Name = self.Name
		c.mu.Unlock()
	}
	return nil
}

// Poll calls cond every interval until it returns nil, ctx ends or timeout
// passes, and returns the last error (what was still missing).
func Poll(ctx context.Context, timeout, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(interval):
		}
	}
}

// HostPID returns the host's process id of unit's main process in the node,
// for inspecting the unit from outside its sandbox (nsenter, /proc).
func (c *Cluster) HostPID(ctx context.Context, n *Node, unit string) (int, error) {
	props, err := c.Unit(ctx, n, unit, "MainPID")
	if err != nil {
		return 0, err
	}
	inNode := props["MainPID"]
	if inNode == "" || inNode == "0" {
		return 0, fmt.Errorf("host pid of %s in %s: the unit has no main process", unit, n)
	}
	out, err := c.d.Run(ctx, "top", n.Container, "-o", "pid")
	if err != nil {
		return 0, fmt.Errorf("host pid of %s in %s: %w", unit, n, err)
	}
	// /proc/PID/status's NSpid lists the process's id in each pid
	// namespace, the host's first and the node's last.
	for _, f := range strings.Fields(out) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue // the header
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue // gone since
		}
		for _, line := range strings.Split(string(status), "\n") {
			if ids, ok := strings.CutPrefix(line, "NSpid:"); ok {
				if f := strings.Fields(ids); len(f) > 0 && f[len(f)-1] == inNode {
					return pid, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("host pid of %s in %s: no process of the node has pid %s there", unit, n, inNode)
}

package vcluster

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
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

// Logs returns the node's container output (the entrypoint and the agent).
func (c *Cluster) Logs(ctx context.Context, n *Node, tail int) (string, error) {
	out, err := run(ctx, nil, "sh", "-c", `"$0" logs --tail "$1" "$2" 2>&1`, c.d.bin(), strconv.Itoa(tail), n.Container)
	if err != nil {
		return out, fmt.Errorf("logs of %s: %w", n, err)
	}
	return out, nil
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

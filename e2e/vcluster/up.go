package vcluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
)

// UpOptions configures Up.
type UpOptions struct {
	// RepoRoot is the repository (see RepoRoot).
	RepoRoot string
	// Nodes is how many virtual Pis to start.
	Nodes int
	// RunID names the cluster; `rpi-vcluster up` uses "cluster".
	RunID string
	// Subnet, AgentArgs: see Options.
	Subnet    string
	AgentArgs []string
	// Mirror overrides the Debian mirror.
	Mirror string
	// Timeout bounds the wait for every agent to see every node alive.
	Timeout time.Duration
	Docker  *Docker
	Logger  *slog.Logger
}

// Running is a started, converged cluster and the files to reach it.
type Running struct {
	Cluster     *Cluster
	Prepared    *Prepared
	Workstation *Workstation
	// Members is the converged view of the first node.
	Members []apitypes.Node
	// Converged is how long the agents took to see each other.
	Converged time.Duration
}

// Up builds (or reuses) the image, starts o.Nodes nodes, waits until every
// agent sees all of them alive and writes the workstation files. On a
// convergence failure the cluster is left running for inspection and
// returned with the error.
func Up(ctx context.Context, o UpOptions) (*Running, error) {
	if o.Nodes < 1 {
		return nil, fmt.Errorf("up: %d nodes: want at least 1", o.Nodes)
	}
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Minute
	}
	if o.Docker == nil {
		o.Docker = &Docker{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.RunID != "" {
		existing, err := o.Docker.ListByLabel(ctx, "container", LabelRun+"="+o.RunID)
		if err != nil {
			return nil, fmt.Errorf("up: %w", err)
		}
		if len(existing) > 0 {
			return nil, fmt.Errorf("up: cluster %q is already running (%d containers): run `rpi-vcluster down --run-id %s` first", o.RunID, len(existing), o.RunID)
		}
	}
	p, err := Prepare(ctx, PrepareOptions{RepoRoot: o.RepoRoot, Mirror: o.Mirror, Docker: o.Docker, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	agentCfg, err := ImageAgentConfig(ctx, o.Docker, p.Image)
	if err != nil {
		return nil, err
	}
	c, err := Create(ctx, Options{RunID: o.RunID, Image: p.Image, Subnet: o.Subnet, Token: agentCfg.APIToken,
		AgentArgs: o.AgentArgs, Docker: o.Docker, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	r := &Running{Cluster: c, Prepared: p}
	if _, err := c.AddNodes(ctx, o.Nodes); err != nil {
		return r, err
	}
	o.Logger.Info("waiting for the agents to find each other", "nodes", o.Nodes, "timeout", o.Timeout)
	r.Converged, err = c.WaitConverged(ctx, nil, o.Timeout)
	if err != nil {
		return r, err
	}
	o.Logger.Info("cluster converged", "nodes", o.Nodes, "took", r.Converged.Round(time.Millisecond))
	first := c.Nodes()[0]
	r.Members, err = first.Client().Nodes(ctx)
	if err != nil {
		return r, fmt.Errorf("up: %w", err)
	}
	r.Workstation, err = WriteWorkstation(p.Dir, p.Key, DefaultSSHUser, r.Members)
	if err != nil {
		return r, err
	}
	var agents []string
	for _, n := range c.Nodes() {
		agents = append(agents, n.AgentURL())
	}
	wc := &client.WorkstationConfig{Agents: agents, Token: agentCfg.APIToken, Cluster: agentCfg.Cluster, SSHUser: DefaultSSHUser,
		SSHKey: r.Workstation.Key, KnownHosts: r.Workstation.KnownHosts}
	if err := wc.Save(filepath.Join(p.Dir, "config.yaml")); err != nil {
		return r, fmt.Errorf("up: %w", err)
	}
	return r, nil
}

// Report writes what a person needs to use the cluster: status pages and
// the workstation settings.
func (r *Running) Report(w io.Writer) {
	c := r.Cluster
	fmt.Fprintf(w, "\nvirtual cluster %q: %d nodes on %s (network %s), converged in %v\n\n",
		c.RunID, len(c.Nodes()), c.Subnet, c.Network, r.Converged.Round(time.Millisecond))
	names := map[string]string{}
	for _, m := range r.Members {
		names[m.Address] = m.Name
	}
	for _, n := range c.Nodes() {
		fmt.Fprintf(w, "  %-16s %-14s status page %s/\n", names[n.IP.String()], n.IP, n.AgentURL())
	}
	if r.Workstation == nil {
		return
	}
	ws := r.Workstation
	first := c.Nodes()[0]
	var agents []string
	for _, n := range c.Nodes() {
		agents = append(agents, n.AgentURL())
	}
	fmt.Fprintf(w, `
workstation settings:
  export RPI_AGENT=%s
  export RPI_TOKEN=$(sed -n 's/^token: //p' %s)
  SSH user %s, key %s (the only way in; no passwords)
  known_hosts from the gossiped host keys: %s
  ssh:      ssh -F %s %s
  ansible:  ansible all -i %s -m ping
  all agents (for fall-through): %s
  config:   %s

ssh_config snippet (also in %s):
`, first.AgentURL(), filepath.Join(ws.Dir, "config.yaml"), ws.User, ws.Key, ws.KnownHosts, ws.SSHConfig, names[first.IP.String()],
		ws.Inventory, strings.Join(agents, ","), filepath.Join(ws.Dir, "config.yaml"), ws.SSHConfig)
	fmt.Fprintf(w, "  Host %s\n    User %s\n    IdentityFile %s\n    IdentitiesOnly yes\n    UserKnownHostsFile %s\n    StrictHostKeyChecking yes\n",
		c.Subnet.Addr().String()[:strings.LastIndex(c.Subnet.Addr().String(), ".")]+".*", ws.User, ws.Key, ws.KnownHosts)
	fmt.Fprintf(w, "\nremove it with: rpi-vcluster down --run-id %s\n", c.RunID)
}

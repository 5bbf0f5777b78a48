// Package vcluster runs a virtual Raspberry Pi cluster on Docker: one
// container per Pi, imported from the same node root filesystem the image
// part puts on SD cards, on a private network with fixed addresses. It is
// the harness behind `rpi-vcluster up/down` and the e2e suite, and offers
// the faults those tests need: kill, pause, network disconnect, partitions
// and netem.
//
// Everything it creates carries the label LabelRun=<run id>, so Down (and
// DownRun after a crashed test) removes exactly what one run made.
package vcluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
)

// Labels put on what the harness creates.
const (
	// LabelRun marks containers, volumes and networks with their run id.
	LabelRun = "rpi-cluster.e2e"
	// LabelNode holds a container's node index.
	LabelNode = "rpi-cluster.e2e.node"
	// LabelSession groups several runs (one CI job's test clusters) so a
	// wrapper can remove them all without touching anyone else's.
	LabelSession = "rpi-cluster.e2e.session"
	// LabelImage marks node images (kept across runs as a cache).
	LabelImage = "rpi-cluster.node-image"
)

// AgentHTTPPort is the agent's API and status page port inside a node.
const AgentHTTPPort = 8080

// DataDir is the agent's data directory inside a node, a named volume.
const DataDir = "/var/lib/rpi-agent"

// Options configures a cluster.
type Options struct {
	// RunID names this cluster's objects; empty picks a random one.
	RunID string
	// Image is the node image tag (from BuildImage). Required.
	Image string
	// Subnet is the private network's subnet. Empty tries 10.213.8.0/24,
	// 10.213.9.0/24, ... and takes the first free one. An explicit subnet
	// that overlaps a host route is refused.
	Subnet string
	// Hostname is every container's hostname. Default "raspberrypi", the
	// factory name of a freshly flashed card, so nodes name themselves the
	// way real ones do.
	Hostname string
	// AgentArgs are extra rpi-agent arguments for every node.
	AgentArgs []string
	// Token is the agents' API token (see ImageAgentConfig), sent by the
	// clients Client returns.
	Token string
	// Session, when set, labels everything with LabelSession=Session too.
	Session string
	// Docker runs docker; nil uses "docker" on PATH.
	Docker *Docker
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

// Cluster is a running virtual cluster.
type Cluster struct {
	RunID   string
	Network string
	Subnet  netip.Prefix
	Image   string
	// Token is the agents' API token, "" when unknown.
	Token string

	opts Options
	d    *Docker
	log  *slog.Logger

	mu    sync.Mutex
	nodes []*Node
	next  int
	down  bool
}

// Node is one virtual Pi.
type Node struct {
	// Index is the node's position, from 1; its address is .10+Index.
	Index     int
	Container string
	Volume    string
	IP        netip.Addr
	// Name is the agent's node name, filled in by Refresh or WaitConverged.
	Name string
}

// AgentURL is the node's agent API base URL, also its status page.
func (n *Node) AgentURL() string {
	return fmt.Sprintf("http://%s:%d", n.IP, AgentHTTPPort)
}

// Client returns a typed client for the node's agent, without a token:
// enough for reads. Cluster.Client adds the token for writes.
func (n *Node) Client() *client.Client {
	return &client.Client{BaseURL: n.AgentURL()}
}

// Client returns a typed client for n's agent carrying the API token.
func (c *Cluster) Client(n *Node) *client.Client {
	return &client.Client{BaseURL: n.AgentURL(), Token: c.Token}
}

func (n *Node) String() string {
	if n.Name != "" {
		return fmt.Sprintf("%s(%s)", n.Name, n.IP)
	}
	return n.Container
}

// NewRunID returns a short random run id.
func NewRunID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Create makes the cluster's network. It starts no node: call AddNodes.
func Create(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Image == "" {
		return nil, errors.New("create cluster: no node image")
	}
	if opts.RunID == "" {
		opts.RunID = NewRunID()
	}
	if opts.Hostname == "" {
		opts.Hostname = "raspberrypi"
	}
	if opts.Docker == nil {
		opts.Docker = &Docker{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &Cluster{
		RunID:   opts.RunID,
		Network: "rpi-vc-" + opts.RunID,
		Image:   opts.Image,
		Token:   opts.Token,
		opts:    opts,
		d:       opts.Docker,
		log:     opts.Logger.With("run", opts.RunID),
		next:    1,
	}
	if err := c.d.Available(ctx); err != nil {
		return nil, err
	}
	if err := c.createNetwork(ctx); err != nil {
		return nil, err
	}
	return c, nil
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

// AddNodes starts n more nodes and returns them. It does not wait for the
// agents: see WaitConverged.
func (c *Cluster) AddNodes(ctx context.Context, n int) ([]*Node, error) {
	var added []*Node
	for i := 0; i < n; i++ {
		node, err := c.AddNode(ctx)
		if err != nil {
			return added, err
		}
		added = append(added, node)
	}
	return added, nil
}

// AddNode starts one more node with a fresh data volume.
func (c *Cluster) AddNode(ctx context.Context) (*Node, error) {
	c.mu.Lock()
	if c.down {
		c.mu.Unlock()
		return nil, errors.New("add node: cluster is down")
	}
	idx := c.next
	c.next++
	c.mu.Unlock()
	ip, err := nodeIP(c.Subnet, idx)
	if err != nil {
		return nil, fmt.Errorf("add node: %w", err)
	}
	n := &Node{
		Index:     idx,
		Container: fmt.Sprintf("rpi-vc-%s-node%d", c.RunID, idx),
		Volume:    fmt.Sprintf("rpi-vc-%s-node%d-data", c.RunID, idx),
		IP:        ip,
	}
	if err := c.runNode(ctx, n, n.Container); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	c.log.Info("node started", "container", n.Container, "ip", n.IP)
	return n, nil
}

func (c *Cluster) runNode(ctx context.Context, n *Node, container string) error {
	if _, err := c.d.Run(ctx, "volume", "create", "--label", LabelRun+"="+c.RunID,
		"--label", LabelSession+"="+c.opts.Session, n.Volume); err != nil {
		return fmt.Errorf("start node %d: %w", n.Index, err)
	}
	args := []string{"run", "-d",
		"--name", container,
		"--hostname", c.opts.Hostname,
		"--network", c.Network, "--ip", n.IP.String(),
		"--cap-add", "NET_ADMIN",
		"--label", LabelRun + "=" + c.RunID,
		"--label", LabelNode + "=" + strconv.Itoa(n.Index),
		"--label", LabelSession + "=" + c.opts.Session,
		"--volume", n.Volume + ":" + DataDir,
		"--stop-timeout", "15",
	}
	args = append(args, lxcfsMounts()...)
	args = append(args, c.Image)
	args = append(args, c.opts.AgentArgs...)
	if _, err := c.d.Run(ctx, args...); err != nil {
		return fmt.Errorf("start node %d: %w", n.Index, err)
	}
	return nil
}

// LXCFSRoot is where lxcfs serves per-container views of /proc.
const LXCFSRoot = "/var/lib/lxcfs"

// lxcfsProcFiles are the /proc files the agent's monitor reads for load,
// CPU, memory and uptime.
var lxcfsProcFiles = []string{"loadavg", "stat", "meminfo", "cpuinfo", "uptime"}

// lxcfsMounts returns docker run arguments that give a node its own /proc
// load, CPU, memory and uptime from lxcfs, when lxcfs is running. Without
// it every container reads the host kernel's figures, so all nodes report
// the same load and least-busy placement cannot tell them apart. A real Pi
// has its own kernel; lxcfs is the nearest thing for containers.
func lxcfsMounts() []string {
	if !LXCFSActive() {
		return nil
	}
	var args []string
	for _, f := range lxcfsProcFiles {
		args = append(args, "--volume", LXCFSRoot+"/proc/"+f+":/proc/"+f+":rw")
	}
	return args
}

// LXCFSActive reports whether lxcfs serves per-container /proc files.
func LXCFSActive() bool {
	data, err := os.ReadFile(LXCFSRoot + "/proc/loadavg")
	return err == nil && len(data) > 0
}

// Recreate removes the node's container and starts a new one from the same
// image with the same address and data volume: what replacing a Pi's SD
// card with a fresh copy of the image while keeping its data looks like.
func (c *Cluster) Recreate(ctx context.Context, n *Node) error {
	if _, err := c.d.Run(ctx, "rm", "-f", n.Container); err != nil {
		return fmt.Errorf("recreate %s: %w", n, err)
	}
	if err := c.runNode(ctx, n, n.Container); err != nil {
		return fmt.Errorf("recreate %s: %w", n, err)
	}
	c.log.Info("recreate", "node", n.String())
	return nil
}

// Nodes returns the cluster's nodes in index order.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Node(nil), c.nodes...)
}

// Others returns every node but except.
func (c *Cluster) Others(except ...*Node) []*Node {
	var out []*Node
next:
	for _, n := range c.Nodes() {
		for _, e := range except {
			if n == e {
				continue next
			}
		}
		out = append(out, n)
	}
	return out
}

// Exec runs a command in the node and returns its trimmed output.
func (c *Cluster) Exec(ctx context.Context, n *Node, cmd ...string) (string, error) {
	out, err := c.d.Run(ctx, append([]string{"exec", n.Container}, cmd...)...)
	if err != nil {
		return out, fmt.Errorf("exec in %s: %w", n, err)
	}
	return out, nil
}

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

// Down removes the cluster: its containers, volumes and network.
// It is safe to call more than once.
func (c *Cluster) Down(ctx context.Context) error {
	c.mu.Lock()
	c.down = true
	c.mu.Unlock()
	return DownRun(ctx, c.d, c.RunID)
}

// DownRun removes every container, volume and network labelled with runID;
// runID "" removes those of every run. It finds them by label, so it cleans
// up after a crashed test too.
func DownRun(ctx context.Context, d *Docker, runID string) error {
	if d == nil {
		d = &Docker{}
	}
	label := LabelRun
	if runID != "" {
		label += "=" + runID
	}
	return DownLabel(ctx, d, label)
}

// DownSession removes everything of every run labelled with session.
func DownSession(ctx context.Context, d *Docker, session string) error {
	if session == "" {
		return errors.New("remove session: empty session id")
	}
	return DownLabel(ctx, d, LabelSession+"="+session)
}

// DownLabel removes the containers, volumes and networks carrying label
// ("key" or "key=value").
func DownLabel(ctx context.Context, d *Docker, label string) error {
	if d == nil {
		d = &Docker{}
	}
	var errs []error
	containers, err := d.ListByLabel(ctx, "container", label)
	errs = append(errs, err)
	if len(containers) > 0 {
		_, err := d.Run(ctx, append([]string{"rm", "-f", "-v"}, containers...)...)
		errs = append(errs, err)
	}
	volumes, err := d.ListByLabel(ctx, "volume", label)
	errs = append(errs, err)
	if len(volumes) > 0 {
		_, err := d.Run(ctx, append([]string{"volume", "rm", "-f"}, volumes...)...)
		errs = append(errs, err)
	}
	networks, err := d.ListByLabel(ctx, "network", label)
	errs = append(errs, err)
	if len(networks) > 0 {
		sort.Strings(networks)
		_, err := d.Run(ctx, append([]string{"network", "rm"}, networks...)...)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove objects labelled %s: %w", label, err)
	}
	return nil
}

// Package vcluster runs a virtual Raspberry Pi cluster on Docker: one
// container per Pi, imported from the same node root filesystem the image
// part puts on SD cards, booting systemd with the image's units, on a
// private network with fixed addresses. It is the harness behind
// `rpi-vcluster up/down` and the e2e suite. Its parts: the node image
// (image.go, prepare.go), the cluster's lifecycle (this file, network.go),
// the faults the tests need (faults.go: kill, pause, network disconnect,
// partitions, netem) and observing the nodes (observe.go: views,
// convergence, boot state, units, logs).
//
// Everything it creates carries the label LabelRun=<run id>, so Down (and
// DownRun after a crashed test) removes exactly what one run made.
package vcluster

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

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
	// AgentArgs are extra rpi-agent arguments for every node, added to
	// rpi-agent.service's command by a drop-in.
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
	args := []string{"create",
		"--name", container,
		"--hostname", c.opts.Hostname,
		"--network", c.Network, "--ip", n.IP.String(),
		"--label", LabelRun + "=" + c.RunID,
		"--label", LabelNode + "=" + strconv.Itoa(n.Index),
		"--label", LabelSession + "=" + c.opts.Session,
		"--volume", n.Volume + ":" + DataDir,
		// systemd's shutdown stops every unit (the agent leaves) before
		// docker's SIGKILL.
		"--stop-timeout", "30",
	}
	args = append(args, SystemdFlags...)
	args = append(args, lxcfsMounts()...)
	args = append(args, c.Image)
	if _, err := c.d.Run(ctx, args...); err != nil {
		return fmt.Errorf("start node %d: %w", n.Index, err)
	}
	if len(c.opts.AgentArgs) > 0 {
		if err := c.installDropIn(ctx, container, agentArgsPath, agentArgsDropIn(c.opts.AgentArgs)); err != nil {
			return fmt.Errorf("start node %d: %w", n.Index, err)
		}
	}
	if LXCFSActive() {
		if err := c.installDropIn(ctx, container, lxcfsDropInPath, lxcfsDropIn()); err != nil {
			return fmt.Errorf("start node %d: %w", n.Index, err)
		}
	}
	if _, err := c.d.Run(ctx, "start", container); err != nil {
		return fmt.Errorf("start node %d: %w", n.Index, err)
	}
	return nil
}

// SystemdFlags let systemd be process 1 with the image's units as written:
// it needs to mount (/run, the units' private /tmp and read-only views)
// and to manage its own cgroups, and seccomp must let the units' sandboxes
// be built. Docker's default flags make systemd silently skip the units'
// hardening; --privileged would hand the node the host's devices. NET_ADMIN
// is for the fault injection (netem, blackhole routes).
var SystemdFlags = []string{
	"--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN",
	"--security-opt", "seccomp=unconfined",
	"--volume", "/sys/fs/cgroup:/sys/fs/cgroup",
	"--tmpfs", "/run", "--tmpfs", "/run/lock",
	// systemd halts cleanly on SIGRTMIN+3; SIGTERM would re-execute it.
	"--stop-signal", "SIGRTMIN+3",
}

// agentArgsPath is the drop-in that adds AgentArgs to rpi-agent's command.
const agentArgsPath = "/etc/systemd/system/rpi-agent.service.d/10-vcluster-args.conf"

// agentArgsDropIn replaces the unit's ExecStart by one with args appended,
// each quoted for systemd.
func agentArgsDropIn(args []string) string {
	var b strings.Builder
	b.WriteString("# Written by the virtual cluster harness: extra agent arguments.\n[Service]\nExecStart=\nExecStart=/usr/local/bin/rpi-agent --config /etc/rpi-cluster/agent.yaml")
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "%", "%%", "$", "$$", "\n", `\n`)
	for _, a := range args {
		b.WriteString(` "` + r.Replace(a) + `"`)
	}
	b.WriteString("\n")
	return b.String()
}

// installDropIn copies unit text into the created, not yet started
// container at dropIn, a file of rpi-agent.service.d, as a tar stream
// (docker cp -).
func (c *Cluster) installDropIn(ctx context.Context, container, dropIn, text string) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := path.Dir(dropIn)
	hdrs := []*tar.Header{
		{Typeflag: tar.TypeDir, Name: path.Base(dir) + "/", Mode: 0o755},
		{Typeflag: tar.TypeReg, Name: path.Base(dir) + "/" + path.Base(dropIn), Mode: 0o644, Size: int64(len(text))},
	}
	for _, h := range hdrs {
		h.ModTime = time.Now()
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
	}
	if _, err := tw.Write([]byte(text)); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if _, err := c.d.RunInput(ctx, &buf, "cp", "-", container+":"+path.Dir(dir)); err != nil {
		return fmt.Errorf("install %s: %w", dropIn, err)
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
		args = append(args, "--volume", LXCFSRoot+"/proc/"+f+":/proc/"+f+":rw",
			"--volume", LXCFSRoot+"/proc/"+f+":"+lxcfsNodeDir+"/"+f+":ro")
	}
	return args
}

// lxcfsNodeDir is where a node sees lxcfs's files a second time: the
// agent's unit mounts a fresh /proc (ProtectKernelTunables= and
// ProtectControlGroups= imply it), which hides the copies mounted over
// /proc, so lxcfsDropIn binds these back over the fresh one. The unit as
// the image ships it stays unchanged; a real Pi has its own kernel.
const lxcfsNodeDir = "/var/lib/lxcfs-proc"

// lxcfsDropInPath is the drop-in giving the agent its node's /proc figures.
const lxcfsDropInPath = "/etc/systemd/system/rpi-agent.service.d/20-vcluster-lxcfs.conf"

// lxcfsDropIn binds lxcfsNodeDir's files over the agent's /proc.
func lxcfsDropIn() string {
	var b strings.Builder
	b.WriteString("# Written by the virtual cluster harness: this node's own /proc figures (lxcfs).\n[Service]\n")
	for _, f := range lxcfsProcFiles {
		fmt.Fprintf(&b, "BindReadOnlyPaths=%s/%s:/proc/%s\n", lxcfsNodeDir, f, f)
	}
	return b.String()
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

package toolkit

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
	"github.com/rpi-cluster/rpi-cluster/internal/mdns"
	"github.com/rpi-cluster/rpi-cluster/internal/secretfile"
)

// Names of the flags every tool shares.
const (
	FlagAgent = "agent"
	FlagToken = "token"
	// FlagTokenFile reads the token from a file that only its owner (and
	// group) may read, out of sight of ps.
	FlagTokenFile = "token-file"
	FlagConfig    = "config"
	FlagJSON      = "json"
)

// Environment variables naming the workstation config. The agent's YAML has
// its own, RPI_AGENT_CONFIG: one variable per file, so exporting one for the
// tools cannot make rpi-agent read the wrong file.
const (
	EnvConfig = "RPI_WORKSTATION_CONFIG"
	// EnvConfigOld is the name the tools once shared with rpi-agent; still
	// read, with a warning, when EnvConfig is not set.
	EnvConfigOld = "RPI_CONFIG"
)

// CommonFlags returns the flags shared by all workstation tools: --agent
// (repeatable, RPI_AGENT, comma-separated accepted), --token (RPI_TOKEN),
// --token-file (RPI_TOKEN_FILE) and --config (the workstation config path,
// RPI_WORKSTATION_CONFIG). They belong on the root app; the subcommands see
// them through the context lineage.
func CommonFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{
			Name:    FlagAgent,
			Usage:   "agent `URL` to ask (repeatable or comma-separated; tried in order)",
			EnvVars: []string{"RPI_AGENT"},
		},
		&cli.StringFlag{
			Name:    FlagToken,
			Usage:   "API `TOKEN` for writes (visible to ps: prefer --token-file)",
			EnvVars: []string{"RPI_TOKEN"},
		},
		&cli.StringFlag{
			Name:    FlagTokenFile,
			Usage:   "read the API token from `FILE` (not readable by every user)",
			EnvVars: []string{"RPI_TOKEN_FILE"},
		},
		&cli.StringFlag{
			Name:    FlagConfig,
			Usage:   "workstation config `FILE`",
			Value:   client.DefaultWorkstationConfigPath(),
			EnvVars: []string{EnvConfig},
		},
	}
}

// ConfigPath is the workstation config the command line names: --config,
// else RPI_WORKSTATION_CONFIG, else the deprecated RPI_CONFIG (with a
// warning on c.App.ErrWriter), else the default path.
func ConfigPath(c *cli.Context) string {
	if !c.IsSet(FlagConfig) {
		if old := os.Getenv(EnvConfigOld); old != "" {
			fmt.Fprintf(c.App.ErrWriter, "%s: warning: %s is deprecated for the workstation tools (rpi-agent ignores it): set %s=%s instead\n",
				c.App.Name, EnvConfigOld, EnvConfig, old)
			return old
		}
	}
	return c.String(FlagConfig)
}

// JSONFlag is --json, for the commands a person might script.
func JSONFlag() cli.Flag {
	return &cli.BoolFlag{Name: FlagJSON, Usage: "print JSON instead of a table"}
}

// Session is what a tool holds once it has found the cluster.
type Session struct {
	// Client talks to the agent that answered; its Gate checks every node
	// it reports.
	Client *client.Client
	// Config is the workstation config (empty when the file does not exist).
	Config *client.WorkstationConfig
	// Pins are the workstation's pinned node keys; nil for a command that
	// does not pin (NoPin).
	Pins *identity.Pins
}

// BrowseFunc finds the agents answering on the LAN, of every cluster.
type BrowseFunc func(ctx context.Context, iface string) ([]mdns.Peer, error)

// Pinning says whether a command pins node keys (see Gate).
type Pinning bool

const (
	// Pin is for commands that act on nodes or write files: node keys are
	// pinned on first sight and a changed key is refused.
	Pin Pinning = true
	// NoPin is for commands that only show the cluster: names are checked
	// as always, keys are neither pinned nor compared, so a cluster whose
	// key changed can still be looked at.
	NoPin Pinning = false
)

// Connect reads the common flags from c, loads the workstation config and
// returns a session with the first agent that answers, its client behind a
// Gate that warns on c.App.ErrWriter. The error is the client's hint (what
// was tried and what to do) when none answers.
func Connect(ctx context.Context, c *cli.Context, pin Pinning) (*Session, error) {
	configPath := ConfigPath(c)
	cfg, err := client.LoadWorkstationConfig(configPath)
	if err != nil {
		return nil, err
	}
	gate := &Gate{Warn: c.App.ErrWriter}
	if pin {
		if gate.Pins, err = identity.OpenPins(PinsPath(configPath, cfg)); err != nil {
			return nil, err
		}
	}
	token, err := secretfile.Value("--"+FlagToken, "--"+FlagTokenFile, c.String(FlagToken), c.String(FlagTokenFile))
	if err != nil {
		return nil, err
	}
	if token == "" {
		if token, err = cfg.APIToken(); err != nil {
			return nil, err
		}
	}
	agents := SplitList(c.StringSlice(FlagAgent))
	// The LAN is browsed only when no agent is named anywhere: an agent the
	// user named that is down gets the hint, not a surprise multicast.
	var (
		browse func(context.Context) ([]string, error)
		found  map[string]mdns.Peer // API URL -> the agent that announced it
	)
	if Browse != nil && len(agents) == 0 && len(cfg.Agents) == 0 {
		peers, err := Browse(ctx, cfg.MDNSInterface)
		if err != nil {
			return nil, fmt.Errorf("find an agent: no agent named in --agent, RPI_AGENT or %s, and the mDNS browse failed: %w", configPath, err)
		}
		if found, err = pickCluster(peers, ClusterName(cfg), configPath); err != nil {
			return nil, err
		}
		urls := make([]string, 0, len(found))
		for _, p := range peers {
			for _, u := range p.APIURLs() {
				if _, ok := found[u]; ok {
					urls = append(urls, u)
				}
			}
		}
		browse = func(context.Context) ([]string, error) { return urls, nil }
	}
	cl, err := client.Find(ctx, client.FindOptions{
		Agents: agents,
		Token:  token,
		Config: cfg,
		Browse: browse,
	})
	if err != nil {
		return nil, err
	}
	// An agent named in the config or on the command line is checked too:
	// the workstation config's token and pins belong to one cluster.
	if cfg.Cluster != "" && cl.Cluster != "" && cl.Cluster != cfg.Cluster {
		return nil, fmt.Errorf("agent at %s belongs to cluster %s, but %s is the config of cluster %s: point --agent or RPI_AGENT at an agent of %s, or use that cluster's workstation config",
			cl.BaseURL, apitypes.Quote(cl.Cluster), configPath, apitypes.Quote(cfg.Cluster), apitypes.Quote(cfg.Cluster))
	}
	if p, ok := found[cl.BaseURL]; ok {
		fmt.Fprintf(c.App.ErrWriter, "%s: using agent %s of cluster %s at %s, found by mDNS (name agents in %s or RPI_AGENT to skip the browse)\n",
			c.App.Name, apitypes.Quote(p.Instance), apitypes.Quote(p.Cluster), cl.BaseURL, configPath)
	}
	cl.Gate = gate
	return &Session{Client: cl, Config: cfg, Pins: gate.Pins}, nil
}

// pickCluster keeps the agents of cluster among peers, by API URL. When
// only agents of other clusters answered, it refuses to use them, naming
// what answered and how to choose: a tool must not act on whichever cluster
// happens to share the LAN.
func pickCluster(peers []mdns.Peer, cluster, configPath string) (map[string]mdns.Peer, error) {
	mine := make(map[string]mdns.Peer)
	others := make(map[string][]string) // cluster -> node names
	for _, p := range peers {
		if p.Cluster != cluster {
			others[p.Cluster] = append(others[p.Cluster], apitypes.Quote(p.Instance))
			continue
		}
		for _, u := range p.APIURLs() {
			mine[u] = p
		}
	}
	if len(mine) > 0 || len(others) == 0 {
		return mine, nil
	}
	var seen []string
	for name, nodes := range others {
		seen = append(seen, fmt.Sprintf("cluster %s (%s)", apitypes.Quote(name), strings.Join(nodes, ", ")))
	}
	slices.Sort(seen)
	return nil, fmt.Errorf("find an agent: mDNS found no agent of cluster %s, only of %s: refusing another cluster; set cluster: in %s to the one you mean, or name an agent with --agent",
		apitypes.Quote(cluster), strings.Join(seen, "; "), configPath)
}

// KnownNodesFile is the name of the workstation's pinned node keys, beside
// its config unless the config's known_nodes names another file.
const KnownNodesFile = "known_nodes.json"

// PinsPath is where the workstation keeps its pinned node keys: cfg's
// known_nodes, else known_nodes.json beside the config file at configPath.
func PinsPath(configPath string, cfg *client.WorkstationConfig) string {
	if cfg != nil && cfg.KnownNodes != "" {
		return cfg.KnownNodes
	}
	return filepath.Join(filepath.Dir(configPath), KnownNodesFile)
}

// ClusterName is the cluster name from the config, default "rpi".
func ClusterName(cfg *client.WorkstationConfig) string {
	if cfg != nil && cfg.Cluster != "" {
		return cfg.Cluster
	}
	return "rpi"
}

// SplitList flattens comma-separated values and drops empty ones, so
// "--agent a,b --agent c" and RPI_AGENT="a, b" both work.
func SplitList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// NodeClient returns a client for n's own agent (its address and HTTP port,
// with the scheme, token and HTTP client of base). Each agent writes only its
// own metadata, so writes about a node go to that node.
func NodeClient(base *client.Client, n apitypes.Node) (*client.Client, error) {
	if n.Address == "" {
		return nil, fmt.Errorf("node %s: no address in the cluster view", apitypes.Quote(n.Name))
	}
	scheme := "http"
	if u, err := url.Parse(base.BaseURL); err == nil && u.Scheme != "" {
		scheme = u.Scheme
	}
	port := n.HTTPPort
	if port == 0 {
		port = 8080
	}
	c, err := client.New(scheme+"://"+net.JoinHostPort(n.Address, strconv.Itoa(port)), base.Token)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", apitypes.Quote(n.Name), err)
	}
	c.HTTP, c.Gate = base.HTTP, base.Gate
	return c, nil
}

// ConnectView connects as Connect does and fetches the agent's view of the
// cluster, the first thing every tool needs.
func ConnectView(c *cli.Context, pin Pinning) (*Session, []apitypes.Node, error) {
	s, err := Connect(c.Context, c, pin)
	if err != nil {
		return nil, nil, err
	}
	nodes, err := s.Client.Nodes(c.Context)
	if err != nil {
		return nil, nil, fmt.Errorf("list nodes: %w", err)
	}
	return s, nodes, nil
}

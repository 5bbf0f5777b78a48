package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/rpi-cluster/rpi-cluster/internal/secretfile"
)

// WorkstationConfig is ~/.config/rpi-cluster/config.yaml: what the workstation
// tools need to reach and drive a cluster. rpi-image writes it; rpi-inventory,
// rpi-meta and rpi-launch read it. Unknown keys are an error.
type WorkstationConfig struct {
	// Agents are agent addresses to try in order ("10.0.0.5:8080" or URLs).
	Agents []string `yaml:"agents,omitempty"`
	// Token is the API token sent on writes.
	Token string `yaml:"token,omitempty"`
	// TokenFile is a file holding the token instead (not readable by every
	// user); Token wins when both are set.
	TokenFile string `yaml:"token_file,omitempty"`
	// Cluster is the cluster name, used to filter mDNS answers.
	Cluster string `yaml:"cluster,omitempty"`
	// MDNSInterface is the interface to browse on when no agent is given.
	MDNSInterface string `yaml:"mdns_interface,omitempty"`
	// SSHUser is the user Ansible logs in as (ansible_user). Default "pi".
	SSHUser string `yaml:"ssh_user,omitempty"`
	// SSHKey is the private key Ansible uses (ansible_ssh_private_key_file).
	SSHKey string `yaml:"ssh_key,omitempty"`
	// KnownHosts is where rpi-inventory known-hosts writes by default.
	KnownHosts string `yaml:"known_hosts,omitempty"`
	// KnownNodes is the file of node identity keys the tools pinned on
	// first sight; default known_nodes.json beside this config.
	KnownNodes string `yaml:"known_nodes,omitempty"`
}

// APIToken is the token the tools send: Token, else the content of
// TokenFile, else "".
func (c *WorkstationConfig) APIToken() (string, error) {
	if c.Token != "" || c.TokenFile == "" {
		return c.Token, nil
	}
	return secretfile.Read(c.TokenFile)
}

// DefaultWorkstationConfigPath is $XDG_CONFIG_HOME/rpi-cluster/config.yaml,
// else ~/.config/rpi-cluster/config.yaml.
func DefaultWorkstationConfigPath() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return filepath.Join(".config", "rpi-cluster", "config.yaml")
	}
	return filepath.Join(dir, "rpi-cluster", "config.yaml")
}

// LoadWorkstationConfig reads path. A missing file is not an error: it yields
// an empty config. A malformed file or an unknown key is.
func LoadWorkstationConfig(path string) (*WorkstationConfig, error) {
	c := &WorkstationConfig{}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read workstation config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse workstation config %s: %w", path, err)
	}
	return c, nil
}

// Save writes the config to path with mode 0600 (it holds the token),
// creating the directory.
func (c *WorkstationConfig) Save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write workstation config: %w", err)
	}
	data, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write workstation config: %w", err)
	}
	return os.Rename(tmp, path)
}

// FindOptions says where to look for an agent. Earlier sources win:
// Agents (from --agent / RPI_AGENT), then Config.Agents, then Browse.
type FindOptions struct {
	Agents []string
	Token  string
	Config *WorkstationConfig
	// Browse finds agent base URLs on the LAN (mDNS); nil disables it.
	Browse func(ctx context.Context) ([]string, error)
	// Timeout bounds each health check; default 2 s.
	Timeout time.Duration
}

// Find returns a client for the first candidate agent that answers /healthz,
// falling through past agents that are down. The error lists what was tried
// and what to do.
func Find(ctx context.Context, o FindOptions) (*Client, error) {
	token := o.Token
	if token == "" && o.Config != nil {
		token = o.Config.Token
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	var tried []string
	try := func(cands []string) (*Client, error) {
		for _, a := range cands {
			c, err := New(a, token)
			if err != nil {
				return nil, err
			}
			hctx, cancel := context.WithTimeout(ctx, timeout)
			h, err := c.Health(hctx)
			cancel()
			if err == nil {
				c.Cluster = h.Cluster
				return c, nil
			}
			tried = append(tried, fmt.Sprintf("%s (%v)", c.BaseURL, shortErr(err)))
		}
		return nil, nil
	}
	if c, err := try(o.Agents); c != nil || err != nil {
		return c, err
	}
	if o.Config != nil {
		if c, err := try(o.Config.Agents); c != nil || err != nil {
			return c, err
		}
	}
	if o.Browse != nil {
		found, err := o.Browse(ctx)
		if err != nil {
			tried = append(tried, fmt.Sprintf("mDNS browse (%v)", err))
		} else if len(found) == 0 {
			tried = append(tried, "mDNS browse (no agent answered)")
		}
		if c, err := try(found); c != nil || err != nil {
			return c, err
		}
	}
	if len(tried) == 0 {
		return nil, errors.New("no agent to ask: set RPI_AGENT or --agent (e.g. RPI_AGENT=http://192.168.1.20:8080), or write agents: in " + DefaultWorkstationConfigPath())
	}
	return nil, fmt.Errorf("no agent answered; tried %s: is rpi-agent running? set RPI_AGENT or --agent", strings.Join(tried, ", "))
}

func shortErr(err error) string {
	var u *UnreachableError
	if errors.As(err, &u) {
		return u.Err.Error()
	}
	return err.Error()
}

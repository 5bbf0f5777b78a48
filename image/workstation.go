package image

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
)

// ClusterSecrets are a cluster's gossip key and API token. rpi-image keeps
// them next to the workstation config (clusters/<name>.yaml, mode 0600) so
// that an image built later for the same cluster joins the cards already
// flashed.
type ClusterSecrets struct {
	Encrypt string `yaml:"encrypt"`
	Token   string `yaml:"token"`
}

// SecretsPath is where the secrets of cluster are kept, beside the
// workstation config at configPath.
func SecretsPath(configPath, cluster string) string {
	return filepath.Join(filepath.Dir(configPath), "clusters", cluster+".yaml")
}

// LoadSecrets reads the kept secrets of a cluster; a missing file yields
// nil and no error.
func LoadSecrets(path string) (*ClusterSecrets, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read cluster secrets: %w", err)
	}
	s := &ClusterSecrets{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(s); err != nil {
		return nil, fmt.Errorf("read cluster secrets %s: %w", path, err)
	}
	if err := ValidateEncryptKey(s.Encrypt); err != nil {
		return nil, fmt.Errorf("read cluster secrets %s: %w", path, err)
	}
	if err := ValidateToken(s.Token); err != nil {
		return nil, fmt.Errorf("read cluster secrets %s: %w", path, err)
	}
	return s, nil
}

// Save writes the secrets to path, mode 0600, atomically.
func (s *ClusterSecrets) Save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write cluster secrets: %w", err)
	}
	data, err := yaml.Marshal(s)
	if err != nil {
		return fmt.Errorf("write cluster secrets: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write cluster secrets: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write cluster secrets: %w", err)
	}
	return nil
}

// PrivateKeyFor returns the private key beside a public key file
// (KEY.pub → KEY) when it exists, as an absolute path, else "".
func PrivateKeyFor(pubPath string) string {
	if !strings.HasSuffix(pubPath, ".pub") {
		return ""
	}
	priv := strings.TrimSuffix(pubPath, ".pub")
	if abs, err := filepath.Abs(priv); err == nil {
		priv = abs
	}
	if info, err := os.Stat(priv); err == nil && info.Mode().IsRegular() {
		return priv
	}
	return ""
}

// WriteWorkstation updates the workstation config at path for the cluster
// just built: token, cluster, SSH user and key. Other settings are kept;
// agent addresses are dropped when they belonged to another cluster. It
// returns notes for the user.
func WriteWorkstation(path string, r *Report, sshPub string) ([]string, error) {
	cfg, err := client.LoadWorkstationConfig(path)
	if err != nil {
		return nil, err
	}
	var notes []string
	if cfg.Cluster != "" && cfg.Cluster != r.Cluster {
		notes = append(notes, fmt.Sprintf("%s was set up for cluster %q; it now points at %q (the old cluster's secrets stay in %s)", path, cfg.Cluster, r.Cluster, SecretsPath(path, cfg.Cluster)))
		cfg.Agents = nil
	}
	cfg.Cluster = r.Cluster
	cfg.Token = r.Token
	cfg.SSHUser = r.User.Name
	if priv := PrivateKeyFor(sshPub); priv != "" {
		cfg.SSHKey = priv
	} else if sshPub != "" {
		notes = append(notes, fmt.Sprintf("no private key next to %s: set ssh_key in %s to the key Ansible should use", sshPub, path))
	}
	if cfg.KnownHosts == "" {
		// Where `rpi-inventory known-hosts` writes the gossiped host keys and
		// where the inventory points ssh, so host-key checking stays on.
		cfg.KnownHosts = filepath.Join(filepath.Dir(path), "known_hosts")
	}
	if err := cfg.Save(path); err != nil {
		return notes, err
	}
	return notes, nil
}

// FillSecrets completes o's gossip key and token from the secrets kept for
// its cluster beside the workstation config at configPath, so a second
// image for a cluster joins the first. It returns the secrets file used, or
// "" when nothing was kept (Customize then generates fresh secrets).
func FillSecrets(configPath string, o *Options) (string, error) {
	if configPath == "" || (o.Encrypt != "" && o.Token != "") {
		return "", nil
	}
	cluster := o.Cluster
	if cluster == "" {
		cluster = "rpi"
	}
	if !apitypes.ValidName(cluster, true) {
		return "", nil // Customize reports the bad name
	}
	p := SecretsPath(configPath, cluster)
	s, err := LoadSecrets(p)
	if err != nil || s == nil {
		return "", err
	}
	if o.Encrypt == "" {
		o.Encrypt = s.Encrypt
	}
	if o.Token == "" {
		o.Token = s.Token
	}
	return p, nil
}

// SaveWorkstation keeps the cluster's secrets and updates the workstation
// config at configPath after a successful customisation; see
// WriteWorkstation.
func SaveWorkstation(configPath string, r *Report, sshPub string) ([]string, error) {
	s := &ClusterSecrets{Encrypt: r.Encrypt, Token: r.Token}
	if err := s.Save(SecretsPath(configPath, r.Cluster)); err != nil {
		return nil, err
	}
	return WriteWorkstation(configPath, r, sshPub)
}

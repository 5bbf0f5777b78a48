package vcluster

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit"
	"github.com/rpi-cluster/rpi-cluster/inventory"
)

// DefaultSSHUser is the account the node image lets the cluster key into.
const DefaultSSHUser = "pi"

// EnsureSSHKey returns the path of the cluster's private key in dir
// (id_ed25519, with id_ed25519.pub beside it), generating the pair when it
// does not exist. It is the only way into the nodes.
func EnsureSSHKey(dir string) (string, error) {
	priv := filepath.Join(dir, "id_ed25519")
	pub := priv + ".pub"
	_, errPriv := os.Stat(priv)
	_, errPub := os.Stat(pub)
	if errPriv == nil && errPub == nil {
		return priv, nil
	}
	if errPriv == nil || errPub == nil {
		return "", fmt.Errorf("ssh key %s: only one of the private and public key exists: remove both to generate a new pair", priv)
	}
	if !errors.Is(errPriv, fs.ErrNotExist) {
		return "", fmt.Errorf("ssh key %s: %w", priv, errPriv)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("ssh key: %w", err)
	}
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("ssh key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(sk, "rpi-cluster virtual cluster")
	if err != nil {
		return "", fmt.Errorf("ssh key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pk)
	if err != nil {
		return "", fmt.Errorf("ssh key: %w", err)
	}
	if err := os.WriteFile(priv, pem.EncodeToMemory(block), 0o600); err != nil {
		return "", fmt.Errorf("ssh key: %w", err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " rpi-cluster virtual cluster\n"
	if err := os.WriteFile(pub, []byte(line), 0o644); err != nil {
		return "", fmt.Errorf("ssh key: %w", err)
	}
	return priv, nil
}

// KnownHosts renders a known_hosts file from the SSH host keys the nodes
// signed for themselves, pinning each node's key on first sight as
// rpi-inventory known-hosts does (in memory: every run is a first sight).
// Unlike the workstation tool, a node left out or without a parseable key
// is an error here: checking must stay on.
func KnownHosts(nodes []apitypes.Node) (string, error) {
	pins, _ := identity.OpenPins("")
	var left strings.Builder
	nodes, err := (&toolkit.Gate{Pins: pins, Warn: &left}).Nodes(nodes)
	if err != nil {
		return "", fmt.Errorf("known_hosts: %w", err)
	}
	data, warnings := inventory.KnownHosts(nodes, pins)
	for _, line := range strings.Split(left.String(), "\n") {
		if w, ok := strings.CutPrefix(line, "warning: "); ok {
			warnings = append(warnings, w)
		}
	}
	if len(warnings) > 0 {
		return "", fmt.Errorf("known_hosts: %s", strings.Join(warnings, "; "))
	}
	return string(data), nil
}

// Workstation is what a workstation needs to drive the virtual cluster.
type Workstation struct {
	// Dir holds the files below.
	Dir string
	// Key is the private key, User the login.
	Key  string
	User string
	// KnownHosts, SSHConfig and Inventory are the written files' paths.
	KnownHosts string
	SSHConfig  string
	Inventory  string
}

// WriteWorkstation writes known_hosts, ssh_config and an Ansible INI
// inventory (inventory.ini) for nodes into dir. Host-key checking is on in
// all of them.
func WriteWorkstation(dir, key, user string, nodes []apitypes.Node) (*Workstation, error) {
	if user == "" {
		user = DefaultSSHUser
	}
	absKey, err := filepath.Abs(key)
	if err != nil {
		return nil, fmt.Errorf("write workstation files: %w", err)
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("write workstation files: %w", err)
	}
	kh, err := KnownHosts(nodes)
	if err != nil {
		return nil, err
	}
	w := &Workstation{
		Dir:        absDir,
		Key:        absKey,
		User:       user,
		KnownHosts: filepath.Join(absDir, "known_hosts"),
		SSHConfig:  filepath.Join(absDir, "ssh_config"),
		Inventory:  filepath.Join(absDir, "inventory.ini"),
	}
	sorted := append([]apitypes.Node(nil), nodes...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })

	var cfg strings.Builder
	fmt.Fprintf(&cfg, "# rpi-cluster virtual cluster: ssh -F %s <node>\n", w.SSHConfig)
	for _, n := range sorted {
		fmt.Fprintf(&cfg, "\nHost %s %s\n  HostName %s\n  User %s\n  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n",
			n.Name, n.Address, n.Address, user, w.Key, w.KnownHosts)
	}

	var inv strings.Builder
	inv.WriteString("# rpi-cluster virtual cluster, written from the agents' /v1/nodes\n[all]\n")
	for _, n := range sorted {
		fmt.Fprintf(&inv, "%s ansible_host=%s\n", n.Name, n.Address)
	}
	fmt.Fprintf(&inv, "\n[all:vars]\nansible_user=%s\nansible_ssh_private_key_file=%s\nansible_python_interpreter=/usr/bin/python3\nansible_ssh_common_args='-o IdentitiesOnly=yes -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes'\n",
		user, w.Key, w.KnownHosts)

	for path, data := range map[string]string{w.KnownHosts: kh, w.SSHConfig: cfg.String(), w.Inventory: inv.String()} {
		if err := writeFileAtomic(path, []byte(data), 0o644); err != nil {
			return nil, fmt.Errorf("write workstation files: %w", err)
		}
	}
	return w, nil
}

func writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

package inventory

import (
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit/fakeagent"
)

func newHostKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newNodeKey(t *testing.T) *identity.Key {
	t.Helper()
	k, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKnownHosts(t *testing.T) {
	good := newHostKey(t)
	other := newHostKey(t)
	authorized := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(good)))
	kb, kc, kx := newNodeKey(t), newNodeKey(t), newNodeKey(t)
	nodes := []apitypes.Node{
		fakeagent.Signed(kb, apitypes.Node{Name: "pi-b", Address: "10.0.0.12", SSHHostKeys: []string{authorized, "ssh-ed25519 not-base64!"}}),
		{Name: "pi-a", Address: "10.0.0.11", SSHHostKeys: []string{authorized}},
		fakeagent.Signed(kc, apitypes.Node{Name: "pi-c", Address: "10.0.0.13", SSHHostKeys: []string{authorized}}),
	}
	pins, _ := identity.OpenPins("")
	pins.Check("pi-b", kb.Public())
	pins.Check("pi-c", kx.Public())
	data, warnings := KnownHosts(nodes, pins)
	if got := strings.Count(string(data), "\n"); got != 1 {
		t.Fatalf("want one known_hosts line, got %d:\n%s", got, data)
	}
	if len(warnings) != 3 || !strings.Contains(warnings[0], "pi-a: no signed record") ||
		!strings.Contains(warnings[1], "pi-b: invalid SSH host key") || !strings.Contains(warnings[2], "pi-c: its record's key") {
		t.Errorf("warnings = %q, want pi-a without a record, pi-b's invalid key and pi-c's unpinned key", warnings)
	}

	// The file must be accepted by an SSH client's known_hosts checker for
	// both the name and the address, and reject another key.
	path := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	check, err := knownhosts.New(path)
	if err != nil {
		t.Fatal(err)
	}
	addr := &net.TCPAddr{IP: net.ParseIP("10.0.0.12"), Port: 22}
	for _, host := range []string{"pi-b:22", "10.0.0.12:22"} {
		if err := check(host, addr, good); err != nil {
			t.Errorf("known_hosts rejects the gossiped key for %s: %v", host, err)
		}
		if err := check(host, addr, other); err == nil {
			t.Errorf("known_hosts accepts a different key for %s", host)
		}
	}
}

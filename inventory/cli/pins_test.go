package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit/fakeagent"
)

// pinnedKeys reads the workstation's pinned node keys.
func pinnedKeys(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("pinned node keys: %v", err)
	}
	m := map[string]string{}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("pinned node keys %s: %v", path, err)
	}
	return m
}

func TestKnownHostsPinsOnFirstSightAndRefusesAChangedKey(t *testing.T) {
	hk1, hk2, hkOld, hkNew := newHostKey(t), newHostKey(t), newHostKey(t), newHostKey(t)
	k1, k2, kNew := newKey(t), newKey(t), newKey(t)
	c := fakeagent.Start(t, []apitypes.Node{
		fakeagent.Signed(k1, apitypes.Node{Name: "pi-1", Address: "127.0.21.1", SSHHostKeys: []string{authorized(hk1)}}),
		fakeagent.Signed(k2, apitypes.Node{Name: "pi-2", Address: "127.0.21.2", SSHHostKeys: []string{authorized(hk2)}}),
		// An agent from before signed records: its host key is not trusted.
		{Name: "pi-3", Address: "127.0.21.3", SSHHostKeys: []string{authorized(hkOld)}},
	})
	dir := t.TempDir()
	cfg, pins, kh := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "known_nodes.json"), filepath.Join(dir, "known_hosts")
	os.WriteFile(cfg, []byte("agents: ["+c.URL("pi-1")+"]\n"), 0o600)

	_, stderr, err := runIn(t, cfg, "known-hosts", "-o", kh)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pinnedKeys(t, pins), map[string]string{
		"pi-1": identity.EncodePublicKey(k1.Public()), "pi-2": identity.EncodePublicKey(k2.Public()),
	}; !maps.Equal(got, want) {
		t.Errorf("pins after first sight = %v, want %v", got, want)
	}
	check, err := knownhosts.New(kh)
	if err != nil {
		t.Fatal(err)
	}
	if err := check("pi-1:22", &net.TCPAddr{IP: net.ParseIP("127.0.21.1"), Port: 22}, hk1); err != nil {
		t.Errorf("pi-1's signed host key not written: %v", err)
	}
	if err := check("pi-3:22", &net.TCPAddr{IP: net.ParseIP("127.0.21.3"), Port: 22}, hkOld); err == nil {
		t.Error("pi-3's unsigned host key was written")
	}
	if !strings.Contains(stderr, "warning: node pi-3: no signed record") || !strings.Contains(stderr, "note: pinned node pi-1") {
		t.Errorf("stderr = %q, want pi-3 skipped and the first-sight pins noted", stderr)
	}
	before, _ := os.ReadFile(kh)

	// pi-1's card is reinstalled (or another machine answers as pi-1).
	c.Update("pi-1", func(n *apitypes.Node) {
		*n = fakeagent.Signed(kNew, apitypes.Node{Name: "pi-1", Address: "127.0.21.1", HTTPPort: n.HTTPPort, Status: n.Status, SSHHostKeys: []string{authorized(hkNew)}})
	})
	for _, args := range [][]string{
		{"known-hosts", "-o", kh},
		{"--list"},
		{"--host", "pi-2"},
	} {
		_, _, err := runIn(t, cfg, args...)
		if err == nil || !errors.Is(err, identity.ErrKeyChanged) {
			t.Fatalf("rpi-inventory %s with pi-1's key changed: error %v, want a refusal", strings.Join(args, " "), err)
		}
		for _, want := range []string{"pi-1", identity.Fingerprint(k1.Public()), identity.Fingerprint(kNew.Public()), "rpi-inventory forget pi-1", pins} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("refusal lacks %q: %v", want, err)
			}
		}
	}
	if after, _ := os.ReadFile(kh); !bytes.Equal(after, before) {
		t.Errorf("known_hosts rewritten after a refusal:\n%s", after)
	}
	if got := pinnedKeys(t, pins)["pi-1"]; got != identity.EncodePublicKey(k1.Public()) {
		t.Errorf("pi-1's pin changed without being asked to: %s", got)
	}

	// The fix the refusal names: forget the node, and it is pinned anew.
	out, _, err := runIn(t, cfg, "forget", "pi-1")
	if err != nil || !strings.Contains(out, "pi-1") {
		t.Fatalf("forget pi-1: %q, %v", out, err)
	}
	if _, _, err := runIn(t, cfg, "known-hosts", "-o", kh); err != nil {
		t.Fatalf("known-hosts after forget: %v", err)
	}
	if got := pinnedKeys(t, pins)["pi-1"]; got != identity.EncodePublicKey(kNew.Public()) {
		t.Errorf("pi-1 after forget pinned to %s, want the new key", got)
	}
	if _, _, err := runIn(t, cfg, "forget", "pi-7"); err == nil || !strings.Contains(err.Error(), "pi-7") {
		t.Errorf("forget of a node never pinned: %v, want an error naming it", err)
	}
}

func TestKnownHostsSkipsForgedAndMismatchedRecords(t *testing.T) {
	good, planted := newHostKey(t), newHostKey(t)
	k1, k2, kOther, k3, k4, k5 := newKey(t), newKey(t), newKey(t), newKey(t), newKey(t), newKey(t)
	node := func(name, addr string) apitypes.Node {
		return apitypes.Node{Name: name, Address: addr, SSHHostKeys: []string{authorized(planted)}}
	}

	// pi-1: its record was changed after it was signed.
	tampered := fakeagent.Signed(k1, node("pi-1", "127.0.22.1"))
	tampered.SignedRecord.Body = bytes.Replace(tampered.SignedRecord.Body, []byte(`"v":0`), []byte(`"v":9`), 1)
	// pi-2: a record carrying pi-2's key, signed by another.
	otherSigner := fakeagent.Signed(k2, node("pi-2", "127.0.22.2"))
	otherSigner.SignedRecord.Sig = kOther.Sign(identity.PurposeRecord, otherSigner.SignedRecord.Body)
	// pi-3: a valid record, of another node.
	elsewhere := fakeagent.Signed(k3, node("pi-9", "127.0.22.3"))
	elsewhere.Name = "pi-3"
	// pi-4: a valid record of pi-4, for another address.
	moved := fakeagent.Signed(k4, node("pi-4", "127.0.22.99"))
	moved.Address = "127.0.22.4"
	honest := fakeagent.Signed(k5, apitypes.Node{Name: "pi-5", Address: "127.0.22.5", SSHHostKeys: []string{authorized(good)}})

	c := fakeagent.Start(t, []apitypes.Node{tampered, otherSigner, elsewhere, moved, honest})
	dir := t.TempDir()
	cfg, kh := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "known_hosts")
	_, stderr, err := runIn(t, cfg, "known-hosts", "-o", kh, "--agent", c.URL("pi-5"))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(kh)
	if lines := strings.Split(strings.TrimSpace(string(data)), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "pi-5,127.0.22.5 ") {
		t.Errorf("known_hosts = %q, want pi-5's line alone", data)
	}
	if strings.Contains(string(data), authorized(planted)[12:]) {
		t.Errorf("known_hosts carries the planted key:\n%s", data)
	}
	for _, want := range []string{`node "pi-1"`, `node "pi-2"`, `node "pi-3"`, `node "pi-4"`} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not report %s:\n%s", want, stderr)
		}
	}
	checkTerminalSafe(t, "stderr", stderr)
	if got := slices.Sorted(maps.Keys(pinnedKeys(t, filepath.Join(dir, "known_nodes.json")))); !slices.Equal(got, []string{"pi-5"}) {
		t.Errorf("pinned %q, want pi-5 alone: nothing is pinned from a record that does not check out", got)
	}
}

// A workstation without a config directory yet (agents named by --agent
// alone) gets one for its pins, as ssh makes ~/.ssh.
func TestPinsMakeTheirDirectory(t *testing.T) {
	c := fakeagent.Start(t, []apitypes.Node{fakeagent.Signed(newKey(t), apitypes.Node{Name: "pi-1", Address: "127.0.25.1"})})
	cfg := filepath.Join(t.TempDir(), "rpi-cluster", "config.yaml")
	if _, _, err := runIn(t, cfg, "--list", "--agent", c.URL("pi-1")); err != nil {
		t.Fatal(err)
	}
	if got := pinnedKeys(t, filepath.Join(filepath.Dir(cfg), "known_nodes.json")); len(got) != 1 {
		t.Errorf("pins = %v, want pi-1's", got)
	}
}

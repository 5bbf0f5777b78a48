package vcluster

import (
	"crypto/ed25519"
	"crypto/rand"
	"net/netip"
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

func TestParseProcRoutes(t *testing.T) {
	const table = `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth0	00000000	010200C0	0003	0	0	0	00000000	0	0	0
docker0	000011AC	00000000	0001	0	0	0	0000FFFF	0	0	0
eth0	000200C0	00000000	0001	0	0	0	00FFFFFF	0	0	0
`
	routes, err := parseProcRoutes(strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"eth0 0.0.0.0/0", "docker0 172.17.0.0/16", "eth0 192.0.2.0/24"}
	if len(routes) != len(want) {
		t.Fatalf("got %d routes, want %d: %v", len(routes), len(want), routes)
	}
	for i, r := range routes {
		if got := r.Iface + " " + r.Dst.String(); got != want[i] {
			t.Errorf("route %d = %q, want %q", i, got, want[i])
		}
	}
	if r, ok := overlappingRoute(routes, netip.MustParsePrefix("172.17.5.0/24")); !ok || r.Iface != "docker0" {
		t.Errorf("172.17.5.0/24 should overlap docker0, got %v %v", r, ok)
	}
	if _, ok := overlappingRoute(routes, netip.MustParsePrefix(DefaultSubnet)); ok {
		t.Errorf("%s overlaps only the default route, which does not count", DefaultSubnet)
	}
}

func TestNodeIP(t *testing.T) {
	subnet := netip.MustParsePrefix("10.213.7.0/24")
	ip, err := nodeIP(subnet, 1)
	if err != nil || ip.String() != "10.213.7.11" {
		t.Fatalf("node 1: %v %v, want 10.213.7.11", ip, err)
	}
	if _, err := nodeIP(subnet, 0); err == nil {
		t.Error("node 0 should be refused")
	}
	if _, err := nodeIP(subnet, 250); err == nil {
		t.Error("node 250 should be refused")
	}
}

func TestSourceURIs(t *testing.T) {
	deb822 := "Types: deb\n# http://snapshot.example/\nURIs: http://mirror.example/debian\nSuites: bookworm\n"
	oneLine := "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main\ndeb http://sec.example/debian-security bookworm-security main\n"
	if got := sourceURIs(deb822); len(got) != 1 || got[0] != "http://mirror.example/debian" {
		t.Errorf("deb822: %v", got)
	}
	if got := sourceURIs(oneLine); len(got) != 2 || got[0] != "http://mirror.example/debian/" {
		t.Errorf("one-line: %v", got)
	}

	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sources.list.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sources.list.d", "x.sources"), []byte("URIs: https://other.example/apt\n"+deb822), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := AptMirror(dir)
	if err != nil || m != "http://mirror.example/debian" {
		t.Errorf("AptMirror = %q, %v", m, err)
	}
	if _, err := AptMirror(t.TempDir()); err == nil || !strings.Contains(err.Error(), "--mirror") {
		t.Errorf("no sources: want an error pointing at --mirror, got %v", err)
	}
}

func TestBaseKeyIgnoresPackageOrder(t *testing.T) {
	a := ImageOptions{Suite: "bookworm", Mirror: "http://m/debian", Packages: []string{"a", "b"}}
	b := ImageOptions{Suite: "bookworm", Mirror: "http://m/debian", Packages: []string{"b", "a"}}
	c := ImageOptions{Suite: "bookworm", Mirror: "http://m/debian", Packages: []string{"a", "b", "c"}}
	if a.BaseKey() != b.BaseKey() {
		t.Error("package order changed the base key")
	}
	if a.BaseKey() == c.BaseKey() {
		t.Error("another package list gave the same base key")
	}
}

func TestSSHKeyAndWorkstationFiles(t *testing.T) {
	dir := t.TempDir()
	key, err := EnsureSSHKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		t.Fatalf("generated private key does not parse: %v", err)
	}
	if st, _ := os.Stat(key); st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v, want 0600", st.Mode().Perm())
	}
	again, err := EnsureSSHKey(dir)
	if err != nil || again != key {
		t.Fatalf("second EnsureSSHKey: %q %v", again, err)
	}
	if data2, _ := os.ReadFile(key); string(data2) != string(data) {
		t.Fatal("EnsureSSHKey replaced an existing key")
	}
	os.Remove(key + ".pub")
	if _, err := EnsureSSHKey(dir); err == nil {
		t.Fatal("a private key without its public half should be an error, not silently replaced")
	}

	hostKey := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	// The host keys come from the records the nodes signed.
	kb, _ := identity.Generate()
	ka, _ := identity.Generate()
	nodes := []apitypes.Node{
		fakeagent.Signed(kb, apitypes.Node{Name: "rpi-b", Address: "10.213.7.12", SSHHostKeys: []string{hostKey}}),
		fakeagent.Signed(ka, apitypes.Node{Name: "rpi-a", Address: "10.213.7.11", SSHHostKeys: []string{hostKey}}),
	}
	ws, err := WriteWorkstation(filepath.Join(dir, "ws"), key, "", nodes)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := knownhosts.New(ws.KnownHosts)
	if err != nil {
		t.Fatalf("known_hosts does not parse: %v", err)
	}
	addr := &netipAddr{"10.213.7.12:22"}
	if err := cb("rpi-b:22", addr, signer.PublicKey()); err != nil {
		t.Errorf("known_hosts rejects rpi-b's own key: %v", err)
	}
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := ssh.NewPublicKey(otherPub)
	if err := cb("rpi-b:22", addr, other); err == nil {
		t.Error("known_hosts accepts a key the node never gossiped")
	}
	inv, _ := os.ReadFile(ws.Inventory)
	for _, want := range []string{"rpi-a ansible_host=10.213.7.11", "ansible_user=pi", "StrictHostKeyChecking=yes", ws.KnownHosts} {
		if !strings.Contains(string(inv), want) {
			t.Errorf("inventory lacks %q:\n%s", want, inv)
		}
	}
	if strings.Index(string(inv), "rpi-a") > strings.Index(string(inv), "rpi-b") {
		t.Error("inventory hosts are not sorted by name")
	}

	if _, err := KnownHosts([]apitypes.Node{{Name: "rpi-c", Address: "10.213.7.13"}}); err == nil {
		t.Error("a node without host keys should be an error: host-key checking must stay on")
	}
	if _, err := KnownHosts([]apitypes.Node{{Name: "rpi-c", Address: "10.213.7.13", SSHHostKeys: []string{hostKey}}}); err == nil {
		t.Error("a node without a signed record should be an error: its host keys are not vouched for")
	}
	if _, err := KnownHosts([]apitypes.Node{{Name: "rpi-c", SSHHostKeys: []string{"ssh-ed25519 not-base64"}}}); err == nil {
		t.Error("a malformed host key should be an error")
	}
}

// netipAddr is a net.Addr for knownhosts callbacks.
type netipAddr struct{ s string }

func (a *netipAddr) Network() string { return "tcp" }
func (a *netipAddr) String() string  { return a.s }

// Extra agent arguments reach systemd quoted, so spaces, quotes, '%' and
// '$' arrive at the agent as given rather than as specifiers or variables.
func TestAgentArgsDropIn(t *testing.T) {
	got := agentArgsDropIn([]string{"--log-level", "debug", `a "b" c`, "100%", "$HOME", `back\slash`})
	want := `ExecStart=/usr/local/bin/rpi-agent --config /etc/rpi-cluster/agent.yaml "--log-level" "debug" "a \"b\" c" "100%%" "$$HOME" "back\\slash"` + "\n"
	if !strings.Contains(got, "[Service]\nExecStart=\n") || !strings.HasSuffix(got, want) {
		t.Errorf("drop-in:\n%s\nwant it to reset ExecStart and end with:\n%s", got, want)
	}
}

// The agent's unit mounts a fresh /proc; the lxcfs drop-in binds each file
// the monitor reads back over it, from where the node sees lxcfs a second
// time.
func TestLXCFSDropIn(t *testing.T) {
	got := lxcfsDropIn()
	for _, f := range lxcfsProcFiles {
		want := "BindReadOnlyPaths=" + lxcfsNodeDir + "/" + f + ":/proc/" + f + "\n"
		if !strings.Contains(got, want) {
			t.Errorf("drop-in lacks %q:\n%s", want, got)
		}
	}
	if !strings.HasPrefix(got, "# ") || !strings.Contains(got, "\n[Service]\n") {
		t.Errorf("drop-in is not a [Service] section:\n%s", got)
	}
}

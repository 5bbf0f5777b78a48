package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit/fakeagent"
)

// hostileNames are node names a rogue member gossiped against the
// workstation: each would change what Ansible or ssh does, or what a
// terminal shows, if it reached a file, an argument or the screen.
var hostileNames = []string{
	"evil ansible_connection=local",
	"all",
	"s1,127.0.20.1",
	"pi-9\nevil ansible_connection=local",
	"\x1b]0;owned\x07\x1b[2Jpi",
	strings.Repeat("n", 300),
	"nginx_webserver", // a valid name, but the inventory group of a service
}

// hostileCluster is pi-1, the one honest node, beside nodes with hostile
// names and nodes gossiping hostile service names, all running
// nginx_webserver.
func hostileCluster(t *testing.T) *fakeagent.Cluster {
	t.Helper()
	nodes := []apitypes.Node{{Name: "pi-1", Address: "127.0.20.1", Services: []string{"nginx_webserver"}}}
	for _, name := range hostileNames {
		nodes = append(nodes, apitypes.Node{Name: name, Address: "127.0.20.9", Services: []string{"nginx_webserver"}})
	}
	nodes = append(nodes,
		apitypes.Node{Name: "pi-script", Address: "127.0.20.9", Services: []string{"nginx_webserver", "<script>"}},
		apitypes.Node{Name: "pi-path", Address: "127.0.20.9", Services: []string{"nginx_webserver", "../../etc/passwd"}},
	)
	return fakeagent.Start(t, nodes)
}

// checkTerminalSafe fails unless every line of stderr is one of the tools'
// own lines (so nothing gossiped started a line of its own) and no control
// character reached it.
func checkTerminalSafe(t *testing.T, what, out string) {
	t.Helper()
	if strings.ContainsAny(out, "\x1b\x07\r") {
		t.Errorf("%s carries a control character: %q", what, out)
	}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if line != "" && !strings.HasPrefix(line, "warning: ") && !strings.HasPrefix(line, "note: ") {
			t.Errorf("%s has a line the tool did not start: %q", what, line)
		}
		if len(line) > 400 {
			t.Errorf("%s has a %d-byte line: a long gossiped name is printed whole", what, len(line))
		}
	}
}

func TestHostileNodesNeverReachTheINI(t *testing.T) {
	c := hostileCluster(t)
	dir := t.TempDir()
	pb := filepath.Join(dir, "site.yml")
	os.WriteFile(pb, []byte("- hosts: nginx_webserver\n  tasks: []\n- hosts: all\n  tasks: []\n"), 0o644)
	ini := filepath.Join(dir, "hosts.ini")
	_, stderr, err := run(t, "hosts", pb, "-o", ini, "--agent", c.URL("pi-1"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(ini)
	if err != nil {
		t.Fatal(err)
	}
	var hostLines []string
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") || strings.HasPrefix(line, "ansible_") {
			continue
		}
		hostLines = append(hostLines, line)
	}
	want := []string{"pi-1 ansible_host=127.0.20.1", "pi-1 ansible_host=127.0.20.1"} // [nginx_webserver] and [all]
	if !slices.Equal(hostLines, want) {
		t.Errorf("INI host lines = %q, want only pi-1's:\n%s", hostLines, data)
	}
	checkTerminalSafe(t, "stderr", stderr)
	for _, want := range []string{`"evil ansible_connection=local"`, `"all"`, `"s1,127.0.20.1"`, `"pi-9\nevil`, `"\x1b]0;owned\a\x1b[2Jpi"`, `"nnnnnnnnnnnnnnnnnnnn"...`, `"<script>"`, `"../../etc/passwd"`, `node "nginx_webserver"`} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not report %s:\n%s", want, stderr)
		}
	}
}

func TestHostileNodesNeverReachTheInventoryJSON(t *testing.T) {
	c := hostileCluster(t)
	out, stderr, err := run(t, "--agent", c.URL("pi-1"), "--list")
	if err != nil {
		t.Fatal(err)
	}
	var inv map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &inv); err != nil {
		t.Fatalf("--list is not JSON: %v\n%s", err, out)
	}
	var groups []string
	for g := range inv {
		groups = append(groups, g)
	}
	slices.Sort(groups)
	if want := []string{"_meta", "alive", "all", "failed", "left", "nginx_webserver", "suspect"}; !slices.Equal(groups, want) {
		t.Errorf("groups = %q, want %q", groups, want)
	}
	var list struct {
		All  struct{ Hosts []string } `json:"all"`
		Meta struct {
			Hostvars map[string]any `json:"hostvars"`
		} `json:"_meta"`
	}
	json.Unmarshal([]byte(out), &list)
	if !slices.Equal(list.All.Hosts, []string{"pi-1"}) || len(list.Meta.Hostvars) != 1 {
		t.Errorf("hosts = %q, hostvars of %d hosts; want pi-1 alone", list.All.Hosts, len(list.Meta.Hostvars))
	}
	checkTerminalSafe(t, "stderr", stderr)
	if _, _, err := run(t, "--agent", c.URL("pi-1"), "--host", "all"); err == nil {
		t.Error(`--host all answered`)
	}
}

// A member named "s1,127.0.20.1" must not get its SSH host key written
// for s1's address.
func TestKnownHostsNameCannotClaimAnotherAddress(t *testing.T) {
	honest, evil := newHostKey(t), newHostKey(t)
	k1, k2 := newKey(t), newKey(t)
	c := fakeagent.Start(t, []apitypes.Node{
		fakeagent.Signed(k1, apitypes.Node{Name: "s1", Address: "127.0.20.1", SSHHostKeys: []string{authorized(honest)}}),
		fakeagent.Signed(k2, apitypes.Node{Name: "s1,127.0.20.1", Address: "127.0.20.9", SSHHostKeys: []string{authorized(evil)}}),
	})
	path := filepath.Join(t.TempDir(), "known_hosts")
	_, stderr, err := run(t, "known-hosts", "-o", path, "--agent", c.URL("s1"))
	if err != nil {
		t.Fatal(err)
	}
	check, err := knownhosts.New(path)
	if err != nil {
		t.Fatal(err)
	}
	addr := &net.TCPAddr{IP: net.ParseIP("127.0.20.1"), Port: 22}
	for _, host := range []string{"127.0.20.1:22", "s1:22"} {
		if err := check(host, addr, evil); err == nil {
			t.Errorf("known_hosts accepts the rogue member's key for %s", host)
		}
		if err := check(host, addr, honest); err != nil {
			t.Errorf("known_hosts rejects s1's own key for %s: %v", host, err)
		}
	}
	checkTerminalSafe(t, "stderr", stderr)
}

func newHostKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	k, err := ssh.NewPublicKey(newKey(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func authorized(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func newKey(t *testing.T) *identity.Key {
	t.Helper()
	k, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// runIn runs rpi-inventory with the workstation config at cfg, so that its
// pinned node keys (beside it) persist from one run to the next.
func runIn(t *testing.T, cfg string, args ...string) (string, string, error) {
	t.Helper()
	t.Setenv("RPI_AGENT", "")
	t.Setenv("RPI_TOKEN", "")
	t.Setenv("RPI_CONFIG", cfg)
	var out, errOut bytes.Buffer
	err := Run(context.Background(), append([]string{"rpi-inventory"}, args...), &out, &errOut)
	return out.String(), errOut.String(), err
}

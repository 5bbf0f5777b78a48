package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit/fakeagent"
)

// hostileNames are node names a rogue member gossiped: as an
// ansible-playbook --limit, a host in the run's inventory or a line of a
// rendered template, each would act on other hosts than the one chosen.
var hostileNames = []string{
	"all",
	"evil ansible_connection=local",
	"s1,127.0.20.1",
	"pi-9\n    server 10.6.6.6:80;",
	"\x1b]0;owned\x07\x1b[2Jpi",
	strings.Repeat("n", 300),
	"nginx_webserver", // valid, but the service's inventory group
}

// hostileCluster: pi-1 runs the load balancer, pi-2 is the one honest idle
// node, and every hostile node is idler still, so a placement that took
// them would choose them first.
func hostileCluster(t *testing.T) *fakeagent.Cluster {
	t.Helper()
	nodes := []apitypes.Node{
		{Name: "pi-1", Services: []string{"nginx_load_balancer"}, PhiThreshold: 8, Monitoring: mon(3)},
		{Name: "pi-2", PhiThreshold: 8, Monitoring: mon(0.5)},
	}
	for _, name := range hostileNames {
		nodes = append(nodes, apitypes.Node{Name: name, PhiThreshold: 8, Monitoring: mon(0)})
	}
	nodes = append(nodes,
		apitypes.Node{Name: "pi-script", Services: []string{"<script>"}, PhiThreshold: 8, Monitoring: mon(0)},
		apitypes.Node{Name: "pi-path", Services: []string{"../../etc/passwd"}, PhiThreshold: 8, Monitoring: mon(0)},
	)
	return fakeagent.Start(t, nodes)
}

// checkNoControl fails if out carries a character a terminal would obey.
func checkNoControl(t *testing.T, what, out string) {
	t.Helper()
	if strings.ContainsAny(out, "\x1b\x07\r") {
		t.Errorf("%s carries a control character: %q", what, out)
	}
}

func TestLaunchNeverHandsAHostileNameToAnsible(t *testing.T) {
	c := hostileCluster(t)
	_, dir := fakeAnsible(t)
	build := filepath.Join(t.TempDir(), "build")
	out, err := launch(t, "1", "nginx_webserver", "--agent", c.URL("pi-1"), "--build-dir", build)
	if err != nil {
		t.Fatal(err)
	}
	cs := calls(t, dir)
	if len(cs) != 2 || !strings.Contains(cs[0], "--limit pi-2 ") || !strings.Contains(cs[1], "--limit pi-1 ") {
		t.Fatalf("ansible-playbook calls = %q, want the install limited to pi-2 and the re-apply to pi-1", cs)
	}
	for i := 1; i <= 2; i++ {
		data, err := os.ReadFile(filepath.Join(dir, "inventory-"+string(rune('0'+i))+".json"))
		if err != nil {
			t.Fatal(err)
		}
		var inv struct {
			All struct {
				Hosts map[string]any `json:"hosts"`
			} `json:"all"`
		}
		if err := json.Unmarshal(data, &inv); err != nil {
			t.Fatal(err)
		}
		var hosts []string
		for h := range inv.All.Hosts {
			hosts = append(hosts, h)
		}
		slices.Sort(hosts)
		if !slices.Equal(hosts, []string{"pi-1", "pi-2"}) {
			t.Errorf("run %d inventory hosts = %q, want pi-1 and pi-2", i, hosts)
		}
	}
	up, err := os.ReadFile(filepath.Join(build, "nginx_load_balancer", "upstream.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(up), "    server "); got != 1 || !strings.Contains(string(up), "# pi-2\n") {
		t.Errorf("upstream.conf, want pi-2's server alone:\n%s", up)
	}
	checkNoControl(t, "rpi-launch output", out)
	if !strings.Contains(out, `"evil ansible_connection=local"`) || !strings.Contains(out, "excluded nginx_webserver      127.0.0.1       named like the service's inventory group") ||
		!strings.Contains(out, `node "nginx_webserver" left out of the inventory`) {
		t.Errorf("output does not report the nodes left out:\n%s", out)
	}
}

func TestLaunchPinsNodesAndRefusesAChangedKey(t *testing.T) {
	k1, k2, kNew := newKey(t), newKey(t), newKey(t)
	c := fakeagent.Start(t, []apitypes.Node{
		fakeagent.Signed(k1, apitypes.Node{Name: "pi-1", Address: "127.0.23.1", Services: []string{"nginx_load_balancer"}, PhiThreshold: 8, Monitoring: mon(3)}),
		fakeagent.Signed(k2, apitypes.Node{Name: "pi-2", Address: "127.0.23.2", PhiThreshold: 8, Monitoring: mon(0.5)}),
	})
	_, dir := fakeAnsible(t)
	t.Setenv("RPI_SSH_PORT", strconv.Itoa(fakeSSH(t, "127.0.23.1", "127.0.23.2")))
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	t.Setenv("RPI_WORKSTATION_CONFIG", cfg)
	pins := filepath.Join(filepath.Dir(cfg), "known_nodes.json")
	if _, err := launch(t, "1", "nginx_webserver", "--agent", c.URL("pi-1"), "--build-dir", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(pins)
	if err != nil || !strings.Contains(string(data), identity.EncodePublicKey(k2.Public())) {
		t.Fatalf("pinned node keys after the first launch: %s, %v", data, err)
	}
	c.Update("pi-2", func(n *apitypes.Node) {
		*n = fakeagent.Signed(kNew, apitypes.Node{Name: "pi-2", Address: n.Address, HTTPPort: n.HTTPPort, Status: n.Status,
			Services: n.Services, PhiThreshold: 8, Monitoring: mon(0.5)})
	})
	writes := len(c.Writes())
	_, err = launch(t, "--remove", "1", "nginx_webserver", "--agent", c.URL("pi-1"), "--build-dir", t.TempDir())
	if !errors.Is(err, identity.ErrKeyChanged) || !strings.Contains(err.Error(), "rpi-inventory forget pi-2") {
		t.Fatalf("--remove with pi-2's key changed: %v, want a refusal naming the fix", err)
	}
	if cs := calls(t, dir); len(cs) != 2 || len(c.Writes()) != writes {
		t.Errorf("after the refusal ansible-playbook ran %d times (want the first launch's 2) and %d writes were made", len(cs), len(c.Writes())-writes)
	}
}

func TestMetaListShowsNoHostileText(t *testing.T) {
	t.Setenv("RPI_WORKSTATION_CONFIG", filepath.Join(t.TempDir(), "none.yaml"))
	c := hostileCluster(t)
	c.Update("pi-2", func(n *apitypes.Node) { n.Status = "alive\x1b[8m" })
	var out, errOut bytes.Buffer
	if err := RunMeta(context.Background(), []string{"rpi-meta", "list", "--agent", c.URL("pi-1")}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	checkNoControl(t, "rpi-meta list", out.String())
	checkNoControl(t, "rpi-meta list stderr", errOut.String())
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	// nginx_webserver is a valid name here: no node runs that service, so
	// there is no such group.
	if len(lines) != 4 || !strings.HasPrefix(lines[1], "nginx_webserver ") || !strings.HasPrefix(lines[2], "pi-1 ") || !strings.HasPrefix(lines[3], "pi-2 ") {
		t.Fatalf("rpi-meta list, want the header, nginx_webserver, pi-1 and pi-2:\n%s", out.String())
	}
	if !strings.Contains(lines[3], `"alive\x1b[8m"`) {
		t.Errorf("pi-2's status is not shown escaped: %q", lines[3])
	}
	if !strings.Contains(errOut.String(), `"pi-9\n    server 10.6.6.6:80;"`) {
		t.Errorf("stderr does not report the node left out:\n%s", errOut.String())
	}
}

func TestStatusShowsNoHostileText(t *testing.T) {
	c := cluster(t)
	fakeAnsible(t)
	c.SetDesired("\x1b[2Jgone", 1)
	c.SetDesired("../../etc/passwd", 1)
	c.SetDesired("nginx_webserver", 1)
	var out bytes.Buffer
	if err := RunLaunch(context.Background(), []string{"rpi-launch", "status", "--agent", c.URL("pi-1")}, &out, &out); err != nil {
		t.Fatal(err)
	}
	checkNoControl(t, "rpi-launch status", out.String())
	var rows []string
	for _, line := range strings.Split(out.String(), "\n") {
		if line != "" && !strings.HasPrefix(line, "warning: ") && !strings.HasPrefix(line, "SERVICE") {
			rows = append(rows, strings.Fields(line)[0])
		}
	}
	if !slices.Equal(rows, []string{"nginx_load_balancer", "nginx_webserver"}) {
		t.Errorf("status rows %q, want the two valid services:\n%s", rows, out.String())
	}
	if !strings.Contains(out.String(), `"../../etc/passwd"`) {
		t.Errorf("status does not report the invalid desired entry:\n%s", out.String())
	}
}

func newKey(t *testing.T) *identity.Key {
	t.Helper()
	k, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

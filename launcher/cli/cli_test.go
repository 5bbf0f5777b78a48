package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit/fakeagent"
)

func mon(load float64) apitypes.Monitoring {
	return apitypes.Monitoring{CPUs: 4, MemTotal: 100, MemUsed: 10, Load1: load, Load5: load, Load15: load}
}

// cluster: pi-1 runs the load balancer and is busy; pi-2 and pi-3 are idle;
// pi-4 is busier; pi-5 failed; pi-6 is suspected (phi 9 >= 8).
func cluster(t *testing.T) *fakeagent.Cluster {
	return fakeagent.Start(t, []apitypes.Node{
		{Name: "pi-1", Services: []string{"nginx_load_balancer"}, PhiThreshold: 8, Monitoring: mon(3)},
		{Name: "pi-2", PhiThreshold: 8, Monitoring: mon(0.1)},
		{Name: "pi-3", PhiThreshold: 8, Monitoring: mon(0.2)},
		{Name: "pi-4", PhiThreshold: 8, Monitoring: mon(3.5)},
		{Name: "pi-5", Status: apitypes.StatusFailed, PhiThreshold: 8, Monitoring: mon(0)},
		{Name: "pi-6", Phi: 9, PhiThreshold: 8, Monitoring: mon(0)},
	}, "pi-5")
}

// fakeAnsible is an ansible-playbook stand-in: it logs each call (args) and
// the rendered upstream it was given, and fails the hosts in $FAKE_FAIL.
func fakeAnsible(t *testing.T) (path, dir string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "ansible-playbook")
	script := `#!/bin/sh
echo "$@" >> "$FAKE_DIR/calls"
limit=""; inv=""
for a in "$@"; do
	case "$prev" in --limit) limit="$a" ;; -i) inv="$a" ;; esac
	prev="$a"
done
cp "$inv" "$FAKE_DIR/inventory-$(wc -l < "$FAKE_DIR/calls" | tr -d ' ').json"
echo "PLAY RECAP *****"
for h in $(echo "$limit" | tr ',' ' '); do
	case ",$FAKE_FAIL," in
	*",$h,"*) echo "$h : ok=1 changed=0 unreachable=0 failed=1 skipped=0 rescued=0 ignored=0" ;;
	*) echo "$h : ok=4 changed=1 unreachable=0 failed=0 skipped=0 rescued=0 ignored=0" ;;
	esac
done
`
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FAKE_DIR", dir)
	t.Setenv("FAKE_FAIL", "")
	t.Setenv("RPI_ANSIBLE_PLAYBOOK", path)
	t.Setenv("RPI_PLAYBOOKS", "../../playbooks")
	t.Setenv("RPI_TEMPLATES", "../../templates")
	t.Setenv("RPI_WORKSTATION_CONFIG", filepath.Join(dir, "none.yaml"))
	t.Setenv("RPI_TOKEN", "")
	t.Setenv("RPI_AGENT", "")
	t.Setenv("RPI_SSH_PORT", strconv.Itoa(fakeSSH(t, "127.0.0.1")))
	return path, dir
}

// fakeSSH greets connections on one port of every loopback address in
// hosts as an SSH server does, for preflight's reachability check; it
// returns the port.
func fakeSSH(t *testing.T, hosts ...string) int {
	t.Helper()
	for range 20 {
		first, err := net.Listen("tcp", net.JoinHostPort(hosts[0], "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		lns := []net.Listener{first}
		for _, h := range hosts[1:] {
			ln, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
			if err != nil {
				break // the port is taken there: try another
			}
			lns = append(lns, ln)
		}
		if len(lns) < len(hosts) {
			for _, ln := range lns {
				ln.Close()
			}
			continue
		}
		for _, ln := range lns {
			t.Cleanup(func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Write([]byte("SSH-2.0-OpenSSH_9.2p1\r\n"))
					c.Close()
				}
			}()
		}
		return port
	}
	t.Fatalf("no port free on all of %v", hosts)
	return 0
}

func calls(t *testing.T, dir string) []string {
	data, err := os.ReadFile(filepath.Join(dir, "calls"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

func launch(t *testing.T, args ...string) (string, error) {
	var out bytes.Buffer
	err := RunLaunch(context.Background(), append([]string{"rpi-launch"}, args...), &out, &out)
	t.Logf("rpi-launch %s:\n%s", strings.Join(args, " "), out.String())
	return out.String(), err
}

func TestLaunchRecordsOnlySuccessfulHostsAndReappliesDependents(t *testing.T) {
	c := cluster(t)
	_, dir := fakeAnsible(t)
	t.Setenv("FAKE_FAIL", "pi-3")
	build := filepath.Join(t.TempDir(), "build")
	out, err := launch(t, "2", "nginx_webserver", "--agent", c.URL("pi-4"), "--build-dir", build, "--", "--diff")
	if err == nil || !strings.Contains(err.Error(), "pi-3: playbook failed (failed=1 unreachable=0)") {
		t.Fatalf("error = %v, want pi-3 reported", err)
	}
	want := []fakeagent.Write{{Node: "pi-2", Method: "PUT", Service: "nginx_webserver"}}
	if got := c.Writes(); !reflect.DeepEqual(got, want) {
		t.Errorf("writes = %v, want only %v (sent to pi-2's own agent)", got, want)
	}
	cs := calls(t, dir)
	if len(cs) != 2 {
		t.Fatalf("want the install run and the load balancer re-apply, got %q", cs)
	}
	if !strings.Contains(cs[0], "--limit pi-2,pi-3") || !strings.HasSuffix(cs[0], "--diff ../../playbooks/nginx_webserver/install.yml") {
		t.Errorf("install call = %q", cs[0])
	}
	if !strings.Contains(cs[1], "--limit pi-1") || !strings.HasSuffix(cs[1], "nginx_load_balancer/install.yml") {
		t.Errorf("re-apply call = %q", cs[1])
	}
	// The run's inventory had the chosen nodes in the service group.
	var inv struct {
		All struct {
			Children map[string]struct {
				Hosts map[string]any `json:"hosts"`
			} `json:"children"`
		} `json:"all"`
	}
	data, _ := os.ReadFile(filepath.Join(dir, "inventory-1.json"))
	if err := json.Unmarshal(data, &inv); err != nil {
		t.Fatal(err)
	}
	if g := inv.All.Children["nginx_webserver"].Hosts; len(g) != 2 || g["pi-2"] == nil && g["pi-3"] == nil {
		t.Errorf("run inventory nginx_webserver group = %v, want pi-2 and pi-3", g)
	}
	// The load balancer's upstream was re-rendered with the one web server
	// that succeeded.
	up, err := os.ReadFile(filepath.Join(build, "nginx_load_balancer", "upstream.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(up), "# pi-2") || strings.Contains(string(up), "pi-3") {
		t.Errorf("upstream:\n%s", up)
	}
	if !strings.Contains(out, "excluded pi-5") || !strings.Contains(out, "phi 9.00 >= threshold 8.00") {
		t.Errorf("plan output lacks exclusions:\n%s", out)
	}
}

func TestLaunchDryRunRunsNothing(t *testing.T) {
	c := cluster(t)
	_, dir := fakeAnsible(t)
	build := filepath.Join(t.TempDir(), "build")
	out, err := launch(t, "--agent", c.URL("pi-1"), "--dry-run", "--build-dir", build, "1", "nginx_webserver")
	if err != nil {
		t.Fatal(err)
	}
	if cs := calls(t, dir); cs != nil || len(c.Writes()) != 0 {
		t.Errorf("dry run ran %q and wrote %v", cs, c.Writes())
	}
	if _, err := os.Stat(build); !os.IsNotExist(err) {
		t.Errorf("dry run wrote the build dir: %v", err)
	}
	for _, want := range []string{"chosen   pi-2", "eligible pi-3", "--- nginx_load_balancer/upstream.conf", "# pi-2", "dry run: nothing was run"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry-run output lacks %q", want)
		}
	}
}

func TestLaunchTooFewCandidates(t *testing.T) {
	c := cluster(t)
	_, dir := fakeAnsible(t)
	_, err := launch(t, "--agent", c.URL("pi-1"), "5", "nginx_webserver")
	if err == nil || !strings.Contains(err.Error(), "want 5 nodes, only 4 candidates") || !strings.Contains(err.Error(), "pi-5 (status failed)") {
		t.Errorf("error = %v", err)
	}
	if calls(t, dir) != nil {
		t.Error("ansible-playbook ran")
	}
	if _, err := launch(t, "--agent", c.URL("pi-1"), "x", "nginx_webserver"); err == nil || !strings.Contains(err.Error(), "want a whole number") {
		t.Errorf("bad N error = %v", err)
	}
	if _, err := launch(t, "--agent", c.URL("pi-1"), "1", "no_such_service"); err == nil || !strings.Contains(err.Error(), "no playbook") {
		t.Errorf("unknown service error = %v", err)
	}
}

func TestRemoveBusiest(t *testing.T) {
	c := cluster(t)
	_, dir := fakeAnsible(t)
	if _, err := launch(t, "--agent", c.URL("pi-1"), "--build-dir", t.TempDir(), "3", "nginx_webserver"); err != nil {
		t.Fatal(err)
	}
	// pi-2, pi-3 and pi-1 run it now; pi-1 is the busiest.
	if _, err := launch(t, "--agent", c.URL("pi-2"), "--build-dir", t.TempDir(), "--remove", "1", "nginx_webserver"); err != nil {
		t.Fatal(err)
	}
	if got := c.Services("pi-1"); !reflect.DeepEqual(got, []string{"nginx_load_balancer"}) {
		t.Errorf("pi-1 services = %v", got)
	}
	cs := calls(t, dir)
	if len(cs) != 4 || !strings.Contains(cs[2], "--limit pi-1 ") || !strings.HasSuffix(cs[2], "uninstall.yml") {
		t.Errorf("calls = %q", cs)
	}
}

func meta(t *testing.T, args ...string) (string, error) {
	var out bytes.Buffer
	err := RunMeta(context.Background(), append([]string{"rpi-meta"}, args...), &out, &out)
	return out.String(), err
}

func TestMeta(t *testing.T) {
	t.Setenv("RPI_WORKSTATION_CONFIG", filepath.Join(t.TempDir(), "none.yaml"))
	c := fakeagent.Start(t, []apitypes.Node{{Name: "pi-1"}, {Name: "pi-2", Address: "127.0.0.2"}, {Name: "pi-3"}})
	c.Token = "s3cret"
	t.Setenv("RPI_AGENT", c.URL("pi-1"))
	t.Setenv("RPI_TOKEN", "s3cret")
	if _, err := meta(t, "add-service", "127.0.0.2", "web.api"); err != nil {
		t.Fatal(err)
	}
	if _, err := meta(t, "add-service", "pi-3", "db", "--json"); err != nil {
		t.Fatal(err)
	}
	if _, err := meta(t, "remove-service", "pi-3", "db"); err != nil {
		t.Fatal(err)
	}
	want := []fakeagent.Write{
		{Node: "pi-2", Method: "PUT", Service: "web.api"},
		{Node: "pi-3", Method: "PUT", Service: "db"},
		{Node: "pi-3", Method: "DELETE", Service: "db"},
	}
	if got := c.Writes(); !reflect.DeepEqual(got, want) {
		t.Errorf("writes = %v, want %v", got, want)
	}
	out, err := meta(t, "list")
	if err != nil || !strings.Contains(out, "pi-2  127.0.0.2  alive   web.api") {
		t.Errorf("list = %q, %v", out, err)
	}
	out, _ = meta(t, "list", "--json")
	var nodes []apitypes.Node
	if err := json.Unmarshal([]byte(out), &nodes); err != nil || len(nodes) != 3 {
		t.Errorf("list --json = %q (%v)", out, err)
	}
	for args, wantErr := range map[string]string{
		"add-service pi-9 web":      "known nodes: pi-1, pi-2, pi-3",
		"add-service 127.0.0.1 web": "shared by pi-1, pi-3",
		"add-service pi-1 Bad/Name": "invalid service name",
	} {
		if _, err := meta(t, strings.Fields(args)...); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("rpi-meta %s: error %v, want %q", args, err, wantErr)
		}
	}
	t.Setenv("RPI_TOKEN", "")
	if _, err := meta(t, "add-service", "pi-1", "web"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("write without token: %v", err)
	}
}

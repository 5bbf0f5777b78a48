package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit/fakeagent"
)

func nodes() []apitypes.Node {
	return []apitypes.Node{
		{Name: "pi-1", Services: []string{"nginx_webserver"}, PhiThreshold: 8,
			Monitoring: apitypes.Monitoring{CPUs: 4, MemTotal: 100, MemUsed: 10, Load1: 0.1, Load5: 0.1, Load15: 0.1}},
		{Name: "pi-2", Services: []string{"nginx_webserver", "web.api"}, PhiThreshold: 8,
			Monitoring: apitypes.Monitoring{CPUs: 4, MemTotal: 100, MemUsed: 90, Load1: 3, Load5: 3, Load15: 3}},
		{Name: "pi-3", Status: apitypes.StatusFailed, Services: []string{"nginx_webserver"}},
	}
}

// run runs rpi-inventory with an isolated environment (no workstation
// config, no RPI_* variables) and returns stdout and stderr.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	t.Setenv("RPI_AGENT", "")
	t.Setenv("RPI_TOKEN", "")
	t.Setenv("RPI_WORKSTATION_CONFIG", filepath.Join(t.TempDir(), "none.yaml"))
	var out, errOut bytes.Buffer
	err := Run(context.Background(), append([]string{"rpi-inventory"}, args...), &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestList(t *testing.T) {
	c := fakeagent.Start(t, nodes())
	out, _, err := run(t, "--agent", c.URL("pi-2"), "--list")
	if err != nil {
		t.Fatal(err)
	}
	var inv map[string]struct {
		Hosts    []string       `json:"hosts"`
		HostVars map[string]any `json:"hostvars"`
	}
	if err := json.Unmarshal([]byte(out), &inv); err != nil {
		t.Fatalf("--list is not JSON: %v\n%s", err, out)
	}
	if got := fmt.Sprint(inv["nginx_webserver"].Hosts); got != "[pi-1 pi-2]" {
		t.Errorf("nginx_webserver = %s, want [pi-1 pi-2] (pi-3 failed)", got)
	}
	if got := fmt.Sprint(inv["web_api"].Hosts); got != "[pi-2]" {
		t.Errorf("web_api = %s, want [pi-2]", got)
	}
	if len(inv["_meta"].HostVars) != 3 {
		t.Errorf("_meta.hostvars has %d hosts, want 3", len(inv["_meta"].HostVars))
	}
}

func TestHostAndFallThrough(t *testing.T) {
	c := fakeagent.Start(t, nodes(), "pi-3")
	// pi-3's agent is down: the comma-separated list falls through to pi-1.
	t.Setenv("RPI_AGENT", c.URL("pi-3")+","+c.URL("pi-1"))
	var out, errOut bytes.Buffer
	t.Setenv("RPI_WORKSTATION_CONFIG", filepath.Join(t.TempDir(), "none.yaml"))
	if err := Run(context.Background(), []string{"rpi-inventory", "--host", "pi-2"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	if v["ansible_host"] != "127.0.0.1" || v["rpi_status"] != "alive" || v["ansible_user"] != "pi" {
		t.Errorf("--host pi-2 = %s", out.String())
	}
}

func TestWorkstationConfig(t *testing.T) {
	c := fakeagent.Start(t, nodes())
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("agents: [%q]\nssh_user: ops\nssh_key: /k/id\n", c.URL("pi-1"))), 0o600)
	out, _, err := run(t, "--config", cfg, "--host", "pi-1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"ansible_user": "ops"`) || !strings.Contains(out, `"ansible_ssh_private_key_file": "/k/id"`) {
		t.Errorf("config's ssh_user/ssh_key not applied:\n%s", out)
	}
}

func TestNoAgentHint(t *testing.T) {
	c := fakeagent.Start(t, nodes(), "pi-1")
	_, _, err := run(t, "--agent", c.URL("pi-1"), "--list")
	if err == nil || !strings.Contains(err.Error(), "is rpi-agent running? set RPI_AGENT") {
		t.Errorf("error = %v, want the client's hint", err)
	}
	_, _, err = run(t, "--list")
	if err == nil || !strings.Contains(err.Error(), "set RPI_AGENT or --agent") {
		t.Errorf("error without any agent = %v, want a hint", err)
	}
	_, _, err = run(t, "--agent", c.URL("pi-2"))
	if err == nil || !strings.Contains(err.Error(), "use --list, --host NAME") {
		t.Errorf("no action: error = %v", err)
	}
}

func TestHostsCommand(t *testing.T) {
	c := fakeagent.Start(t, nodes())
	dir := t.TempDir()
	pb := filepath.Join(dir, "site.yml")
	os.WriteFile(pb, []byte("- hosts: nginx_webserver:lb:db\n  tasks: []\n"), 0o644)
	outFile := filepath.Join(dir, "hosts.ini")
	// flags after the positional argument, root flag after the subcommand
	stdout, stderr, err := run(t, "hosts", pb, "-o", outFile, "--assign", "lb=1", "--agent", c.URL("pi-1"))
	if err != nil {
		t.Fatal(err)
	}
	if stdout != "" {
		t.Errorf("with -o nothing goes to stdout, got %q", stdout)
	}
	data, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"[nginx_webserver]\npi-1 ansible_host=127.0.0.1\npi-2 ansible_host=127.0.0.1\n", "[lb]\npi-1 ansible_host=127.0.0.1\n", "[db]\n"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("hosts file lacks %q:\n%s", want, data)
		}
	}
	if !strings.Contains(stderr, "warning: group db:") {
		t.Errorf("stderr lacks the warning for db: %q", stderr)
	}
	if _, _, err := run(t, "hosts", "--agent", c.URL("pi-1")); err == nil {
		t.Error("hosts without a playbook succeeded")
	}
}

func TestKnownHostsCommandReportsMissingRecords(t *testing.T) {
	c := fakeagent.Start(t, nodes())
	stdout, stderr, err := run(t, "known-hosts", "--agent", c.URL("pi-1"))
	if err != nil {
		t.Fatal(err)
	}
	if stdout != "" || strings.Count(stderr, "no signed record") != 3 {
		t.Errorf("stdout %q, stderr %q: want nothing written and three nodes reported", stdout, stderr)
	}
}

// buildTool builds rpi-inventory into a temp dir once per test binary run.
func buildTool(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "rpi-inventory")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/rpi-cluster/rpi-cluster/inventory/cmd/rpi-inventory")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build rpi-inventory: %v\n%s", err, out)
	}
	return bin
}

// TestAnsibleInventoryAccepts runs Ansible's own ansible-inventory against
// a script that runs the built rpi-inventory.
func TestAnsibleInventoryAccepts(t *testing.T) {
	if _, err := exec.LookPath("ansible-inventory"); err != nil {
		t.Skip("ansible-inventory not installed (apt-get install ansible-core)")
	}
	c := fakeagent.Start(t, nodes())
	bin := buildTool(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "rpi-inventory.sh")
	os.WriteFile(script, []byte(fmt.Sprintf("#!/bin/sh\nexec %s --agent %s \"$@\"\n", bin, c.URL("pi-1"))), 0o755)
	env := append(os.Environ(), "ANSIBLE_INVENTORY_UNPARSED_FAILED=True", "ANSIBLE_LOCAL_TEMP="+dir, "ANSIBLE_HOME="+dir)

	cmd := exec.Command("ansible-inventory", "-i", script, "--list")
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ansible-inventory --list: %v\n%s", err, stderrOf(err))
	}
	var inv map[string]any
	if err := json.Unmarshal(out, &inv); err != nil {
		t.Fatal(err)
	}
	meta := inv["_meta"].(map[string]any)["hostvars"].(map[string]any)
	if meta["pi-2"].(map[string]any)["rpi_services"] == nil {
		t.Errorf("ansible-inventory lost rpi_services: %s", out)
	}

	cmd = exec.Command("ansible-inventory", "-i", script, "--graph")
	cmd.Env = env
	out, err = cmd.Output()
	if err != nil {
		t.Fatalf("ansible-inventory --graph: %v\n%s", err, stderrOf(err))
	}
	t.Logf("ansible-inventory --graph:\n%s", out)
	for _, want := range []string{"@nginx_webserver:", "@web_api:", "@failed:", "|--pi-3"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--graph lacks %q:\n%s", want, out)
		}
	}
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

func manyNodes(n int) []apitypes.Node {
	out := make([]apitypes.Node, n)
	for i := range out {
		out[i] = apitypes.Node{Name: fmt.Sprintf("pi-%03d", i), Address: "127.0.0.1", Status: apitypes.StatusAlive,
			Services: []string{fmt.Sprintf("svc%d", i%7)}, PhiThreshold: 8,
			Monitoring: apitypes.Monitoring{CPUs: 4, MemTotal: 1 << 30, MemUsed: uint64(i) << 20, Load1: float64(i) / 100}}
	}
	return out
}

// BenchmarkInventoryList measures --list in process: find the agent, fetch
// the view over HTTP, build and encode the inventory.
func BenchmarkInventoryList(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			srv := fakeagent.Start(b, manyNodes(n), allButFirst(n)...)
			url := srv.URL("pi-000")
			b.Setenv("RPI_WORKSTATION_CONFIG", filepath.Join(b.TempDir(), "none.yaml"))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var out bytes.Buffer
				if err := Run(context.Background(), []string{"rpi-inventory", "--agent", url, "--list"}, &out, &out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkInventoryListProcess measures what Ansible sees: the wall time
// of one "rpi-inventory --list" process, process start included.
func BenchmarkInventoryListProcess(b *testing.B) {
	bin := buildTool(b)
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			srv := fakeagent.Start(b, manyNodes(n), allButFirst(n)...)
			url := srv.URL("pi-000")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				cmd := exec.Command(bin, "--agent", url, "--list")
				cmd.Env = []string{"RPI_WORKSTATION_CONFIG=/nonexistent/config.yaml"}
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("%v\n%s", err, out)
				}
			}
		})
	}
}

func allButFirst(n int) []string {
	var down []string
	for i := 1; i < n; i++ {
		down = append(down, fmt.Sprintf("pi-%03d", i))
	}
	return down
}

package ansible

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// servicePlay records or removes a service on the hosts named by target,
// through each host's agent (or the one -e agent=URL names), from this
// machine: the nodes are local processes, so the play runs with
// ansible_connection=local.
const servicePlay = `- name: Record or remove a service
  hosts: "{{ target }}"
  gather_facts: false
  tasks:
    - name: Set the service
      rpi_cluster.pi.service:
        name: "{{ service }}"
        state: "{{ state }}"
        agent: "{{ agent | default(rpi_agent_url) }}"
        node: "{{ inventory_hostname }}"
        token: "{{ token }}"
`

var recapRE = regexp.MustCompile(`(?m)^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)`)

// playStats runs the play and returns how many tasks changed on host, from
// the PLAY RECAP, or the error (the command's output included).
func playStats(t *testing.T, dir string, env []string, inv, play, host string, args ...string) (changed int, err error) {
	t.Helper()
	out, err := run(t, dir, env, "ansible-playbook", append([]string{"-i", inv, play}, args...)...)
	if err != nil {
		return 0, err
	}
	for _, m := range recapRE.FindAllStringSubmatch(out, -1) {
		if m[1] != host {
			continue
		}
		if m[2] == "0" {
			return 0, fmt.Errorf("the play ran no task on %s:\n%s", host, out)
		}
		return strconv.Atoi(m[3])
	}
	return 0, fmt.Errorf("no PLAY RECAP line for %s:\n%s", host, out)
}

// rpiInventoryGroup returns the hosts of group g in rpi-inventory --list,
// run directly against agent.
func rpiInventoryGroup(t *testing.T, dir, agent, g string) ([]string, error) {
	t.Helper()
	_, bin := binaries(t)
	cfg := filepath.Join(dir, "workstation.yaml")
	writeFile(t, cfg, fmt.Sprintf("known_nodes: %q\n", filepath.Join(dir, "known_nodes.json")))
	out, err := exec.Command(bin, "--config", cfg, "--agent", agent, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("rpi-inventory --list: %w", err)
	}
	var inv map[string]struct {
		Hosts []string `json:"hosts"`
	}
	if err := json.Unmarshal(out, &inv); err != nil {
		return nil, fmt.Errorf("rpi-inventory --list: %w\n%s", err, out)
	}
	return inv[g].Hosts, nil
}

// selfServices is the services node's own agent reports for it.
func selfServices(t *testing.T, agent string) []string {
	t.Helper()
	var self struct {
		Services []string `json:"services"`
	}
	getJSON(t, agent+"/v1/self", &self)
	return self.Services
}

// Acceptance: a playbook using the module records a service that
// rpi-inventory --list then shows; check mode writes nothing, a second run
// changes nothing, a wrong token or the wrong node's agent fails, and
// state=absent removes it.
func TestServiceModulePlay(t *testing.T) {
	needTool(t, "ansible-playbook")
	const token = "module-test-token"
	agents := startCluster(t, 3, token)
	tmp := t.TempDir()
	inv := pluginFile(t, tmp, agents[0].url, `compose:
  ansible_connection: "'local'"
  rpi_agent_url: "'http://' + ansible_host + ':' + (rpi_http_port | string)"
`)
	play := filepath.Join(tmp, "service.yml")
	writeFile(t, play, servicePlay)
	env := ansibleEnv(tmp)
	vars := func(state, tok string, more ...string) []string {
		return append([]string{"-e", "target=pi-2", "-e", "service=web.probe", "-e", "state=" + state, "-e", "token=" + tok}, more...)
	}

	changed, err := playStats(t, tmp, env, inv, play, "pi-2", append(vars("present", token), "--check")...)
	if err != nil || changed != 1 {
		t.Fatalf("check mode: changed %d, %v; want 1 change reported", changed, err)
	}
	if s := selfServices(t, agents[1].url); slices.Contains(s, "web.probe") {
		t.Fatalf("check mode recorded the service: pi-2 runs %v", s)
	}

	if changed, err = playStats(t, tmp, env, inv, play, "pi-2", vars("present", token)...); err != nil || changed != 1 {
		t.Fatalf("record: changed %d, %v; want 1", changed, err)
	}
	// Seen through another agent, by gossip.
	testutil.WaitFor(t, 20*time.Second, func() error {
		hosts, err := rpiInventoryGroup(t, tmp, agents[0].url, "web_probe")
		if err != nil {
			return err
		}
		if !slices.Equal(hosts, []string{"pi-2"}) {
			return fmt.Errorf("rpi-inventory --list (asking pi-1) group web_probe = %v, want [pi-2]", hosts)
		}
		return nil
	})

	if changed, err = playStats(t, tmp, env, inv, play, "pi-2", vars("present", token)...); err != nil || changed != 0 {
		t.Fatalf("second run: changed %d, %v; want 0", changed, err)
	}

	_, err = playStats(t, tmp, env, inv, play, "pi-2", vars("absent", "wrong-token")...)
	if err == nil || !strings.Contains(err.Error(), "API token") {
		t.Fatalf("wrong token: %v, want a failure about the API token", err)
	}
	_, err = playStats(t, tmp, env, inv, play, "pi-2", vars("absent", token, "-e", "agent="+agents[2].url)...)
	if err == nil || !strings.Contains(err.Error(), `is node \"pi-3\", not \"pi-2\"`) {
		t.Fatalf("pi-3's agent for pi-2: %v, want a failure naming both nodes", err)
	}
	if s := selfServices(t, agents[1].url); !slices.Contains(s, "web.probe") {
		t.Fatalf("a failed run removed the service: pi-2 runs %v", s)
	}
	if s := selfServices(t, agents[2].url); slices.Contains(s, "web.probe") {
		t.Fatalf("the wrong node's agent was changed: pi-3 runs %v", s)
	}

	if changed, err = playStats(t, tmp, env, inv, play, "pi-2", vars("absent", token)...); err != nil || changed != 1 {
		t.Fatalf("remove: changed %d, %v; want 1", changed, err)
	}
	testutil.WaitFor(t, 20*time.Second, func() error {
		hosts, err := rpiInventoryGroup(t, tmp, agents[0].url, "web_probe")
		if err != nil {
			return err
		}
		if len(hosts) != 0 {
			return fmt.Errorf("rpi-inventory --list group web_probe = %v after state=absent", hosts)
		}
		return nil
	})

	_, err = playStats(t, tmp, env, inv, play, "pi-2", "-e", "target=pi-2", "-e", "service=Web Probe", "-e", "state=present", "-e", "token="+token)
	if err == nil || !strings.Contains(err.Error(), "invalid service name") {
		t.Fatalf("bad service name: %v, want the name rule's error", err)
	}
}

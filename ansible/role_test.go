package ansible

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// renderPlay renders the role's config template with the role's defaults
// and the variables of the files given with -e after them, as the role
// does on a Pi.
const renderPlay = `- name: Render the role's agent.yaml
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Render
      ansible.builtin.template:
        src: %q
        dest: %q
        mode: "0600"
`

// The config the role writes is one rpi-agent accepts, with the cluster's
// key (gossip encrypted), token (writes need it), name and join list. The
// whole role, on SSH-able machines without an agent, is e2e's
// TestRoleJoinsBareNodes.
func TestRoleConfigRunsAgent(t *testing.T) {
	needTool(t, "ansible-playbook")
	agentBin, _ := binaries(t)
	tmp := t.TempDir()
	role := filepath.Join(collectionDir, "roles", "agent")
	cfg := filepath.Join(tmp, "agent.yaml")
	play := filepath.Join(tmp, "render.yml")
	writeFile(t, play, fmt.Sprintf(renderPlay, filepath.Join(role, "templates", "agent.yaml.j2"), cfg))
	key, err := exec.Command(agentBin, "keygen").Output()
	if err != nil {
		t.Fatal(err)
	}
	ip := fmt.Sprintf("127.%d.%d.1", 100+rand.IntN(100), 1+rand.IntN(254))
	const token = "role 'token': #not-a-comment"
	vars := filepath.Join(tmp, "vars.yml")
	writeFile(t, vars, fmt.Sprintf("rpi_agent_encrypt: %q\nrpi_agent_api_token: %q\nrpi_agent_name: joined-pi\n"+
		"rpi_agent_bind: %q\nrpi_agent_http: %q\nrpi_agent_mdns: false\nrpi_agent_join: [%q]\nrpi_agent_profile: local\n",
		strings.TrimSpace(string(key)), token, ip+":0", ip+":0", ip+":1"))
	mustRun(t, tmp, ansibleEnv(tmp), "ansible-playbook", "-i", "localhost,", play,
		"-e", "@"+filepath.Join(role, "defaults", "main.yml"), "-e", "@"+vars)
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rendered agent.yaml:\n%s", data)

	// The data dir flag wins over the file's /var/lib/rpi-agent.
	out := &testutil.SyncBuffer{}
	cmd := exec.Command(agentBin, "--config", cfg, "--data-dir", filepath.Join(tmp, "data"))
	cmd.Env = ansibleEnv(tmp)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-done
		if t.Failed() {
			t.Logf("rpi-agent output:\n%s", out)
		}
	}()
	var base string
	testutil.WaitFor(t, 20*time.Second, func() error {
		select {
		case <-done:
			t.Fatalf("rpi-agent exited on the role's config:\n%s", out)
		default:
		}
		m := statusPageRE.FindStringSubmatch(out.String())
		if m == nil {
			return fmt.Errorf("rpi-agent has not logged its status page yet")
		}
		base = m[1]
		return nil
	})
	for _, want := range []string{"node=joined-pi", "encrypted=true", "addrs=[" + ip + ":1]"} {
		testutil.WaitFor(t, 10*time.Second, func() error {
			if !strings.Contains(out.String(), want) {
				return fmt.Errorf("the agent's log lacks %q", want)
			}
			return nil
		})
	}
	for _, c := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {"wrong", http.StatusUnauthorized}, {token, http.StatusOK}} {
		req, _ := http.NewRequest(http.MethodPut, base+"/v1/services/role.probe", nil)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("PUT with token %q: %s, want %d", c.token, resp.Status, c.want)
		}
	}
}

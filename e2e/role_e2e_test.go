//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/e2e/vcluster"
)

// Acceptance (issue 18): the rpi_cluster.pi.agent role, run against bare
// virtual nodes (no agent) listed by address, makes them join the cluster
// with the same key and token; run twice, it changes nothing.
//
// The bare nodes are containers of a base image with systemd and sshd and
// nothing of the project, started with systemd as process 1 on the
// cluster's network, reachable over SSH as root with the suite's key.
func TestRoleJoinsBareNodes(t *testing.T) {
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		t.Skip("ansible-playbook not installed (apt-get install ansible-core)")
	}
	ctx := context.Background()
	c, _ := newCluster(t, 2)
	d := &vcluster.Docker{}

	key, cluster := imageSecrets(t, d)
	// The nodes' own base, booting systemd as a Pi running Raspberry Pi OS
	// does, without the project's customisation: no agent, no unit of ours.
	cache, err := vcluster.DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	image, err := vcluster.BuildImage(ctx, d, vcluster.ImageOptions{
		CacheDir: cache,
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}

	var bare []*vcluster.Node
	for i := 1; i <= 3; i++ {
		bare = append(bare, startBareNode(t, c, d, image, i))
	}
	for _, n := range bare {
		waitSystemd(t, c, n)
		pub, err := os.ReadFile(suite.prepared.Key + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		script := fmt.Sprintf("ssh-keygen -A && install -d -m 700 /root/.ssh && printf '%%s\\n' %q > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys && systemctl enable --now ssh",
			strings.TrimSpace(string(pub)))
		if out, err := c.Exec(ctx, n, "sh", "-c", script); err != nil {
			t.Fatalf("set up SSH on %s: %v\n%s", n, err, out)
		}
		if out, _ := c.Exec(ctx, n, "sh", "-c", "command -v rpi-agent || true"); out != "" {
			t.Fatalf("bare node %s already has an agent at %s", n, out)
		}
	}

	dir := t.TempDir()
	inv := filepath.Join(dir, "hosts.ini")
	var lines []string
	lines = append(lines, "[pis]")
	for _, n := range bare {
		lines = append(lines, n.IP.String())
	}
	// The bare nodes have no gossiped host keys yet, so no known_hosts to
	// check them against: this run trusts them, as a first ssh does.
	lines = append(lines, "", "[pis:vars]", "ansible_user=root",
		"ansible_ssh_private_key_file="+suite.prepared.Key,
		"ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'")
	writeE2EFile(t, inv, strings.Join(lines, "\n")+"\n")
	play := filepath.Join(dir, "join.yml")
	writeE2EFile(t, play, `- name: Join Pis already running Raspberry Pi OS
  hosts: pis
  become: true
  roles:
    - role: rpi_cluster.pi.agent
`)
	vars := filepath.Join(dir, "vars.yml")
	writeE2EFile(t, vars, fmt.Sprintf("rpi_agent_build_dir: %q\nrpi_agent_encrypt: %q\nrpi_agent_api_token: %q\nrpi_agent_cluster: %q\nrpi_agent_join: [%q]\n",
		filepath.Join(suite.prepared.Dir, "bin"), key, suite.token, cluster, c.Nodes()[0].IP.String()))

	start := time.Now()
	out, err := rolePlay(ctx, dir, inv, play, vars)
	if err != nil {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	figure(t, "role run on 3 bare nodes", "%.1f s", time.Since(start).Seconds())

	// They joined: the cluster's first node sees all five alive.
	want := 2 + len(bare)
	err = vcluster.Poll(ctx, 2*time.Minute, time.Second, func() error {
		nodes, err := c.Nodes()[0].Client().Nodes(ctx)
		if err != nil {
			return err
		}
		alive := 0
		for _, n := range nodes {
			if n.Status == "alive" {
				alive++
			}
		}
		if alive != want {
			return fmt.Errorf("%s sees %d of %d nodes alive", c.Nodes()[0], alive, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// With the same token: a write to a joined node's agent needs the
	// cluster's token, and what it records reaches the old nodes.
	joined := bare[0]
	url := fmt.Sprintf("http://%s:%d", joined.IP, vcluster.AgentHTTPPort)
	if _, err := (&client.Client{BaseURL: url}).AddService(ctx, "role_probe"); err == nil {
		t.Fatal("a joined node's agent took a write without the cluster's token")
	}
	if _, err := (&client.Client{BaseURL: url, Token: suite.token}).AddService(ctx, "role_probe"); err != nil {
		t.Fatalf("a joined node's agent refused the cluster's token: %v", err)
	}
	err = vcluster.Poll(ctx, time.Minute, 500*time.Millisecond, func() error {
		ns, err := c.Client(c.Nodes()[1]).ServiceNodes(ctx, "role_probe")
		if err != nil {
			return err
		}
		if len(ns) != 1 {
			return fmt.Errorf("%s sees role_probe on %d nodes, want 1", c.Nodes()[1], len(ns))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Under systemd, as its own user, the config readable by that user only.
	for _, n := range bare {
		if out, err := c.Exec(ctx, n, "systemctl", "is-enabled", "rpi-agent"); err != nil || out != "enabled" {
			t.Errorf("%s: rpi-agent is %q (%v), want enabled", n, out, err)
		}
		// ps cuts user names longer than 8 characters: ask /proc.
		if out, err := c.Exec(ctx, n, "sh", "-c", "stat -c %U /proc/$(systemctl show -p MainPID --value rpi-agent)"); err != nil || out != "rpi-agent" {
			t.Errorf("%s: rpi-agent runs as %q (%v), want user rpi-agent", n, out, err)
		}
		if out, err := c.Exec(ctx, n, "stat", "-c", "%a %U %G", "/etc/rpi-cluster/agent.yaml"); err != nil || out != "640 root rpi-agent" {
			t.Errorf("%s: agent.yaml is %q (%v), want 640 root rpi-agent", n, out, err)
		}
	}

	// Idempotent: a second run changes nothing on any node.
	out, err = rolePlay(ctx, dir, inv, play, vars)
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	recaps := recapLines.FindAllStringSubmatch(out, -1)
	if len(recaps) != len(bare) {
		t.Fatalf("second run: %d PLAY RECAP lines, want %d:\n%s", len(recaps), len(bare), out)
	}
	for _, m := range recaps {
		if m[2] != "0" {
			t.Errorf("second run changed %s on %s, want nothing:\n%s", m[2], m[1], out)
		}
	}
}

var recapLines = regexp.MustCompile(`(?m)^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0`)

// imageSecrets reads the gossip key and cluster name baked into the
// suite's node image: the cluster the bare nodes must join.
func imageSecrets(t *testing.T, d *vcluster.Docker) (key, cluster string) {
	t.Helper()
	out, err := d.Run(context.Background(), "run", "--rm", "--network", "none", "--entrypoint", "cat",
		suite.prepared.Image, "/etc/rpi-cluster/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Encrypt string `yaml:"encrypt"`
		Cluster string `yaml:"cluster"`
	}
	if err := yaml.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Encrypt == "" {
		t.Fatal("the node image's agent.yaml has no encrypt key")
	}
	if cfg.Cluster == "" {
		cfg.Cluster = "rpi"
	}
	return cfg.Encrypt, cfg.Cluster
}

// startBareNode runs a bare node with systemd as process 1 on c's network
// at .230+i, labelled with c's run so c.Down removes it.
func startBareNode(t *testing.T, c *vcluster.Cluster, d *vcluster.Docker, image string, i int) *vcluster.Node {
	t.Helper()
	a := c.Subnet.Masked().Addr().As4()
	a[3] = byte(230 + i)
	n := &vcluster.Node{Index: 230 + i, Container: fmt.Sprintf("rpi-vc-%s-bare%d", c.RunID, i), IP: netip.AddrFrom4(a)}
	args := []string{"run", "-d",
		"--name", n.Container,
		"--hostname", fmt.Sprintf("bare-%d", i),
		"--network", c.Network, "--ip", n.IP.String(),
		"--label", vcluster.LabelRun + "=" + c.RunID,
		"--label", vcluster.LabelSession + "=" + os.Getenv("RPI_E2E_SESSION"),
		"--env", "container=docker",
		"--entrypoint", vcluster.InitPath,
	}
	args = append(args, vcluster.SystemdFlags...)
	_, err := d.Run(context.Background(), append(args, image)...)
	if err != nil {
		t.Fatalf("start bare node %d: %v", i, err)
	}
	return n
}

// waitSystemd waits until systemd in n has finished booting.
func waitSystemd(t *testing.T, c *vcluster.Cluster, n *vcluster.Node) {
	t.Helper()
	err := vcluster.Poll(context.Background(), time.Minute, time.Second, func() error {
		out, _ := c.Exec(context.Background(), n, "systemctl", "is-system-running")
		if out == "running" || out == "degraded" {
			return nil
		}
		return errors.New("systemd in " + n.Container + " is " + out)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// rolePlay runs the join play with the repository's collection and no
// ansible.cfg but the caller's defaults.
func rolePlay(ctx context.Context, dir, inv, play, vars string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ansible-playbook", "-i", inv, play, "-e", "@"+vars)
	cmd.Dir = dir
	cp, err := os.MkdirTemp(dir, "cp-")
	if err != nil {
		return "", err
	}
	cmd.Env = append(os.Environ(), "ANSIBLE_COLLECTIONS_PATH="+filepath.Join(suite.root, "ansible", "collections"),
		"ANSIBLE_NOCOLOR=1", "ANSIBLE_RETRY_FILES_ENABLED=false", "ANSIBLE_SSH_CONTROL_PATH_DIR="+cp)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func writeE2EFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

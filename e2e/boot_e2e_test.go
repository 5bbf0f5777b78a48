//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/e2e/vcluster"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// TestNodesBootSystemd: every virtual Pi boots systemd with the image's
// units as written: first boot, the hardened agent and sshd come up with no
// failed unit, and the agent finds its peer by mDNS under its sandbox. The
// sandbox is checked from outside, on the running agent: / read-only, the
// state directory writable, /tmp its own, no new privileges, no
// capabilities; systemd-analyze verifies the units clean and rates the
// agent's exposure at most 2.0. Then a hung agent
// (SIGSTOP) is restarted by the watchdog and rejoins.
func TestNodesBootSystemd(t *testing.T) {
	c, _ := newCluster(t, 2)
	ctx := context.Background()
	a, b := c.Nodes()[0], c.Nodes()[1]

	for _, n := range c.Nodes() {
		testutil.WaitFor(t, time.Minute, func() error { return c.Booted(ctx, n) })
		for unit, want := range map[string]string{
			"rpi-firstboot.service": "ActiveState=active SubState=exited Result=success",
			"rpi-agent.service":     "ActiveState=active SubState=running Result=success Type=notify",
			"ssh.service":           "ActiveState=active SubState=running Result=success",
		} {
			props, err := c.Unit(ctx, n, unit, "ActiveState", "SubState", "Result", "Type")
			if err != nil {
				t.Fatal(err)
			}
			for _, kv := range strings.Fields(want) {
				k, v, _ := strings.Cut(kv, "=")
				if props[k] != v {
					t.Errorf("%s: %s %s=%q, want %q", n, unit, k, props[k], v)
				}
			}
		}
	}

	pid, err := c.HostPID(ctx, a, "rpi-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NoNewPrivs:\t1", "CapEff:\t0000000000000000", "Seccomp:\t2"} {
		if !strings.Contains(string(status), "\n"+want+"\n") {
			t.Errorf("the agent in %s runs without %q:\n%s", a, want, status)
		}
	}
	// In the agent's own mount namespace, as root from the host: what the
	// agent could not do as its user, even root cannot do there.
	inAgent := func(script string) (string, error) {
		out, err := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(pid), "-m", "sh", "-c", script).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := inAgent("touch /usr/rpi-e2e-probe"); err == nil || !strings.Contains(out, "Read-only file system") {
		t.Errorf("the agent's / is writable: touch /usr/rpi-e2e-probe: %v %s", err, out)
	}
	if out, err := inAgent("touch " + vcluster.DataDir + "/.rpi-e2e-probe && rm " + vcluster.DataDir + "/.rpi-e2e-probe"); err != nil {
		t.Errorf("the agent's state directory is not writable: %v %s", err, out)
	}
	if _, err := c.Exec(ctx, a, "touch", "/tmp/rpi-e2e-outside"); err != nil {
		t.Fatal(err)
	}
	if out, err := inAgent("ls -A /tmp"); err != nil || strings.Contains(out, "rpi-e2e-outside") {
		t.Errorf("the agent shares the node's /tmp: ls -A /tmp: %v %q", err, out)
	}

	// Where the binaries are installed, verify has nothing to forgive.
	if out, err := c.Exec(ctx, a, "systemd-analyze", "verify", "/etc/systemd/system/rpi-agent.service",
		"/etc/systemd/system/rpi-firstboot.service"); err != nil || out != "" {
		t.Errorf("systemd-analyze verify on the image's units in %s: %v\n%s", a, err, out)
	}
	sec, err := c.Exec(ctx, a, "systemd-analyze", "security", "--no-pager", "rpi-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`Overall exposure level for rpi-agent.service: ([0-9.]+)`).FindStringSubmatch(sec)
	if m == nil {
		t.Fatalf("systemd-analyze security printed no exposure:\n%s", sec)
	}
	figure(t, "systemd-analyze security rpi-agent.service (in a node)", "%s", m[1])
	if exposure, _ := strconv.ParseFloat(m[1], 64); exposure > 2.0 {
		t.Errorf("rpi-agent.service exposure %s, want at most 2.0:\n%s", m[1], sec)
	}

	// A hung agent: stopped, it can neither gossip nor ping the watchdog.
	before, err := c.Unit(ctx, a, "rpi-agent.service", "MainPID", "NRestarts")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, a, "kill", "-STOP", before["MainPID"]); err != nil {
		t.Fatal(err)
	}
	hung := time.Now()
	testutil.WaitFor(t, 2*time.Minute, func() error {
		now, err := c.Unit(ctx, a, "rpi-agent.service", "MainPID", "NRestarts", "ActiveState")
		if err != nil {
			return err
		}
		if now["NRestarts"] == before["NRestarts"] || now["MainPID"] == before["MainPID"] || now["ActiveState"] != "active" {
			return fmt.Errorf("agent in %s not restarted yet: %v (before %v)", a, now, before)
		}
		return nil
	})
	figure(t, "hung agent (SIGSTOP) restarted by the systemd watchdog after", "%.1f s (WatchdogSec=30s)", time.Since(hung).Seconds())
	journal, _ := c.Exec(ctx, a, "journalctl", "--boot", "--no-pager", "--unit", "rpi-agent.service")
	if !strings.Contains(journal, "Watchdog timeout") {
		t.Errorf("the agent in %s restarted, but not by the watchdog:\n%s", a, journal)
	}
	testutil.WaitFor(t, time.Minute, func() error {
		return c.ExpectStatus(ctx, []*vcluster.Node{b}, []*vcluster.Node{a}, apitypes.StatusAlive)
	})
}

package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/internal/netns"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// TestAgentsFindEachOtherOverMDNS runs two real rpi-agent processes in two
// network namespaces joined by a veth pair, with mDNS bound to the veth and
// no join address: each must find the other and see it alive. Nothing leaves
// the namespaces.
func TestAgentsFindEachOtherOverMDNS(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the namespace test in -short mode")
	}
	netns.Require(t)
	bin := filepath.Join(t.TempDir(), "rpi-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/rpi-agent").CombinedOutput(); err != nil {
		t.Fatalf("build rpi-agent: %v\n%s", err, out)
	}

	id := os.Getpid()
	a := netns.Create(t, fmt.Sprintf("rpit-agent-%d-a", id))
	b := netns.Create(t, fmt.Sprintf("rpit-agent-%d-b", id))
	ifA, ifB := netns.Link(t, a, b, "10.202.0.1/24", "10.202.0.2/24")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := func(ns *netns.NS, name, ip, iface string) {
		cmd := ns.Command(ctx, bin, "--config", "/dev/null", "--name", name,
			"--bind", ip+":7946", "--http", ip+":8080", "--interface", iface,
			"--profile", "local", "--data-dir", filepath.Join(t.TempDir(), name))
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = 10 * time.Second
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cancel()
			cmd.Wait()
			if t.Failed() {
				t.Logf("%s log:\n%s", name, logs.String())
			}
		})
	}
	start(a, "pi-a", "10.202.0.1", ifA)
	start(b, "pi-b", "10.202.0.2", ifB)

	// Ask each agent, from inside its namespace, with `rpi-agent members`.
	view := func(ns *netns.NS, ip string) ([]apitypes.Node, error) {
		out, err := ns.Command(ctx, bin, "members", "--json", "--agent", "http://"+ip+":8080").Output()
		if err != nil {
			return nil, fmt.Errorf("members in %s: %v", ns.Name, err)
		}
		var nodes []apitypes.Node
		return nodes, json.Unmarshal(out, &nodes)
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		for _, side := range []struct {
			ns *netns.NS
			ip string
		}{{a, "10.202.0.1"}, {b, "10.202.0.2"}} {
			nodes, err := view(side.ns, side.ip)
			if err != nil {
				return err
			}
			var alive []string
			for _, n := range nodes {
				if n.Status == apitypes.StatusAlive {
					alive = append(alive, n.Name+"@"+n.Address)
				}
			}
			sort.Strings(alive)
			if got := strings.Join(alive, ","); got != "pi-a@10.202.0.1,pi-b@10.202.0.2" {
				return fmt.Errorf("agent at %s sees alive [%s]", side.ip, got)
			}
		}
		return nil
	})
}

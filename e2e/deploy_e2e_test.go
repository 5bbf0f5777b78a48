//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/e2e/vcluster"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit"
	invcli "github.com/rpi-cluster/rpi-cluster/inventory/cli"
)

// busyMargin is how far above every other node's busy score the burner's
// node must be before the deploy: two busy loops on two cores lift load1 by
// about 0.8 in 30 s, which is a score of about +0.17.
const busyMargin = 0.1

// deployRequests is how many requests each check sends through the load
// balancer.
const deployRequests = 20

// TestDeployScenario is issue 4's deploy on the virtual cluster: with one
// node made busy beforehand, `rpi-launch 2 nginx_webserver` avoids it and
// `rpi-launch 1 nginx_load_balancer` puts a load balancer in front of the
// two web servers, which both answer through it; `rpi-inventory --list`
// shows the service groups; `rpi-launch --remove 1 nginx_webserver` takes
// the service off one node's metadata and the re-applied load balancer
// sends only to the remaining web server.
func TestDeployScenario(t *testing.T) {
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		t.Skip("ansible-playbook not installed (apt-get install ansible-core)")
	}
	c, _ := newCluster(t, 4)
	ctx := context.Background()
	first := c.Nodes()[0]
	members, err := first.Client().Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hw := healWorkstation(t, c, members)

	// 1. A busy node, before anything is deployed.
	busy := makeBusy(t, c, c.Nodes()[len(c.Nodes())-1])

	// 2. Two web servers on the least busy nodes, then a load balancer.
	webTook := timedLaunch(t, hw, "2", "nginx_webserver")
	lbTook := timedLaunch(t, hw, "1", "nginx_load_balancer")
	webs := healServiceNodes(t, c, first, "nginx_webserver")
	lbs := healServiceNodes(t, c, first, "nginx_load_balancer")
	if len(webs) != 2 || len(lbs) != 1 {
		t.Fatalf("after the launches: web servers %v, load balancers %v; want 2 and 1", webs, lbs)
	}
	figure(t, "rpi-launch 2 nginx_webserver (wall)", "%.1f s", webTook.Seconds())
	figure(t, "rpi-launch 1 nginx_load_balancer (wall)", "%.1f s", lbTook.Seconds())
	if busy != nil {
		if slices.Contains(webs, busy) {
			t.Errorf("the busy node %s was picked for nginx_webserver (web servers %v)", busy, webs)
		}
		figure(t, "busy node avoided by placement", "%t", !slices.Contains(webs, busy))
	}
	lbURL := fmt.Sprintf("http://%s:8000/", lbs[0].IP)

	// 3. Both web servers answer through the load balancer.
	perBackend := requestBatch(t, lbURL)
	figure(t, "requests per backend through the LB (2 web servers)", "%s", formatCounts(perBackend))
	for _, w := range webs {
		if perBackend[w.Name] == 0 {
			t.Errorf("web server %s answered none of %d requests through the load balancer: %s", w, deployRequests, formatCounts(perBackend))
		}
	}

	// 4. The inventory has a group per service.
	groups := inventoryGroups(t, hw)
	if got, want := groups["nginx_webserver"], nodeNamesOf(webs); !slices.Equal(got, want) {
		t.Errorf("rpi-inventory --list: group nginx_webserver = %v, want %v", got, want)
	}
	if got, want := groups["nginx_load_balancer"], nodeNamesOf(lbs); !slices.Equal(got, want) {
		t.Errorf("rpi-inventory --list: group nginx_load_balancer = %v, want %v", got, want)
	}

	// 5. One web server removed: its metadata drops the service and the
	// re-applied load balancer sends only to the other.
	removeTook := timedLaunch(t, hw, "--remove", "1", "nginx_webserver")
	figure(t, "rpi-launch --remove 1 nginx_webserver (wall, LB re-applied)", "%.1f s", removeTook.Seconds())
	left := healServiceNodes(t, c, first, "nginx_webserver")
	if len(left) != 1 || !slices.Contains(webs, left[0]) {
		t.Fatalf("after --remove 1: web servers %v, want one of %v", left, webs)
	}
	survivor := left[0]
	removed := webs[0]
	if removed == survivor {
		removed = webs[1]
	}
	self, err := removed.Client().Self(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(self.Services, "nginx_webserver") {
		t.Errorf("%s/v1/self still lists nginx_webserver after the removal: %v", removed.AgentURL(), self.Services)
	}
	perBackend = requestBatch(t, lbURL)
	figure(t, "requests per backend through the LB after --remove 1", "%s", formatCounts(perBackend))
	if perBackend[survivor.Name] != deployRequests {
		t.Errorf("after removing %s: %s, want all %d from %s", removed, formatCounts(perBackend), deployRequests, survivor)
	}
}

// makeBusy starts a bounded CPU burner (one busy loop per core, each ended
// by timeout after 10 minutes at the latest, and killed when the test ends)
// in n, then waits until n's gossiped busy score is the cluster's highest by
// busyMargin. It returns n, or nil when the nodes cannot show per-node load:
// containers without a virtualised /proc/loadavg (lxcfs) all read the host
// kernel's, so a burner in one raises every node's score alike.
func makeBusy(t *testing.T, c *vcluster.Cluster, n *vcluster.Node) *vcluster.Node {
	t.Helper()
	ctx := context.Background()
	mounts, err := c.Exec(ctx, n, "cat", "/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(mounts, " /proc/loadavg ") {
		if os.Getenv("RPI_E2E_LXCFS") == "required" {
			t.Fatalf("lxcfs runs on the host (e2e/run.sh started it) but %s has no per-container /proc/loadavg: the harness did not mount it", n)
		}
		t.Logf("busy node check skipped: %s reads the host kernel's /proc/loadavg (no lxcfs), so load cannot single out one node", n)
		figure(t, "busy node avoided by placement", "not measurable: nodes share the host's /proc/loadavg")
		return nil
	}
	pids, err := c.Exec(ctx, n, "sh", "-c",
		`for i in 1 2; do timeout 600 sh -c 'while :; do :; done' >/dev/null 2>&1 & echo $!; done`)
	if err != nil {
		t.Fatalf("start the CPU burner: %v", err)
	}
	t.Cleanup(func() {
		if _, err := c.Exec(context.Background(), n, append([]string{"kill"}, strings.Fields(pids)...)...); err != nil {
			t.Logf("stop the CPU burner in %s: %v", n, err)
		}
	})
	started := time.Now()
	var lead float64
	testutil.WaitFor(t, 2*time.Minute, func() error {
		nodes, err := c.Client(c.Others(n)[0]).Nodes(ctx)
		if err != nil {
			return err
		}
		var mine float64
		others := map[string]float64{}
		for _, m := range nodes {
			if m.Address == n.IP.String() {
				mine = toolkit.BusyScore(m)
			} else {
				others[m.Name] = toolkit.BusyScore(m)
			}
		}
		lead = mine
		for _, s := range others {
			lead = min(lead, mine-s)
		}
		if len(others) == 0 || lead < busyMargin {
			return fmt.Errorf("busy score of %s is %.3f, others %v: want a lead of %.2f", n, mine, others, busyMargin)
		}
		return nil
	})
	figure(t, "time until the burner's node leads the busy score", "%.1f s (lead %.3f)", time.Since(started).Seconds(), lead)
	return n
}

// timedLaunch runs rpi-launch with args, fails the test if it fails and
// returns its wall time.
func timedLaunch(t *testing.T, hw *healWS, args ...string) time.Duration {
	t.Helper()
	start := time.Now()
	if out, err := hw.launch(context.Background(), args...); err != nil {
		t.Fatalf("rpi-launch %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return time.Since(start)
}

// requestBatch sends deployRequests requests through the load balancer and
// returns how many each backend answered; a failed request fails the test.
func requestBatch(t *testing.T, url string) map[string]int {
	t.Helper()
	loop := startRequests(url, 50*time.Millisecond, deployRequests, time.Minute)
	defer loop.Stop()
	testutil.WaitFor(t, time.Minute, func() error {
		if n := loop.Since(time.Time{}); n < deployRequests {
			return fmt.Errorf("%d of %d requests to %s sent", n, deployRequests, url)
		}
		return nil
	})
	loop.Stop()
	if f := loop.FailedSince(time.Time{}); f > 0 {
		t.Errorf("%d of %d requests to %s failed or named no backend", f, deployRequests, url)
	}
	counts := map[string]int{}
	loop.mu.Lock()
	defer loop.mu.Unlock()
	for _, r := range loop.results {
		if r.ok {
			counts[r.backend]++
		}
	}
	return counts
}

// inventoryGroups runs `rpi-inventory --list` in-process against the
// cluster and returns each group's sorted hosts.
func inventoryGroups(t *testing.T, hw *healWS) map[string][]string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := invcli.Run(context.Background(), []string{"rpi-inventory", "--list", "--config", hw.config}, &out, &errOut); err != nil {
		t.Fatalf("rpi-inventory --list: %v\n%s", err, errOut.String())
	}
	var inv map[string]json.RawMessage
	if err := json.Unmarshal(out.Bytes(), &inv); err != nil {
		t.Fatalf("rpi-inventory --list: %v\n%s", err, out.String())
	}
	groups := map[string][]string{}
	for name, raw := range inv {
		if name == "_meta" {
			continue
		}
		var g struct {
			Hosts []string `json:"hosts"`
		}
		if err := json.Unmarshal(raw, &g); err != nil {
			t.Fatalf("rpi-inventory --list: group %s: %v", name, err)
		}
		slices.Sort(g.Hosts)
		groups[name] = g.Hosts
	}
	t.Logf("rpi-inventory --list groups: %v", groups)
	return groups
}

func nodeNamesOf(nodes []*vcluster.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Name)
	}
	slices.Sort(out)
	return out
}

// formatCounts renders per-backend counts sorted by name: "a=10 b=10".
func formatCounts(counts map[string]int) string {
	var names []string
	for n := range counts {
		names = append(names, n)
	}
	slices.Sort(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s=%d", n, counts[n]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/e2e/vcluster"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
	"github.com/rpi-cluster/rpi-cluster/launcher"
	"github.com/rpi-cluster/rpi-cluster/launcher/cli"
)

// setGrace rewrites service's grace_period in the workstation's playbooks.
func (h *healWS) setGrace(t *testing.T, service, grace string) {
	t.Helper()
	pol := filepath.Join(h.playbooks, service, "service.yaml")
	data, err := os.ReadFile(pol)
	if err != nil {
		t.Fatal(err)
	}
	data = regexp.MustCompile(`(?m)^grace_period: .*$`).ReplaceAll(data, []byte("grace_period: "+grace))
	if err := os.WriteFile(pol, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// liveServiceNodes returns the nodes from's agent lists as running service
// and alive. A killed replica stays listed (status failed) until it is
// reaped; it runs nothing and its files cannot be read.
func liveServiceNodes(ctx context.Context, c *vcluster.Cluster, from *vcluster.Node, service string) ([]*vcluster.Node, error) {
	nodes, err := c.Client(from).ServiceNodes(ctx, service)
	if err != nil {
		return nil, err
	}
	var out []*vcluster.Node
	for _, n := range nodes {
		if n.Status != apitypes.StatusAlive {
			continue
		}
		for _, vn := range c.Nodes() {
			if vn.IP.String() == n.Address {
				vn.Name = n.Name
				out = append(out, vn)
			}
		}
	}
	return out, nil
}

// peerFiles reads /etc/kvstore/peers.conf on every alive node the cluster
// lists as running kvstore and returns those nodes, with an error naming
// each file that does not list exactly them.
func peerFiles(ctx context.Context, c *vcluster.Cluster, from *vcluster.Node) ([]*vcluster.Node, error) {
	running, err := liveServiceNodes(ctx, c, from, "kvstore")
	if err != nil {
		return nil, err
	}
	want := nodeNamesOf(running)
	slices.Sort(want)
	var errs []error
	for _, n := range running {
		out, err := c.Exec(ctx, n, "cat", "/etc/kvstore/peers.conf")
		if err != nil {
			errs = append(errs, fmt.Errorf("%s runs kvstore but has no peers file: %w", n, err))
			continue
		}
		var got []string
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) == 2 && !strings.HasPrefix(line, "#") {
				got = append(got, f[0])
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			errs = append(errs, fmt.Errorf("%s lists peers %v, want %v", n, got, want))
		}
	}
	return running, errors.Join(errs...)
}

// checkPeerFiles is peerFiles after a step that has returned: every file
// must already be right.
func checkPeerFiles(t *testing.T, c *vcluster.Cluster, from *vcluster.Node, step string) []*vcluster.Node {
	t.Helper()
	running, err := peerFiles(context.Background(), c, from)
	if err != nil {
		t.Errorf("%s: %v", step, err)
	}
	return running
}

// waitPeerFiles waits for reconcile --watch to converge: want alive
// kvstore replicas, none of them in without, every peers file right.
func waitPeerFiles(t *testing.T, c *vcluster.Cluster, from *vcluster.Node, want int, without *vcluster.Node, step string) []*vcluster.Node {
	t.Helper()
	var running []*vcluster.Node
	if err := vcluster.Poll(context.Background(), 3*time.Minute, 2*time.Second, func() error {
		now, err := peerFiles(context.Background(), c, from)
		if err != nil {
			return err
		}
		if len(now) != want || without != nil && slices.Contains(now, without) {
			return fmt.Errorf("kvstore alive on %v, want %d nodes without %v", now, want, without)
		}
		running = now
		return nil
	}); err != nil {
		t.Fatalf("%s: %v", step, err)
	}
	return running
}

// TestKVStorePeersStayRight is issue 17's first acceptance item: a
// three-replica service whose template lists its peers stays correct
// through launch 3, remove 1, launch 1, a partial failure and a node
// killed under reconcile --watch; every replica's file is checked after
// each step.
func TestKVStorePeersStayRight(t *testing.T) {
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		t.Skip("ansible-playbook not installed (apt-get install ansible-core)")
	}
	c, _ := newCluster(t, 6)
	ctx := context.Background()
	first := c.Nodes()[0]
	members, err := first.Client().Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hw := healWorkstation(t, c, members)
	hw.setGrace(t, "kvstore", healGrace)

	mustLaunch := func(args ...string) {
		t.Helper()
		if out, err := hw.launch(ctx, args...); err != nil {
			t.Fatalf("rpi-launch %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	mustLaunch("3", "kvstore")
	if got := checkPeerFiles(t, c, first, "launch 3"); len(got) != 3 {
		t.Fatalf("after launch 3: kvstore on %v", got)
	}
	mustLaunch("--remove", "1", "kvstore")
	if got := checkPeerFiles(t, c, first, "remove 1"); len(got) != 2 {
		t.Fatalf("after remove 1: kvstore on %v", got)
	}
	mustLaunch("1", "kvstore")
	running := checkPeerFiles(t, c, first, "launch 1")
	if len(running) != 3 {
		t.Fatalf("after launch 1: kvstore on %v", running)
	}

	// Partial failure: on one of the free nodes /etc/kvstore is a file, so
	// the play fails there; the hosts that succeeded must not list it.
	free := c.Others(running...)
	broken := free[0]
	if _, err := c.Exec(ctx, broken, "sh", "-c", "rm -rf /etc/kvstore && touch /etc/kvstore"); err != nil {
		t.Fatal(err)
	}
	if out, err := hw.launch(ctx, "2", "kvstore"); err == nil {
		t.Logf("rpi-launch 2 kvstore succeeded everywhere; the broken node was not chosen:\n%s", out)
	}
	running = checkPeerFiles(t, c, first, "partial failure")
	if _, err := c.Exec(ctx, broken, "rm", "-f", "/etc/kvstore"); err != nil {
		t.Fatal(err)
	}

	// reconcile --watch, then a replica killed: it is replaced and every
	// survivor's list follows.
	watchOut := &testutil.SyncBuffer{}
	wctx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- cli.RunLaunch(wctx, hw.args("reconcile", "--watch", "--interval", "5s"), watchOut, watchOut)
	}()
	t.Cleanup(func() {
		stopWatch()
		select {
		case <-watchDone:
		case <-time.After(30 * time.Second):
			t.Error("reconcile --watch did not stop on cancel")
		}
		if t.Failed() {
			t.Logf("reconcile --watch output:\n%s", watchOut.String())
		}
	})
	// The watch first converges what the partial launch left missing: the
	// launch recorded the two replicas asked for as desired.
	desired, err := first.Client().DesiredFor(ctx, "kvstore")
	if err != nil {
		t.Fatal(err)
	}
	if err := vcluster.Poll(ctx, 30*time.Second, 100*time.Millisecond, func() error {
		if !strings.Contains(watchOut.String(), "following events") {
			return errors.New("reconcile --watch not following events yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	running = waitPeerFiles(t, c, first, desired.Replicas, nil, "reconcile after the partial failure")
	victim := running[0]
	observer := c.Others(running...)
	if len(observer) == 0 {
		observer = c.Others(victim)
	}
	if err := c.Kill(ctx, victim); err != nil {
		t.Fatal(err)
	}
	waitPeerFiles(t, c, observer[0], len(running), victim, "replica killed under reconcile --watch")
}

// TestDriftShownAndRepaired is issue 17's second acceptance item, both
// ways: a re-apply that fails once, then the rendered file deleted on the
// node. First: a third web server's launch cannot re-apply
// the load balancer (a broken file beside its config fails `nginx -t`), so
// the balancer keeps serving its old upstream; `rpi-launch status` shows
// the drift, and once the node is fixed `rpi-launch reconcile` repairs it
// and the load balancer reaches every live backend. Then the upstream file
// is deleted on the node: `status --check` (the install playbook in check
// mode) shows the drift and `reconcile --check` restores it.
func TestDriftShownAndRepaired(t *testing.T) {
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
	for _, args := range [][]string{{"2", "nginx_webserver"}, {"1", "nginx_load_balancer"}} {
		if out, err := hw.launch(ctx, args...); err != nil {
			t.Fatalf("rpi-launch %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	lb := healServiceNodes(t, c, first, "nginx_load_balancer")[0]
	// A broken file beside the balancer's config fails its `nginx -t`, so
	// the re-apply fails on that node (and nginx is not reloaded).
	broken := "/etc/nginx/conf.d/zz-broken.conf"
	if _, err := c.Exec(ctx, lb, "sh", "-c", "echo 'this is not nginx' > "+broken); err != nil {
		t.Fatal(err)
	}
	if out, err := hw.launch(ctx, "1", "nginx_webserver"); err == nil {
		t.Fatalf("the load balancer's re-apply did not fail:\n%s", out)
	}
	out, err := hw.launch(ctx, "status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var states []launcher.ServiceState
	if err := json.Unmarshal([]byte(out[strings.Index(out, "["):]), &states); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	var lbState *launcher.ServiceState
	for i := range states {
		if states[i].Service == "nginx_load_balancer" {
			lbState = &states[i]
		}
	}
	if lbState == nil || !slices.Equal(lbState.Drift, []string{lb.Name}) {
		t.Fatalf("status after the failed re-apply: %+v, want drift on %s", lbState, lb)
	}
	if _, err := c.Exec(ctx, lb, "rm", "-f", broken); err != nil {
		t.Fatal(err)
	}
	if out, err := hw.launch(ctx, "reconcile"); err != nil || !strings.Contains(out, "drift repaired on "+lb.Name) {
		t.Fatalf("reconcile: %v, want the drift repaired on %s:\n%s", err, lb, out)
	}
	webs := healServiceNodes(t, c, first, "nginx_webserver")
	perBackend := requestBatch(t, fmt.Sprintf("http://%s:8000/", lb.IP))
	for _, w := range webs {
		if perBackend[w.Name] == 0 {
			t.Errorf("web server %s answered none of the requests through the repaired load balancer: %s", w, formatCounts(perBackend))
		}
	}

	// The rendered upstream deleted on the balancer's node: only the
	// check-mode probe can see it; status --check shows it and
	// reconcile --check puts it back.
	upstream := "/etc/nginx/conf.d/rpi-upstream.conf"
	if _, err := c.Exec(ctx, lb, "rm", "-f", upstream); err != nil {
		t.Fatal(err)
	}
	out, err = hw.launch(ctx, "status", "--check", "--json")
	if err != nil {
		t.Fatal(err)
	}
	states = nil
	if err := json.Unmarshal([]byte(out[strings.Index(out, "["):]), &states); err != nil {
		t.Fatalf("status --check --json: %v\n%s", err, out)
	}
	lbState = nil
	for i := range states {
		if states[i].Service == "nginx_load_balancer" {
			lbState = &states[i]
		}
	}
	if lbState == nil || !slices.Equal(lbState.Drift, []string{lb.Name}) {
		t.Fatalf("status --check after deleting %s: %+v, want drift on %s", upstream, lbState, lb)
	}
	if out, err := hw.launch(ctx, "reconcile", "--check"); err != nil || !strings.Contains(out, "drift repaired on "+lb.Name) {
		t.Fatalf("reconcile --check: %v, want the drift repaired on %s:\n%s", err, lb, out)
	}
	if _, err := c.Exec(ctx, lb, "test", "-s", upstream); err != nil {
		t.Errorf("%s not restored on %s: %v", upstream, lb, err)
	}
	perBackend = requestBatch(t, fmt.Sprintf("http://%s:8000/", lb.IP))
	for _, w := range webs {
		if perBackend[w.Name] == 0 {
			t.Errorf("web server %s answered none of the requests after the upstream was restored: %s", w, formatCounts(perBackend))
		}
	}
}

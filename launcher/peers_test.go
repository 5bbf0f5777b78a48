package launcher

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit/fakeagent"
)

// fakeDeployer is an ansible-playbook stand-in that does what the kvstore
// playbooks do to each host: install copies the build directory's files to
// $FAKE_DIR/hosts/<host>/, uninstall deletes them. Hosts in $FAKE_FAIL fail
// (nothing copied). With --check it reports a host changed when its files
// differ from the build directory's, and copies nothing.
func fakeDeployer(t *testing.T) (path, dir string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "ansible-playbook")
	script := `#!/bin/sh
echo "$@" >> "$FAKE_DIR/calls"
limit=""; extra=""; book=""; check=""
while [ $# -gt 0 ]; do
	case "$1" in
	--check) check=1 ;;
	--limit) limit="$2"; shift ;;
	-e) extra="$2"; shift ;;
	-i) shift ;;
	*) book="$1" ;;
	esac
	shift
done
build=$(echo "$extra" | sed 's/.*"rpi_build_dir":"\([^"]*\)".*/\1/')
echo "PLAY RECAP ****"
for h in $(echo "$limit" | tr ',' ' '); do
	case ",$FAKE_FAIL," in
	*",$h,"*) echo "$h : ok=0 changed=0 unreachable=1 failed=0 skipped=0 rescued=0 ignored=0"; continue ;;
	esac
	if [ -n "$check" ]; then
		# check mode: report what install would change, change nothing
		if diff -r "$build" "$FAKE_DIR/hosts/$h" >/dev/null 2>&1; then c=0; else c=1; fi
		echo "$h : ok=2 changed=$c unreachable=0 failed=0 skipped=0 rescued=0 ignored=0"
		continue
	fi
	case "$(basename "$book")" in
	uninstall*) rm -rf "$FAKE_DIR/hosts/$h" ;;
	*) mkdir -p "$FAKE_DIR/hosts/$h" && cp -R "$build/." "$FAKE_DIR/hosts/$h/" ;;
	esac
	echo "$h : ok=2 changed=1 unreachable=0 failed=0 skipped=0 rescued=0 ignored=0"
done
`
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FAKE_DIR", dir)
	t.Setenv("FAKE_FAIL", "")
	return path, dir
}

// peersWorld is six idle nodes and a kvstore service whose template lists
// its peers and whose policy depends on itself.
type peersWorld struct {
	c        *fakeagent.Cluster
	l        *Launcher
	fakeDir  string
	out      *testutil.SyncBuffer
	services []string
}

func newPeersWorld(t *testing.T) *peersWorld {
	t.Helper()
	path, fakeDir := fakeDeployer(t)
	root := t.TempDir()
	files := map[string]string{
		"playbooks/kvstore/install.yml":     "- hosts: kvstore\n  tasks:\n    - copy: {src: \"{{ rpi_build_dir }}/peers.conf\", dest: /etc/kvstore/peers.conf}\n",
		"playbooks/kvstore/uninstall.yml":   "- hosts: kvstore\n",
		"playbooks/kvstore/service.yaml":    "on_failure: relaunch\ngrace_period: 30s\ndepends_on: [kvstore]\n",
		"templates/kvstore/peers.conf.tmpl": "{{ range .Service \"kvstore\" }}{{ .Name }}\n{{ end }}",
		"playbooks/web/install.yml":         "- hosts: web\n",
		"playbooks/web/uninstall.yml":       "- hosts: web\n",
		"playbooks/web/service.yaml":        "on_failure: none\n",
		"templates/web/index.html.tmpl":     "{{ .Cluster }}\n",
	}
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var nodes []apitypes.Node
	for _, name := range []string{"pi-1", "pi-2", "pi-3", "pi-4", "pi-5", "pi-6"} {
		nodes = append(nodes, apitypes.Node{Name: name, PhiThreshold: 8, Monitoring: mon(0.1)})
	}
	w := &peersWorld{c: fakeagent.Start(t, nodes), fakeDir: fakeDir, out: &testutil.SyncBuffer{}}
	cl, err := client.New(w.c.URL("pi-1"), "")
	if err != nil {
		t.Fatal(err)
	}
	w.l = &Launcher{Client: cl, Cluster: "rpi", Playbooks: filepath.Join(root, "playbooks"), Templates: filepath.Join(root, "templates"),
		BuildDir: filepath.Join(root, "build"), Runner: &Runner{Path: path}, Out: w.out, RecordDesired: true,
		SSHPort: fakeSSH(t, "127.0.0.1"), SettleTimeout: 5 * time.Second}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("output:\n%s", w.out.String())
		}
	})
	return w
}

// running lists the nodes whose records list kvstore.
func (w *peersWorld) running() []string {
	var out []string
	for _, n := range w.c.Nodes() {
		if n.Status == apitypes.StatusAlive && strings.Contains(","+strings.Join(n.Services, ",")+",", ",kvstore,") {
			out = append(out, n.Name)
		}
	}
	return out
}

// checkPeers checks that every node running kvstore was given a peers file
// naming exactly the nodes running it, and that no other node has one.
func (w *peersWorld) checkPeers(t *testing.T, step string) {
	t.Helper()
	want := w.running()
	for _, n := range w.c.Nodes() {
		data, err := os.ReadFile(filepath.Join(w.fakeDir, "hosts", n.Name, "peers.conf"))
		runs := strings.Contains(strings.Join(want, ","), n.Name)
		switch {
		case !runs:
			continue // a dead or removed node keeps what it had: nobody can reach it
		case err != nil:
			t.Errorf("%s: %s runs kvstore but has no peers file: %v", step, n.Name, err)
		case !reflect.DeepEqual(strings.Fields(string(data)), want):
			t.Errorf("%s: %s lists peers %q, want %q", step, n.Name, strings.Fields(string(data)), want)
		}
	}
}

// A three-replica service whose template lists its peers stays correct
// through launch 3, remove 1, launch 1, a partial failure and a node
// killed under reconcile: every replica's file is checked after each step.
func TestSelfDependentPeersStayRight(t *testing.T) {
	w := newPeersWorld(t)
	ctx := context.Background()

	if _, err := w.l.Launch(ctx, "kvstore", 3, false); err != nil {
		t.Fatal(err)
	}
	w.checkPeers(t, "launch 3")

	if _, err := w.l.Remove(ctx, "kvstore", 1, false); err != nil {
		t.Fatal(err)
	}
	if got := len(w.running()); got != 2 {
		t.Fatalf("after remove 1, %d nodes run kvstore", got)
	}
	w.checkPeers(t, "remove 1")

	if _, err := w.l.Launch(ctx, "kvstore", 1, false); err != nil {
		t.Fatal(err)
	}
	w.checkPeers(t, "launch 1")

	// Partial failure: of two new replicas one host is unreachable.
	free := []string{}
	for _, n := range w.c.Nodes() {
		if !strings.Contains(strings.Join(w.running(), ","), n.Name) {
			free = append(free, n.Name)
		}
	}
	t.Setenv("FAKE_FAIL", free[0])
	_, err := w.l.Launch(ctx, "kvstore", 2, false)
	if err == nil || !strings.Contains(err.Error(), free[0]) {
		t.Fatalf("partial launch: %v, want %s reported", err, free[0])
	}
	t.Setenv("FAKE_FAIL", "")
	if got := len(w.running()); got != 4 {
		t.Fatalf("after the partial launch, %d nodes run kvstore, want 4", got)
	}
	w.checkPeers(t, "partial failure")

	// The partial launch raised the desired count by 2: reconcile starts
	// the missing replica, and every replica lists it.
	r := &Reconciler{Launcher: w.l, IgnoreGrace: true, Log: slog.New(slog.NewTextHandler(w.out, nil))}
	if _, err := r.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(w.running()); got != 5 {
		t.Fatalf("after reconcile, %d nodes run kvstore, want 5", got)
	}
	w.checkPeers(t, "reconcile after the partial failure")

	// A node running it dies; reconcile relaunches (onto the free node)
	// and the survivors stop listing the dead one.
	dead := w.running()[0]
	w.c.Update(dead, func(n *apitypes.Node) { n.Status = apitypes.StatusFailed })
	if _, err := r.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if got := w.running(); len(got) != 5 || strings.Contains(strings.Join(got, ","), dead) {
		t.Fatalf("after reconcile kvstore runs on %v, want 5 nodes without %s", got, dead)
	}
	w.checkPeers(t, "node killed, reconcile")
}

// A rendered file deleted on a node is drift the recorded hashes cannot
// see: the install playbook in check mode finds it, status shows it and
// reconcile --check restores it.
func TestDeletedRenderFoundByCheckMode(t *testing.T) {
	w := newPeersWorld(t)
	ctx := context.Background()
	if _, err := w.l.Launch(ctx, "kvstore", 3, false); err != nil {
		t.Fatal(err)
	}
	victim := w.running()[1]
	file := filepath.Join(w.fakeDir, "hosts", victim, "peers.conf")
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	nodes, err := w.l.Client.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	desired, err := w.l.Client.Desired(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sts := ServiceStates(nodes, desired, func(s string) (Policy, error) { return LoadPolicy(w.l.Playbooks, s) })
	AddDrift(sts, func(s string) (string, bool, error) { return w.l.ExpectedRender(s, nodes) })
	if len(sts[0].Drift) != 0 {
		t.Fatalf("recorded hashes alone show drift %v: they cannot see the node's files", sts[0].Drift)
	}
	AddCheckedDrift(sts, func(string) bool { return true }, func(s string, names []string) ([]string, map[string]string, error) {
		return w.l.CheckNodes(ctx, s, nodes, names)
	})
	if !reflect.DeepEqual(sts[0].Drift, []string{victim}) || sts[0].DriftError != "" {
		t.Fatalf("checked drift %v (%s), want [%s]", sts[0].Drift, sts[0].DriftError, victim)
	}
	if _, err := os.Stat(file); err == nil {
		t.Fatal("the check restored the file: check mode must change nothing")
	}
	r := &Reconciler{Launcher: w.l, IgnoreGrace: true, ProbeNodes: true, Log: slog.New(slog.NewTextHandler(w.out, nil))}
	res, err := r.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res.Repaired, map[string][]string{"kvstore": {victim}}) {
		t.Errorf("repaired %v, want kvstore on %s", res.Repaired, victim)
	}
	w.checkPeers(t, "after reconcile --check")
}

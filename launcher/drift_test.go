package launcher

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// states is what `rpi-launch status` computes: desired against actual with
// drift, from the agent the launcher asks.
func states(t *testing.T, l *Launcher) map[string]ServiceState {
	t.Helper()
	ctx := context.Background()
	nodes, err := l.Client.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	desired, err := l.Client.Desired(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sts := ServiceStates(nodes, desired, func(s string) (Policy, error) { return LoadPolicy(l.Playbooks, s) })
	AddDrift(sts, func(s string) (string, bool, error) { return l.ExpectedRender(s, nodes) })
	out := map[string]ServiceState{}
	for _, st := range sts {
		out[st.Service] = st
	}
	return out
}

// A load balancer re-apply that fails leaves the balancer's node with what
// it was given before: status shows it drifted, and reconcile re-applies
// it, backing off while the re-apply keeps failing.
func TestFailedReapplyIsDriftThatReconcileRepairs(t *testing.T) {
	w := newHealWorld(t, relaunchPolicy)
	l := w.r.Launcher
	ctx := context.Background()
	nodes, err := l.Client.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// What rpi-launch gave the balancer, recorded.
	if _, err := l.ReapplyDependents(ctx, "web", nodes); err != nil {
		t.Fatal(err)
	}
	if st := states(t, l)["lb"]; len(st.Drift) != 0 || st.Rendered["pi-1"] == "" {
		t.Fatalf("after a good apply: drift %v, rendered %v", st.Drift, st.Rendered)
	}

	// A web launch whose balancer re-apply fails on pi-1.
	t.Setenv("FAKE_FAIL", "pi-1")
	if _, err := l.Launch(ctx, "web", 1, false); err == nil {
		t.Fatal("the failed re-apply of lb was not reported")
	}
	st := states(t, l)["lb"]
	if !reflect.DeepEqual(st.Drift, []string{"pi-1"}) {
		t.Fatalf("status after the failed re-apply: drift %v, want [pi-1]", st.Drift)
	}
	if got := w.upstream(t); got != "pi-2 pi-3 pi-4" {
		t.Fatalf("build upstream %q: the render was made, only the play failed", got)
	}

	// reconcile retries, fails, backs off, then repairs.
	seen := len(w.calls(t))
	res := w.pass(t, time.Second)
	expectCalls(t, w, &seen, "lb pi-1")
	if len(res.Repaired) != 0 {
		t.Errorf("a failed repair reported as done: %v", res.Repaired)
	}
	w.pass(t, 5*time.Second) // within the 10 s back-off
	expectCalls(t, w, &seen)
	t.Setenv("FAKE_FAIL", "")
	res = w.pass(t, 6*time.Second)
	expectCalls(t, w, &seen, "lb pi-1")
	if !reflect.DeepEqual(res.Repaired, map[string][]string{"lb": {"pi-1"}}) {
		t.Errorf("repaired = %v, want lb on pi-1", res.Repaired)
	}
	if st := states(t, l)["lb"]; len(st.Drift) != 0 {
		t.Errorf("drift after the repair: %v", st.Drift)
	}
	w.pass(t, time.Minute)
	expectCalls(t, w, &seen) // nothing more to do
}

// The policy recorded when a service is launched is the one status and
// reconcile use on a workstation whose playbooks folder has another one,
// or none.
func TestPolicyTravelsWithTheCluster(t *testing.T) {
	w := newHealWorld(t, "on_failure: alert\n")
	l := *w.r.Launcher
	l.RecordDesired = true
	if _, err := l.Launch(context.Background(), "web", 1, false); err != nil {
		t.Fatal(err)
	}
	// Another workstation: no playbooks at all.
	other := l
	other.Playbooks = t.TempDir()
	st := states(t, &other)["web"]
	if st.OnFailure != OnFailureAlert || st.PolicySource != PolicyFromCluster || st.PolicyError != "" {
		t.Errorf("web from another workstation: on_failure %q from %q (%s), want alert from the cluster", st.OnFailure, st.PolicySource, st.PolicyError)
	}
	if st := states(t, &other)["lb"]; st.PolicySource != PolicyFromLocal || st.OnFailure != OnFailureNone {
		t.Errorf("lb, never launched here: %+v, want the local default", st)
	}
}

// A dependent whose policy is recorded in the cluster is re-applied from a
// workstation whose own copy of its service.yaml says nothing about it, so
// every workstation keeps the load balancer in step.
func TestDependentsFollowTheRecordedPolicy(t *testing.T) {
	w := newHealWorld(t, relaunchPolicy)
	if err := os.Remove(filepath.Join(w.playbooks, "lb", "service.yaml")); err != nil {
		t.Fatal(err)
	}
	pol := "on_failure: relaunch\ndepends_on: [web]\n"
	if _, err := w.r.Launcher.Client.ChangeDesired(context.Background(), "lb", apitypes.DesiredChange{Policy: &pol}); err != nil {
		t.Fatal(err)
	}
	seen := 0
	if _, err := w.r.Launcher.Launch(context.Background(), "web", 1, false); err != nil {
		t.Fatal(err)
	}
	expectCalls(t, w, &seen, "web pi-4", "lb pi-1")
	if got := w.upstream(t); got != "pi-2 pi-3 pi-4" {
		t.Errorf("upstream = %q, want the three web servers", got)
	}
}

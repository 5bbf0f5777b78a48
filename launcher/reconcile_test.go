package launcher

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit/fakeagent"
)

// healWorld is a fake cluster with a web service on pi-2 and pi-3 (desired
// 2) behind a load balancer on pi-1, the services' playbooks and templates,
// a fake ansible-playbook and a manual clock.
type healWorld struct {
	c         *fakeagent.Cluster
	fakeDir   string
	playbooks string
	build     string
	r         *Reconciler
	out       *testutil.SyncBuffer
	now       time.Time
}

func mon(load float64) apitypes.Monitoring {
	return apitypes.Monitoring{CPUs: 4, MemTotal: 100, MemUsed: 10, Load1: load, Load5: load, Load15: load}
}

func newHealWorld(t *testing.T, webPolicy string) *healWorld {
	t.Helper()
	path, fakeDir := fakeAnsible(t)
	root := t.TempDir()
	w := &healWorld{fakeDir: fakeDir, playbooks: filepath.Join(root, "playbooks"), build: filepath.Join(root, "build"),
		out: &testutil.SyncBuffer{}, now: time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)}
	files := map[string]string{
		"playbooks/web/install.yml":       "- hosts: web\n",
		"playbooks/web/uninstall.yml":     "- hosts: web\n",
		"playbooks/web/service.yaml":      webPolicy,
		"playbooks/lb/install.yml":        "- hosts: lb\n",
		"playbooks/lb/service.yaml":       "on_failure: relaunch\ndepends_on: [web]\n",
		"templates/lb/upstream.conf.tmpl": "{{ range .Service \"web\" }}{{ .Name }}\n{{ end }}",
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
	w.c = fakeagent.Start(t, []apitypes.Node{
		{Name: "pi-1", Services: []string{"lb"}, PhiThreshold: 8, Monitoring: mon(3)},
		{Name: "pi-2", Services: []string{"web"}, PhiThreshold: 8, Monitoring: mon(1)},
		{Name: "pi-3", Services: []string{"web"}, PhiThreshold: 8, Monitoring: mon(1)},
		{Name: "pi-4", PhiThreshold: 8, Monitoring: mon(0.1)},
		{Name: "pi-5", PhiThreshold: 8, Monitoring: mon(0.5)},
	})
	w.c.SetDesired("web", 2)
	cl, err := client.New(w.c.URL("pi-1"), "")
	if err != nil {
		t.Fatal(err)
	}
	w.r = &Reconciler{
		Launcher: &Launcher{Client: cl, Cluster: "rpi", Playbooks: w.playbooks, Templates: filepath.Join(root, "templates"),
			BuildDir: w.build, Runner: &Runner{Path: path}, Out: w.out, SSHPort: fakeSSH(t, "127.0.0.1")},
		BackoffMin: 10 * time.Second,
		BackoffMax: 40 * time.Second,
		Log:        slog.New(slog.NewTextHandler(w.out, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:        func() time.Time { return w.now },
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("reconciler output:\n%s", w.out.String())
		}
	})
	return w
}

// pass advances the clock by d and runs one reconcile pass.
func (w *healWorld) pass(t *testing.T, d time.Duration) *PassResult {
	t.Helper()
	w.now = w.now.Add(d)
	res, err := w.r.Reconcile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func (w *healWorld) calls(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(w.fakeDir, "calls"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

func (w *healWorld) upstream(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(w.build, "lb", "upstream.conf"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(strings.Fields(string(data)), " ")
}

func (w *healWorld) setStatus(node, status string) {
	n := w.c.Update(node, func(n *apitypes.Node) { n.Status = status })
	kind := apitypes.EventUpdate
	if status == apitypes.StatusFailed {
		kind = apitypes.EventFail
	}
	w.c.Emit(apitypes.Event{Kind: kind, Node: n})
}

// expectCalls checks the ansible-playbook runs since the last check: each
// want is "playbook-dir limit", e.g. "web pi-4".
func expectCalls(t *testing.T, w *healWorld, seen *int, want ...string) {
	t.Helper()
	all := w.calls(t)
	got := all[*seen:]
	*seen = len(all)
	var short []string
	for _, c := range got {
		f := strings.Fields(c)
		limit, book := "", filepath.Base(filepath.Dir(f[len(f)-1]))
		for i, a := range f {
			if a == "--limit" {
				limit = f[i+1]
			}
		}
		short = append(short, book+" "+limit)
	}
	if !slices.Equal(short, want) {
		t.Fatalf("ansible-playbook runs = %q, want %q", short, want)
	}
}

const relaunchPolicy = "on_failure: relaunch\ngrace_period: 30s\n"

func TestReconcileReplacesAfterGraceOnceAndKeepsReturnedNode(t *testing.T) {
	w := newHealWorld(t, relaunchPolicy)
	seen := 0
	if res := w.pass(t, 0); len(res.Launched) != 0 {
		t.Fatalf("healthy cluster: launched %v", res.Launched)
	}
	expectCalls(t, w, &seen)

	w.setStatus("pi-2", apitypes.StatusFailed)
	res := w.pass(t, time.Second)
	expectCalls(t, w, &seen) // within grace: nothing
	if want := w.now.Add(30 * time.Second); !res.WakeAt.Equal(want) {
		t.Errorf("WakeAt = %v, want the end of the grace period %v", res.WakeAt, want)
	}
	w.pass(t, 29*time.Second)
	expectCalls(t, w, &seen)

	res = w.pass(t, time.Second)
	expectCalls(t, w, &seen, "web pi-4", "lb pi-1") // least busy, then the load balancer
	if !reflect.DeepEqual(res.Launched, map[string][]string{"web": {"pi-4"}}) {
		t.Errorf("launched = %v", res.Launched)
	}
	if got := w.upstream(t); got != "pi-3 pi-4" {
		t.Errorf("upstream = %q, want the live web servers pi-3 pi-4 (dead pi-2 gone)", got)
	}
	for _, d := range w.c.Desired() {
		if d.Service == "web" && d.Replicas != 2 {
			t.Errorf("desired = %+v: a replacement must not raise it", d)
		}
	}
	// Acted once: the dead node's stale record does not cause another.
	w.pass(t, time.Minute)
	expectCalls(t, w, &seen)

	// pi-2 returns after it was replaced: three replicas for a desired two.
	// The extra is left running and the load balancer gets it back.
	w.setStatus("pi-2", apitypes.StatusAlive)
	res = w.pass(t, time.Second)
	expectCalls(t, w, &seen, "lb pi-1")
	if len(res.Launched) != 0 || w.c.Services("pi-2")[0] != "web" {
		t.Errorf("returned node: launched %v, pi-2 services %v", res.Launched, w.c.Services("pi-2"))
	}
	if got := w.upstream(t); got != "pi-2 pi-3 pi-4" {
		t.Errorf("upstream = %q", got)
	}
	for _, wr := range w.c.Writes() {
		if wr.Method == "DELETE" {
			t.Errorf("surplus removed: %v", wr)
		}
	}
	if !strings.Contains(w.out.String(), "more replicas than desired; leaving them running") {
		t.Error("surplus not logged")
	}
	w.pass(t, time.Minute)
	expectCalls(t, w, &seen)
}

func TestReconcileFlappingNodeWithinGraceDoesNothing(t *testing.T) {
	w := newHealWorld(t, relaunchPolicy)
	seen := 0
	w.pass(t, 0)
	for i := 0; i < 3; i++ {
		w.setStatus("pi-2", apitypes.StatusFailed)
		w.pass(t, 20*time.Second)
		w.setStatus("pi-2", apitypes.StatusAlive)
		w.pass(t, 20*time.Second)
	}
	// Suspicion over the policy's threshold counts as down too.
	w.c.Update("pi-3", func(n *apitypes.Node) { n.Phi = 9 })
	w.pass(t, 25*time.Second)
	w.c.Update("pi-3", func(n *apitypes.Node) { n.Phi = 0.5 })
	w.pass(t, 25*time.Second)
	expectCalls(t, w, &seen)
	if len(w.c.Writes()) != 0 {
		t.Errorf("writes %v", w.c.Writes())
	}
	// The grace restarts when a node goes down again: 29 s after its last
	// failure nothing, 30 s after it the replacement.
	w.setStatus("pi-2", apitypes.StatusFailed)
	w.pass(t, 0)
	w.pass(t, 29*time.Second)
	expectCalls(t, w, &seen)
	w.pass(t, time.Second)
	expectCalls(t, w, &seen, "web pi-4", "lb pi-1")
}

func TestReconcileAlertAndNone(t *testing.T) {
	t.Run("alert", func(t *testing.T) {
		w := newHealWorld(t, "on_failure: alert\ngrace_period: 5s\n")
		seen := 0
		w.pass(t, 0)
		w.setStatus("pi-2", apitypes.StatusFailed)
		w.pass(t, time.Second)
		res := w.pass(t, 5*time.Second)
		if len(res.Alerts) != 1 || !strings.Contains(res.Alerts[0], "web runs on 1 of 2 desired node(s); down: pi-2") {
			t.Errorf("alerts = %q", res.Alerts)
		}
		// No replacement; the load balancer still stops sending to pi-2.
		expectCalls(t, w, &seen, "lb pi-1")
		if got := w.upstream(t); got != "pi-3" {
			t.Errorf("upstream = %q, want pi-3 only", got)
		}
		if res = w.pass(t, time.Minute); len(res.Alerts) != 0 {
			t.Errorf("alert repeated: %q", res.Alerts)
		}
		expectCalls(t, w, &seen)
		if !strings.Contains(w.out.String(), "level=WARN msg=alert service=web missing=1") {
			t.Errorf("no structured alert line in the output")
		}
	})
	t.Run("none", func(t *testing.T) {
		w := newHealWorld(t, "on_failure: none\ngrace_period: 5s\n")
		seen := 0
		w.pass(t, 0)
		w.setStatus("pi-2", apitypes.StatusFailed)
		w.pass(t, time.Second)
		if res := w.pass(t, time.Minute); len(res.Alerts)+len(res.Launched)+len(res.Reapplied) != 0 {
			t.Errorf("policy none acted: %+v", res)
		}
		expectCalls(t, w, &seen)
	})
}

func TestReconcileBacksOffAfterFailedPlay(t *testing.T) {
	w := newHealWorld(t, "on_failure: relaunch\ngrace_period: 0s\n")
	seen := 0
	t.Setenv("FAKE_FAIL", "pi-4")
	w.setStatus("pi-2", apitypes.StatusFailed)
	res := w.pass(t, 0)
	// The play failed on pi-4: nothing recorded, but the load balancer is
	// re-rendered without the dead node anyway.
	expectCalls(t, w, &seen, "web pi-4", "lb pi-1")
	if len(res.Launched) != 0 || len(w.c.Writes()) != 0 {
		t.Fatalf("failed play recorded: launched %v writes %v", res.Launched, w.c.Writes())
	}
	if got := w.upstream(t); got != "pi-3" {
		t.Errorf("upstream = %q, want pi-3 only", got)
	}
	// Back-off: 10 s, then 20 s, then 40 s (capped).
	for _, wait := range []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 40 * time.Second} {
		w.pass(t, wait-time.Second)
		expectCalls(t, w, &seen)
		w.pass(t, time.Second)
		expectCalls(t, w, &seen, "web pi-4")
	}
	t.Setenv("FAKE_FAIL", "")
	w.pass(t, 39*time.Second)
	expectCalls(t, w, &seen)
	res = w.pass(t, time.Second)
	expectCalls(t, w, &seen, "web pi-4", "lb pi-1")
	if got := w.upstream(t); got != "pi-3 pi-4" {
		t.Errorf("upstream = %q", got)
	}
	// Success resets the back-off: the next failure waits 10 s again.
	t.Setenv("FAKE_FAIL", "pi-5")
	w.setStatus("pi-3", apitypes.StatusFailed)
	w.pass(t, time.Second)
	expectCalls(t, w, &seen, "web pi-5", "lb pi-1")
	w.pass(t, 10*time.Second)
	expectCalls(t, w, &seen, "web pi-5")
}

func TestReconcileDependentsWhenNothingCanReplace(t *testing.T) {
	w := newHealWorld(t, "on_failure: relaunch\ngrace_period: 0s\n")
	seen := 0
	// Every other node is busy with phi over the threshold: no candidate.
	for _, n := range []string{"pi-1", "pi-4", "pi-5"} {
		w.c.Update(n, func(n *apitypes.Node) { n.Phi = 9 })
	}
	w.setStatus("pi-2", apitypes.StatusFailed)
	w.pass(t, 0)
	expectCalls(t, w, &seen, "lb pi-1")
	if got := w.upstream(t); got != "pi-3" {
		t.Errorf("upstream = %q, want the dead node removed", got)
	}
	if !strings.Contains(w.out.String(), "want 1 nodes, only 0 candidates") {
		t.Error("the reason for no replacement is not in the output")
	}
}

func TestWatchReactsToEventsAndMovesToAnotherAgent(t *testing.T) {
	w := newHealWorld(t, "on_failure: relaunch\ngrace_period: 0s\n")
	w.r.Now = nil
	w.r.Interval = time.Hour // only events (and the first pass) trigger passes
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.r.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch returned %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Watch did not stop after cancel")
		}
	})
	testutil.WaitFor(t, 10*time.Second, func() error {
		if w.c.Subscribers("pi-1") != 1 {
			return fmt.Errorf("not following pi-1's events yet")
		}
		return nil
	})

	w.setStatus("pi-2", apitypes.StatusFailed)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if !slices.Contains(w.c.Services("pi-4"), "web") {
			return fmt.Errorf("no replacement on pi-4 yet; writes %v", w.c.Writes())
		}
		return nil
	})

	// The followed agent goes away: the watch moves to another one and
	// keeps reacting.
	w.c.Stop("pi-1")
	testutil.WaitFor(t, 20*time.Second, func() error {
		for _, n := range []string{"pi-2", "pi-3", "pi-4", "pi-5"} {
			if w.c.Subscribers(n) > 0 {
				return nil
			}
		}
		return fmt.Errorf("no agent followed after pi-1 went away")
	})
	w.setStatus("pi-3", apitypes.StatusFailed)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if !slices.Contains(w.c.Services("pi-5"), "web") {
			return fmt.Errorf("no replacement on pi-5 yet; writes %v", w.c.Writes())
		}
		return nil
	})
	out := w.out.String()
	for _, want := range []string{"event stream broke; finding another agent", "moved to another agent"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if n := len(w.c.Writes()); n != 2 {
		t.Errorf("writes = %v, want exactly the two replacements", w.c.Writes())
	}
}

package cli

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/launcher"
)

func desiredOf(t *testing.T, ds []apitypes.DesiredService, svc string) int {
	t.Helper()
	for _, d := range ds {
		if d.Service == svc {
			return d.Replicas
		}
	}
	t.Fatalf("no desired count for %s in %+v", svc, ds)
	return 0
}

func TestLaunchKeepsDesiredCount(t *testing.T) {
	c := cluster(t)
	fakeAnsible(t)
	build := filepath.Join(t.TempDir(), "build")
	// One of the two chosen hosts fails: the count is raised by 2 anyway,
	// reconcile converges the rest.
	t.Setenv("FAKE_FAIL", "pi-3")
	out, err := launch(t, "--agent", c.URL("pi-4"), "--build-dir", build, "2", "nginx_webserver")
	if err == nil {
		t.Fatal("partial launch reported success")
	}
	if got := desiredOf(t, c.Desired(), "nginx_webserver"); got != 2 {
		t.Errorf("desired after a partial launch = %d, want 2", got)
	}
	if !strings.Contains(out, "desired nginx_webserver: 2 replica(s) (+2)") {
		t.Errorf("output lacks the desired count:\n%s", out)
	}
	// Every host fails: nothing is raised.
	t.Setenv("FAKE_FAIL", "pi-1,pi-3,pi-4")
	if _, err := launch(t, "--agent", c.URL("pi-4"), "--build-dir", build, "2", "nginx_webserver"); err == nil {
		t.Fatal("failed launch reported success")
	}
	if got := desiredOf(t, c.Desired(), "nginx_webserver"); got != 2 {
		t.Errorf("desired after a failed launch = %d, want still 2", got)
	}
	// A dry run and an impossible plan record nothing.
	t.Setenv("FAKE_FAIL", "")
	launch(t, "--agent", c.URL("pi-4"), "--build-dir", build, "--dry-run", "1", "nginx_webserver")
	launch(t, "--agent", c.URL("pi-4"), "--build-dir", build, "9", "nginx_webserver")
	if got := desiredOf(t, c.Desired(), "nginx_webserver"); got != 2 {
		t.Errorf("desired after dry run and impossible plan = %d, want 2", got)
	}
	// --remove lowers it.
	if _, err := launch(t, "--agent", c.URL("pi-4"), "--build-dir", build, "--remove", "1", "nginx_webserver"); err != nil {
		t.Fatal(err)
	}
	if got := desiredOf(t, c.Desired(), "nginx_webserver"); got != 1 {
		t.Errorf("desired after --remove 1 = %d, want 1", got)
	}
}

func TestStatusAndOneShotReconcile(t *testing.T) {
	c := cluster(t)
	_, dir := fakeAnsible(t)
	build := filepath.Join(t.TempDir(), "build")
	// pi-5 (failed, its agent down) still lists the web server in its
	// stale record; pi-2 runs it; two are wanted.
	c.Update("pi-5", func(n *apitypes.Node) { n.Services = []string{"nginx_webserver"} })
	c.Update("pi-2", func(n *apitypes.Node) { n.Services = []string{"nginx_webserver"} })
	c.SetDesired("nginx_webserver", 2)

	out, err := launch(t, "--agent", c.URL("pi-1"), "status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"SERVICE              DESIRED  ACTUAL  ON FAILURE  NODES  DOWN",
		"nginx_load_balancer  -        1       relaunch    pi-1   -",
		"nginx_webserver      2        1       relaunch    pi-2   pi-5 (failed)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q", want)
		}
	}
	out, err = launch(t, "--agent", c.URL("pi-1"), "status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var states []launcher.ServiceState
	if err := json.Unmarshal([]byte(out), &states); err != nil || len(states) != 2 {
		t.Fatalf("status --json = %q (%v)", out, err)
	}
	if s := states[1]; s.Service != "nginx_webserver" || s.Desired != 2 || !slices.Equal(s.Actual, []string{"pi-2"}) || s.Down[0].Name != "pi-5" {
		t.Errorf("status --json web = %+v", s)
	}

	// One pass: pi-5 is already down, so the replacement runs at once on
	// the least busy candidate, and the load balancer is re-applied.
	out, err = launch(t, "reconcile", "--agent", c.URL("pi-1"), "--build-dir", build)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(c.Services("pi-3"), "nginx_webserver") {
		t.Errorf("no replacement on pi-3; writes %v", c.Writes())
	}
	if !strings.Contains(out, "nginx_webserver: desired 2, running 2, launched on pi-3") || !strings.Contains(out, "msg=relaunching service=nginx_webserver missing=1") {
		t.Errorf("reconcile output:\n%s", out)
	}
	cs := calls(t, dir)
	if len(cs) != 2 || !strings.Contains(cs[0], "--limit pi-3 ") || !strings.Contains(cs[1], "--limit pi-1 ") {
		t.Errorf("calls = %q", cs)
	}
	if got := desiredOf(t, c.Desired(), "nginx_webserver"); got != 2 {
		t.Errorf("reconcile changed the desired count to %d", got)
	}
	if _, err := launch(t, "reconcile", "--agent", c.URL("pi-1"), "--interval", "0s", "--watch"); err == nil || !strings.Contains(err.Error(), "must be positive") {
		t.Errorf("bad interval: %v", err)
	}
}

func TestLaunchWithAgentWithoutDesiredState(t *testing.T) {
	c := cluster(t)
	c.NoDesired = true
	fakeAnsible(t)
	out, err := launch(t, "--agent", c.URL("pi-1"), "--build-dir", t.TempDir(), "1", "nginx_webserver")
	if err != nil {
		t.Fatalf("launch failed against an agent without desired state: %v", err)
	}
	if !strings.Contains(out, "keeps no desired state (upgrade rpi-agent); nginx_webserver +1 not recorded") {
		t.Errorf("no warning:\n%s", out)
	}
	if !slices.Contains(c.Services("pi-2"), "nginx_webserver") {
		t.Errorf("not deployed: writes %v", c.Writes())
	}
}

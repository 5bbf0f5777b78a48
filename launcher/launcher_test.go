package launcher

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

func TestParsePolicy(t *testing.T) {
	p, err := ParsePolicy([]byte("phi_threshold: 5\non_failure: alert\ndepends_on: [a.b]\ngrace_period: 1m\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Policy{PhiThreshold: 5, OnFailure: "alert", DependsOn: []string{"a.b"}, GracePeriod: Duration(time.Minute)}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("got %+v, want %+v", p, want)
	}
	if p, _ := ParsePolicy(nil); !reflect.DeepEqual(p, DefaultPolicy()) {
		t.Errorf("empty file = %+v, want defaults", p)
	}
	for doc, wantErr := range map[string]string{
		"phi_treshold: 5\n":        "field phi_treshold not found",
		"on_failure: restart\n":    "must be relaunch, alert or none",
		"grace_period: 30\n":       "use a number with a unit",
		"depends_on: [Bad/Name]\n": "invalid service name",
		"phi_threshold: -1\n":      "must be 0",
	} {
		if _, err := ParsePolicy([]byte(doc)); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%q: error %v, want %q", doc, err, wantErr)
		}
	}
}

func TestRepositoryPolicies(t *testing.T) {
	for _, svc := range []string{"nginx_webserver", "nginx_load_balancer", "kvstore"} {
		if _, err := LoadPolicy("../playbooks", svc); err != nil {
			t.Error(err)
		}
	}
	deps, err := Dependents("../playbooks", "nginx_webserver")
	if err != nil || !reflect.DeepEqual(deps, []string{"nginx_load_balancer"}) {
		t.Errorf("Dependents(nginx_webserver) = %v, %v; want [nginx_load_balancer]", deps, err)
	}
	// kvstore's peer list is its own node set.
	deps, err = Dependents("../playbooks", "kvstore")
	if err != nil || !reflect.DeepEqual(deps, []string{"kvstore"}) {
		t.Errorf("Dependents(kvstore) = %v, %v; want [kvstore]", deps, err)
	}
}

func node(name, status string, load, phi float64, services ...string) apitypes.Node {
	return apitypes.Node{Name: name, Address: "10.0.0." + name[len(name)-1:], Status: status, Services: services,
		Phi: phi, PhiThreshold: 8, Monitoring: apitypes.Monitoring{CPUs: 4, MemTotal: 100, MemUsed: 10, Load1: load, Load5: load, Load15: load}}
}

func TestPlanLaunch(t *testing.T) {
	nodes := []apitypes.Node{
		node("pi-1", apitypes.StatusAlive, 3.9, 0),      // busy
		node("pi-2", apitypes.StatusAlive, 0.1, 0),      // idle
		node("pi-3", apitypes.StatusAlive, 0.1, 0),      // idle, ties with pi-2
		node("pi-4", apitypes.StatusFailed, 0, 0),       // failed
		node("pi-5", apitypes.StatusAlive, 0, 9),        // phi over the node's threshold 8
		node("pi-6", apitypes.StatusAlive, 0, 0, "web"), // already runs it
		node("pi-7", apitypes.StatusSuspect, 0, 2),      // suspect
		node("pi-8", apitypes.StatusAlive, 0.5, 4),      // under 8 but over the policy's 3
	}
	p, err := PlanLaunch(nodes, "web", 2, Policy{})
	if err != nil {
		t.Fatal(err)
	}
	if got := nodeNames(p.ChosenNodes()); !reflect.DeepEqual(got, []string{"pi-2", "pi-3"}) {
		t.Errorf("chosen = %v, want [pi-2 pi-3]", got)
	}
	p, err = PlanLaunch(nodes, "web", 3, Policy{PhiThreshold: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := nodeNames(p.ChosenNodes()); !reflect.DeepEqual(got, []string{"pi-2", "pi-3", "pi-1"}) {
		t.Errorf("chosen with policy threshold 3 = %v, want [pi-2 pi-3 pi-1] (pi-8 excluded)", got)
	}
	_, err = PlanLaunch(nodes, "web", 4, Policy{PhiThreshold: 3})
	var ie *InsufficientError
	if !errors.As(err, &ie) {
		t.Fatalf("want InsufficientError, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"want 4 nodes, only 3 candidates", "pi-4 (status failed)", "pi-5 (phi 9.00 >= threshold 3.00)", "pi-6 (already runs web)", "pi-7 (status suspect)", "pi-8 (phi 4.00"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q: %s", want, msg)
		}
	}
}

func TestPlanRemove(t *testing.T) {
	nodes := []apitypes.Node{node("pi-1", apitypes.StatusAlive, 0.1, 0, "web"), node("pi-2", apitypes.StatusAlive, 2, 0, "web"), node("pi-3", apitypes.StatusAlive, 3, 0)}
	p, err := PlanRemove(nodes, "web", 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := nodeNames(p.ChosenNodes()); !reflect.DeepEqual(got, []string{"pi-2"}) {
		t.Errorf("removed from %v, want the busiest runner pi-2", got)
	}
	if _, err := PlanRemove(nodes, "web", 3); err == nil || !strings.Contains(err.Error(), "only 2 nodes run it") {
		t.Errorf("error = %v", err)
	}
}

func TestRenderUpstream(t *testing.T) {
	nodes := []apitypes.Node{node("pi-1", apitypes.StatusAlive, 0, 0, "nginx_webserver"), node("pi-2", apitypes.StatusFailed, 0, 0, "nginx_webserver"), node("pi-3", apitypes.StatusAlive, 0, 0)}
	after := WithService(nodes, []string{"pi-3"}, "nginx_webserver", true)
	out := filepath.Join(t.TempDir(), "build", "nginx_load_balancer")
	os.MkdirAll(out, 0o755)
	os.WriteFile(filepath.Join(out, "stale.conf"), []byte("x"), 0o644)
	files, err := Render("../templates/nginx_load_balancer", out, NewTemplateData("rpi", after, nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || files[0].Path != "upstream.conf" {
		t.Fatalf("files = %+v", files)
	}
	got, _ := os.ReadFile(filepath.Join(out, "upstream.conf"))
	for _, want := range []string{"server 10.0.0.1:80 max_fails=2 fail_timeout=5s; # pi-1", "server 10.0.0.3:80"} {
		if !bytes.Contains(got, []byte(want)) {
			t.Errorf("upstream lacks %q:\n%s", want, got)
		}
	}
	if bytes.Contains(got, []byte("10.0.0.2")) {
		t.Errorf("failed node in the upstream:\n%s", got)
	}
	if _, err := os.Stat(filepath.Join(out, "stale.conf")); !os.IsNotExist(err) {
		t.Errorf("stale file survived the render: %v", err)
	}
	files, _ = Render("../templates/nginx_load_balancer", "", NewTemplateData("rpi", nil, nil))
	if !bytes.Contains(files[0].Content, []byte("server 127.0.0.1:9 down;")) {
		t.Errorf("empty upstream not kept valid:\n%s", files[0].Content)
	}
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "x.tmpl"), []byte("{{ .Nope }}"), 0o644)
	if _, err := Render(bad, "", TemplateData{}); err == nil || !strings.Contains(err.Error(), "x.tmpl") {
		t.Errorf("bad template error = %v, want it to name the file", err)
	}
}

// fakeAnsible writes an ansible-playbook stand-in that records its
// arguments, environment and inventory, prints a PLAY RECAP for every host
// in --limit and fails the hosts listed in $FAKE_FAIL.
func fakeAnsible(t *testing.T) (path, dir string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "ansible-playbook")
	script := `#!/bin/sh
echo "$@" >> "$FAKE_DIR/calls"
env | grep '^ANSIBLE_' | sort > "$FAKE_DIR/env"
limit=""
while [ $# -gt 0 ]; do
	case "$1" in
	--limit) limit="$2"; shift ;;
	-i) cp "$2" "$FAKE_DIR/inventory.json" ;;
	esac
	shift
done
echo "PLAY [fake] ******"
echo "fake: noise on stderr" >&2
echo
printf '\033[0;32mPLAY RECAP\033[0m *********************************************************************\n'
status=0
for h in $(echo "$limit" | tr ',' ' '); do
	case ",$FAKE_FAIL," in
	*",$h,"*) printf '%-26s : ok=1    changed=0    unreachable=0    failed=1    skipped=0    rescued=0    ignored=0\n' "$h"; status=2 ;;
	*",$h:unreachable,"*) printf '%-26s : ok=0    changed=0    unreachable=1    failed=0    skipped=0    rescued=0    ignored=0\n' "$h"; status=4 ;;
	*) printf '%-26s : ok=3    changed=2    unreachable=0    failed=0    skipped=0    rescued=0    ignored=0\n' "$h" ;;
	esac
done
echo
exit $status
`
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FAKE_DIR", dir)
	t.Setenv("FAKE_FAIL", "")
	return path, dir
}

func TestRunner(t *testing.T) {
	path, dir := fakeAnsible(t)
	t.Setenv("FAKE_FAIL", "b,c:unreachable")
	t.Setenv("ANSIBLE_STDOUT_CALLBACK", "json")
	var stdout, stderr bytes.Buffer
	r := &Runner{Path: path, Stdout: &stdout, Stderr: &stderr, MaxCapture: 64}
	res, err := r.Run(context.Background(), RunSpec{Playbook: "pb.yml", Inventory: "/dev/null", Limit: []string{"a", "b", "c"},
		ExtraVars: map[string]any{"rpi_build_dir": "/x y"}, Args: []string{"--check"}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Succeeded("a") || res.Succeeded("b") || res.Succeeded("c") || res.Succeeded("d") {
		t.Errorf("per-host results wrong: %+v", res.Hosts)
	}
	if res.ExitCode != 4 || res.Hosts["a"].Changed != 2 {
		t.Errorf("exit %d, hosts %+v", res.ExitCode, res.Hosts)
	}
	if len(res.Output) > 64 {
		t.Errorf("captured %d bytes, limit 64", len(res.Output))
	}
	if !strings.Contains(stdout.String(), "PLAY [fake]") || !strings.Contains(stderr.String(), "noise on stderr") {
		t.Errorf("output not streamed: stdout %q stderr %q", stdout.String(), stderr.String())
	}
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	if want := `-i /dev/null --limit a,b,c -e {"rpi_build_dir":"/x y"} --check pb.yml`; strings.TrimSpace(string(calls)) != want {
		t.Errorf("args = %q, want %q", calls, want)
	}
	env, _ := os.ReadFile(filepath.Join(dir, "env"))
	if !strings.Contains(string(env), "ANSIBLE_STDOUT_CALLBACK=default\n") || strings.Contains(string(env), "HOST_KEY_CHECKING") {
		t.Errorf("environment: %s", env)
	}
}

func TestRunnerErrors(t *testing.T) {
	dir := t.TempDir()
	noRecap := filepath.Join(dir, "broken")
	os.WriteFile(noRecap, []byte("#!/bin/sh\necho 'ERROR! the playbook could not be found' >&2\nexit 1\n"), 0o755)
	_, err := (&Runner{Path: noRecap}).Run(context.Background(), RunSpec{Playbook: "x.yml", Inventory: "i"})
	if err == nil || !strings.Contains(err.Error(), "without a PLAY RECAP") || !strings.Contains(err.Error(), "could not be found") {
		t.Errorf("error = %v", err)
	}
	_, err = (&Runner{Path: filepath.Join(dir, "missing")}).Run(context.Background(), RunSpec{Playbook: "x.yml", Inventory: "i"})
	if err == nil || !strings.Contains(err.Error(), "is ansible-core installed") {
		t.Errorf("error = %v", err)
	}
	// Cancellation interrupts a hanging run.
	hang := filepath.Join(dir, "hang")
	os.WriteFile(hang, []byte("#!/bin/sh\nexec sleep 30\n"), 0o755)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := (&Runner{Path: hang}).Run(ctx, RunSpec{Playbook: "x.yml", Inventory: "i"})
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled run error = %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("cancelled run did not stop")
	}
}

// The runner is the last stop before ansible-playbook: whatever its caller
// checked, a --limit entry that is not a valid node name never reaches the
// command line ("all" and "a,b" select other hosts than the ones meant).
func TestRunnerRefusesALimitThatIsNotANodeName(t *testing.T) {
	path, dir := fakeAnsible(t)
	for _, bad := range []string{"all", "s1,127.0.20.1", "evil ansible_connection=local", "web:&db", "a\nb", ""} {
		_, err := (&Runner{Path: path}).Run(context.Background(), RunSpec{Playbook: "pb.yml", Inventory: "/dev/null", Limit: []string{"pi-1", bad}})
		if err == nil || strings.ContainsAny(err.Error(), "\n") {
			t.Errorf("limit %q: error %v, want a refusal on one line", bad, err)
		}
	}
	if calls, err := os.ReadFile(filepath.Join(dir, "calls")); err == nil {
		t.Errorf("ansible-playbook ran:\n%s", calls)
	}
}

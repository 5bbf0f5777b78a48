package launcher

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// fakeSSH listens on host:0 and greets every connection as an SSH server
// does; it returns the port.
func fakeSSH(t *testing.T, host string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"))
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestDialSSH(t *testing.T) {
	port := fakeSSH(t, "127.0.0.1")
	if err := DialSSH(context.Background(), apitypes.Node{Name: "pi-1", Address: "127.0.0.1"}, port); err != nil {
		t.Errorf("SSH server not reached: %v", err)
	}
	// Nothing listens on a port just closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if err := DialSSH(context.Background(), apitypes.Node{Name: "pi-1", Address: "127.0.0.1"}, closed); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("closed port: %v, want connection refused", err)
	}
	// Something that is not SSH.
	http, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer http.Close()
	go func() {
		c, err := http.Accept()
		if err == nil {
			c.Write([]byte("HTTP/1.1 400 Bad Request\r\n"))
			c.Close()
		}
	}()
	if err := DialSSH(context.Background(), apitypes.Node{Name: "pi-1", Address: "127.0.0.1"}, http.Addr().(*net.TCPAddr).Port); err == nil || !strings.Contains(err.Error(), "not an SSH greeting") {
		t.Errorf("HTTP server: %v, want not an SSH greeting", err)
	}
}

// preflightWorld is healWorld's cluster with an SSH greeter on 127.0.0.1
// and nginx-like services: lb reads {{ rpi_build_dir }}.
func preflightWorld(t *testing.T) *healWorld {
	w := newHealWorld(t, relaunchPolicy)
	if err := os.WriteFile(filepath.Join(w.playbooks, "lb", "install.yml"), []byte("- hosts: lb\n  tasks:\n    - copy: {src: \"{{ rpi_build_dir }}/upstream.conf\", dest: /etc/x}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return w
}

// nothingHappened checks that no playbook ran, no service was recorded and
// the desired count is unchanged.
func nothingHappened(t *testing.T, w *healWorld, desiredWeb int) {
	t.Helper()
	if cs := w.calls(t); len(cs) != 0 {
		t.Errorf("ansible-playbook ran: %q", cs)
	}
	if ws := w.c.Writes(); len(ws) != 0 {
		t.Errorf("records written: %v", ws)
	}
	for _, d := range w.c.Desired() {
		if d.Service == "web" && d.Replicas != desiredWeb {
			t.Errorf("desired web = %d, want %d", d.Replicas, desiredWeb)
		}
	}
}

// A wrong token stops a launch before any playbook runs: the play would
// install what the agents then refuse to record.
func TestLaunchPreflightWrongToken(t *testing.T) {
	w := preflightWorld(t)
	w.c.Token = "right"
	l := *w.r.Launcher
	l.Client.Token = "wrong"
	l.RecordDesired = true
	_, err := l.Launch(context.Background(), "web", 1, false)
	var pe *PreflightError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "token") || !strings.Contains(err.Error(), "401") {
		t.Fatalf("error = %v, want a preflight error naming the token and the 401", err)
	}
	nothingHappened(t, w, 2)
}

// A chosen host that does not answer SSH stops the launch before anything
// runs on any host.
func TestLaunchPreflightUnreachableHost(t *testing.T) {
	w := preflightWorld(t)
	l := *w.r.Launcher
	l.RecordDesired = true
	good := fakeSSH(t, "127.0.0.1")
	l.ReachSSH = func(ctx context.Context, n apitypes.Node, _ int) error {
		if n.Name == "pi-5" {
			n.Address = "127.0.0.1"
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			port := ln.Addr().(*net.TCPAddr).Port
			ln.Close()
			return DialSSH(ctx, n, port)
		}
		return DialSSH(ctx, n, good)
	}
	_, err := l.Launch(context.Background(), "web", 2, false)
	if err == nil || !strings.Contains(err.Error(), `node "pi-5" reachability`) {
		t.Fatalf("error = %v, want pi-5 reported unreachable", err)
	}
	nothingHappened(t, w, 2)
}

// Templates missing for a service whose playbook reads the build directory
// (the load balancer, re-applied after a web launch) stop the launch before
// anything runs, and the build folder is left as it was.
func TestLaunchPreflightMissingTemplates(t *testing.T) {
	w := preflightWorld(t)
	l := *w.r.Launcher
	l.RecordDesired = true
	l.Templates = filepath.Join(t.TempDir(), "elsewhere")
	old := filepath.Join(w.build, "lb", "upstream.conf")
	if err := os.MkdirAll(filepath.Dir(old), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old, []byte("pi-2\npi-3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := l.Launch(context.Background(), "web", 1, false)
	if err == nil || !strings.Contains(err.Error(), "templates of lb") || !strings.Contains(err.Error(), "--templates") {
		t.Fatalf("error = %v, want the missing lb templates named with the flag to set", err)
	}
	nothingHappened(t, w, 2)
	if data, err := os.ReadFile(old); err != nil || string(data) != "pi-2\npi-3\n" {
		t.Errorf("build folder changed: %q, %v", data, err)
	}
}

// A template that does not render stops the launch before anything runs.
func TestLaunchPreflightTemplateError(t *testing.T) {
	w := preflightWorld(t)
	l := *w.r.Launcher
	tmpl := filepath.Join(l.Templates, "lb", "upstream.conf.tmpl")
	if err := os.WriteFile(tmpl, []byte("{{ .NoSuchField }}"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := l.Launch(context.Background(), "web", 1, false)
	if err == nil || !strings.Contains(err.Error(), "NoSuchField") {
		t.Fatalf("error = %v, want the render error", err)
	}
	nothingHappened(t, w, 2)
}

// The 2015 project's layout, playbooks/<svc>/install_<svc>.yml, is used
// when install.yml is not there.
func TestOldPlaybookLayout(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "redis"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"install_redis.yml", "uninstall_redis.yml"} {
		if err := os.WriteFile(filepath.Join(dir, "redis", f), []byte("- hosts: redis\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l := &Launcher{Playbooks: dir}
	for name, want := range map[string]string{InstallPlaybook: "install_redis.yml", UninstallPlaybook: "uninstall_redis.yml"} {
		got, err := l.playbook("redis", name)
		if err != nil || filepath.Base(got) != want {
			t.Errorf("playbook(redis, %s) = %q, %v; want %s", name, got, err, want)
		}
	}
	if _, err := l.playbook("nginx", InstallPlaybook); err == nil || !strings.Contains(err.Error(), "no playbook") {
		t.Errorf("missing playbook: %v", err)
	}
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// reconcile's relaunch leaves out a chosen node that fails preflight's SSH
// check and takes the next candidate, instead of failing on it forever.
func TestReconcileRelaunchSkipsUnreachableCandidate(t *testing.T) {
	w := newHealWorld(t, relaunchPolicy)
	good, closed := fakeSSH(t, "127.0.0.1"), closedPort(t)
	w.r.Launcher.ReachSSH = func(ctx context.Context, n apitypes.Node, _ int) error {
		if n.Name == "pi-4" { // the least busy candidate
			return DialSSH(ctx, n, closed)
		}
		return DialSSH(ctx, n, good)
	}
	w.setStatus("pi-2", apitypes.StatusFailed)
	w.r.IgnoreGrace = true
	res := w.pass(t, time.Second)
	if got := res.Launched["web"]; len(got) != 1 || got[0] != "pi-5" {
		t.Fatalf("launched %v, want pi-5 in place of the unreachable pi-4\n%s", res.Launched, w.out.String())
	}
	if !strings.Contains(w.out.String(), `preflight: leaving out pi-4`) {
		t.Errorf("output does not say pi-4 was left out:\n%s", w.out.String())
	}
}

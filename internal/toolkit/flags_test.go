package toolkit

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/rpi-cluster/rpi-cluster/internal/mdns"
)

// runCommon runs an app with the common flags whose action calls fn.
func runCommon(t *testing.T, fn func(c *cli.Context) error, args ...string) (stderr string, err error) {
	t.Helper()
	var errw bytes.Buffer
	app := &cli.App{Name: "rpi-test", Flags: CommonFlags(), ErrWriter: &errw, Writer: &errw, Action: fn,
		ExitErrHandler: func(*cli.Context, error) {}}
	err = app.RunContext(context.Background(), append([]string{"rpi-test"}, args...))
	return errw.String(), err
}

// TestConfigPathEnv: the tools read RPI_WORKSTATION_CONFIG; the old shared
// RPI_CONFIG still works for them, with a warning, and only when the new
// variable is not set; RPI_AGENT_CONFIG is the agent's and never theirs.
func TestConfigPathEnv(t *testing.T) {
	var got string
	path := func(c *cli.Context) error { got = ConfigPath(c); return nil }
	for _, v := range []string{EnvConfig, EnvConfigOld, "RPI_AGENT_CONFIG"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	t.Setenv("RPI_AGENT_CONFIG", "/etc/rpi-cluster/agent.yaml")
	if stderr, _ := runCommon(t, path); stderr != "" || strings.Contains(got, "agent.yaml") {
		t.Errorf("RPI_AGENT_CONFIG alone: config %q, stderr %q; want the default, no warning", got, stderr)
	}
	t.Setenv(EnvConfigOld, "/old.yaml")
	stderr, _ := runCommon(t, path)
	if got != "/old.yaml" || !strings.Contains(stderr, "RPI_CONFIG is deprecated") || !strings.Contains(stderr, EnvConfig+"=/old.yaml") {
		t.Errorf("RPI_CONFIG alone: config %q, stderr %q; want it used, with a warning naming %s", got, stderr, EnvConfig)
	}
	t.Setenv(EnvConfig, "/new.yaml")
	if stderr, _ := runCommon(t, path); got != "/new.yaml" || stderr != "" {
		t.Errorf("both set: config %q, stderr %q; want %s's, no warning", got, stderr, EnvConfig)
	}
	if stderr, _ := runCommon(t, path, "--config", "/flag.yaml"); got != "/flag.yaml" || stderr != "" {
		t.Errorf("--config: config %q, stderr %q", got, stderr)
	}
}

// TestTokenFile: --token-file and RPI_TOKEN_FILE are read; a file every
// user may read is refused before any agent is asked.
func TestTokenFile(t *testing.T) {
	saved := Browse
	Browse = nil
	t.Cleanup(func() { Browse = saved })
	dir := t.TempDir()
	t.Setenv(EnvConfig, filepath.Join(dir, "none.yaml"))
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("s3cret\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	connect := func(c *cli.Context) error { _, err := Connect(c.Context, c, NoPin); return err }
	_, err := runCommon(t, connect, "--agent", "http://127.0.0.1:1", "--token-file", write("open", 0o644))
	if err == nil || !strings.Contains(err.Error(), "every user") || strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("world-readable --token-file: %v; want the refusal, before any agent is asked", err)
	}
	_, err = runCommon(t, connect, "--agent", "http://127.0.0.1:1", "--token", "x", "--token-file", write("ok", 0o600))
	if err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("--token with --token-file: %v", err)
	}
	t.Setenv("RPI_TOKEN_FILE", write("open2", 0o604))
	if _, err = runCommon(t, connect, "--agent", "http://127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "open2") {
		t.Errorf("world-readable RPI_TOKEN_FILE: %v; want a refusal naming it", err)
	}
}

// TestBrowseNamesAndRefuses: with no agent named, the tools use an agent
// found by mDNS only if it belongs to the workstation config's cluster, say
// on stderr which agent and cluster they use, and refuse, naming what
// answered, when only another cluster's agents did.
func TestBrowseNamesAndRefuses(t *testing.T) {
	healthy := func() *mdns.Peer {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"status":"ok"}`)
		}))
		t.Cleanup(srv.Close)
		u, _ := url.Parse(srv.URL)
		port, _ := strconv.Atoi(u.Port())
		return &mdns.Peer{Addrs: []net.IP{net.ParseIP("127.0.0.1")}, GossipPort: 7946, HTTPPort: port}
	}
	lab, home := healthy(), healthy()
	lab.Instance, lab.Cluster = "pi-lab", "lab"
	home.Instance, home.Cluster = "pi-home", "rpi"
	var answering []mdns.Peer
	saved := Browse
	Browse = func(context.Context, string) ([]mdns.Peer, error) { return answering, nil }
	t.Cleanup(func() { Browse = saved })
	t.Setenv("RPI_AGENT", "")
	os.Unsetenv("RPI_AGENT")
	dir := t.TempDir()
	noConfig := filepath.Join(dir, "none.yaml")
	labConfig := filepath.Join(dir, "lab.yaml")
	if err := os.WriteFile(labConfig, []byte("cluster: lab\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var used string
	connect := func(c *cli.Context) error {
		s, err := Connect(c.Context, c, NoPin)
		if err == nil {
			used = s.Client.BaseURL
		}
		return err
	}

	answering = []mdns.Peer{*lab}
	stderr, err := runCommon(t, connect, "--config", noConfig)
	if err == nil || !strings.Contains(err.Error(), "refusing another cluster") || !strings.Contains(err.Error(), "pi-lab") ||
		!strings.Contains(err.Error(), `"lab"`) || !strings.Contains(err.Error(), "cluster: in "+noConfig) {
		t.Fatalf("only cluster lab answered, config wants rpi: err %v, stderr %q; want a refusal naming lab and pi-lab", err, stderr)
	}

	stderr, err = runCommon(t, connect, "--config", labConfig)
	want := fmt.Sprintf(`rpi-test: using agent "pi-lab" of cluster "lab" at %s, found by mDNS`, lab.APIURLs()[0])
	if err != nil || used != lab.APIURLs()[0] || !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("config wants lab: used %s, err %v, stderr %q; want one line %q", used, err, stderr, want)
	}

	answering = []mdns.Peer{*lab, *home}
	stderr, err = runCommon(t, connect, "--config", noConfig)
	if err != nil || used != home.APIURLs()[0] || !strings.Contains(stderr, `"pi-home" of cluster "rpi"`) {
		t.Fatalf("both answered, config wants rpi: used %s, err %v, stderr %q; want pi-home", used, err, stderr)
	}

	stderr, err = runCommon(t, connect, "--config", noConfig, "--agent", home.APIURLs()[0])
	if err != nil || strings.Contains(stderr, "mDNS") {
		t.Fatalf("--agent given: err %v, stderr %q; want no browse and no line", err, stderr)
	}
}

// An agent named on the command line is refused when it says it belongs to
// another cluster than the workstation config's; with no cluster in the
// config (or an agent too old to say), it is used as named.
func TestNamedAgentOfAnotherClusterRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"status":"ok","node":"pi-lab","cluster":"lab","warnings":[]}`)
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	homeConfig := filepath.Join(dir, "home.yaml")
	if err := os.WriteFile(homeConfig, []byte("cluster: home\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noConfig := filepath.Join(dir, "none.yaml")
	connect := func(c *cli.Context) error {
		_, err := Connect(c.Context, c, NoPin)
		return err
	}
	_, err := runCommon(t, connect, "--config", homeConfig, "--agent", srv.URL)
	if err == nil || !strings.Contains(err.Error(), `belongs to cluster "lab"`) || !strings.Contains(err.Error(), homeConfig) {
		t.Fatalf("agent of lab with the config of home: err %v, want a refusal naming both", err)
	}
	if _, err := runCommon(t, connect, "--config", noConfig, "--agent", srv.URL); err != nil {
		t.Fatalf("no cluster in the config: err %v, want the named agent used", err)
	}
}

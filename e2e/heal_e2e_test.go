//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/e2e/vcluster"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit"
	"github.com/rpi-cluster/rpi-cluster/launcher/cli"
)

// healGrace is the web server's grace period in this test (the shipped
// policy says 30s; a shorter one keeps the run quick and is what a user
// wanting fast replacement would set).
const healGrace = "5s"

// TestHealAfterKill: two web servers behind the load balancer and
// `rpi-launch reconcile --watch` running; one web server's node is killed.
// A replacement must run on another node within a bounded time, the load
// balancer must send only to live backends, and requests through it must
// keep succeeding.
func TestHealAfterKill(t *testing.T) {
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		t.Skip("ansible-playbook not installed (apt-get install ansible-core)")
	}
	c, _ := newCluster(t, 4)
	ctx := context.Background()
	first := c.Nodes()[0]
	if _, err := c.Client(first).Desired(ctx); err != nil {
		var se *client.StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound {
			t.Skipf("the agent does not serve /v1/desired yet: %v", err)
		}
		t.Fatal(err)
	}
	members, err := first.Client().Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hw := healWorkstation(t, c, members)

	if out, err := hw.launch(ctx, "2", "nginx_webserver"); err != nil {
		t.Fatalf("rpi-launch 2 nginx_webserver: %v\n%s", err, out)
	}
	if out, err := hw.launch(ctx, "1", "nginx_load_balancer"); err != nil {
		t.Fatalf("rpi-launch 1 nginx_load_balancer: %v\n%s", err, out)
	}
	webs := healServiceNodes(t, c, first, "nginx_webserver")
	lbs := healServiceNodes(t, c, first, "nginx_load_balancer")
	if len(webs) != 2 || len(lbs) != 1 {
		t.Fatalf("after the launches: web servers %v, load balancers %v", webs, lbs)
	}
	lb := lbs[0]
	victim := webs[0]
	if victim == lb {
		victim = webs[1]
	}
	survivor := webs[0]
	if survivor == victim {
		survivor = webs[1]
	}
	observer := c.Others(victim, lb)[0]
	if d, err := c.Client(observer).DesiredFor(ctx, "nginx_webserver"); err != nil || d.Replicas != 2 {
		t.Fatalf("desired nginx_webserver = %+v, %v; want 2 replicas", d, err)
	}

	// reconcile --watch in the background, until the test ends.
	watchOut := &testutil.SyncBuffer{}
	wctx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- cli.RunLaunch(wctx, hw.args("reconcile", "--watch", "--interval", "5s"), watchOut, watchOut)
	}()
	t.Cleanup(func() {
		stopWatch()
		select {
		case err := <-watchDone:
			if err != nil {
				t.Errorf("reconcile --watch: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("reconcile --watch did not stop on cancel")
		}
		if t.Failed() {
			t.Logf("reconcile --watch output:\n%s", watchOut.String())
		}
	})
	if err := vcluster.Poll(ctx, 30*time.Second, 100*time.Millisecond, func() error {
		if !strings.Contains(watchOut.String(), "following events") {
			return errors.New("reconcile --watch not following events yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// A bounded request loop through the load balancer.
	loop := startRequests(fmt.Sprintf("http://%s:8000/", lb.IP), 100*time.Millisecond, 3000, 5*time.Minute)
	t.Cleanup(loop.Stop)
	if err := vcluster.Poll(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		if got := loop.Backends(time.Time{}); len(got) < 2 {
			return fmt.Errorf("load balancer answered from %v, want both web servers", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	killed := time.Now()
	if err := c.Kill(ctx, victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed web server %s; survivor %s, load balancer %s", victim, survivor, lb)

	// Time to detect: the observer's agent marks the node failed.
	seen, err := waitStatus(ctx, c, []*vcluster.Node{observer}, victim, apitypes.StatusFailed, killed, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	detect := seen[observer]

	// Time to full capacity: a replacement (not the victim, not the
	// survivor) answers through the load balancer, and the load balancer's
	// upstream lists only live backends.
	var replacement string
	if err := vcluster.Poll(ctx, 4*time.Minute, 250*time.Millisecond, func() error {
		nodes, err := c.Client(observer).ServiceNodes(ctx, "nginx_webserver")
		if err != nil {
			return err
		}
		var live []string
		for _, n := range nodes {
			if n.Status == apitypes.StatusAlive && n.Address != victim.IP.String() {
				live = append(live, n.Name)
				if n.Address != survivor.IP.String() {
					replacement = n.Name
				}
			}
		}
		if len(live) < 2 {
			return fmt.Errorf("live web servers %v, want 2", live)
		}
		if !slices.Contains(loop.Backends(killed), replacement) {
			return fmt.Errorf("replacement %s not answering through the load balancer yet (answered since the kill: %v)", replacement, loop.Backends(killed))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	capacity := time.Since(killed)

	upstream, err := c.Exec(ctx, lb, "cat", "/etc/nginx/conf.d/rpi-upstream.conf")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(upstream, victim.IP.String()+":") {
		t.Errorf("the load balancer still sends to the dead %s:\n%s", victim, upstream)
	}
	if !strings.Contains(upstream, "# "+replacement) {
		t.Errorf("the load balancer does not send to the replacement %s:\n%s", replacement, upstream)
	}

	// Requests keep succeeding: a last burst all answered by live backends.
	mark := time.Now()
	if err := vcluster.Poll(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		if n := loop.Since(mark); n < 20 {
			return fmt.Errorf("%d requests since the heal, want 20", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	loop.Stop()
	if f := loop.FailedSince(mark); f > 0 {
		t.Errorf("%d of the requests after the heal failed", f)
	}
	if slices.Contains(loop.Backends(mark), victim.Name) {
		t.Errorf("the dead %s answered after the heal", victim)
	}
	if d, err := c.Client(observer).DesiredFor(ctx, "nginx_webserver"); err != nil || d.Replicas != 2 {
		t.Errorf("desired nginx_webserver after the heal = %+v, %v; want still 2", d, err)
	}
	failed, total := loop.Between(killed, killed.Add(capacity))
	t.Logf("requests between the kill and full capacity: %d of %d failed; reconcile:\n%s", failed, total, watchOut.String())
	figure(t, "time to detect a killed web server (failed)", "%.1f s", detect.Seconds())
	figure(t, "time to full capacity (replacement answering through the LB, grace "+healGrace+")", "%.1f s", capacity.Seconds())
	figure(t, "requests failed between kill and full capacity", "%d of %d", failed, total)
	if total > 0 && failed*10 > total {
		t.Errorf("%d of %d requests failed during the heal: the load balancer did not route around the dead backend", failed, total)
	}
}

// healWS drives rpi-launch in-process against the virtual cluster.
type healWS struct {
	t         *testing.T
	config    string
	playbooks string
	build     string
	sshArgs   string
}

func healWorkstation(t *testing.T, c *vcluster.Cluster, members []apitypes.Node) *healWS {
	t.Helper()
	dir := t.TempDir()
	ws, err := vcluster.WriteWorkstation(dir, suite.prepared.Key, vcluster.DefaultSSHUser, members)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &client.WorkstationConfig{Token: suite.token, SSHUser: ws.User, SSHKey: ws.Key, KnownHosts: ws.KnownHosts}
	for _, n := range c.Nodes() {
		cfg.Agents = append(cfg.Agents, n.AgentURL())
	}
	hw := &healWS{t: t, config: filepath.Join(dir, "config.yaml"), playbooks: filepath.Join(dir, "playbooks"), build: filepath.Join(dir, "build"),
		sshArgs: fmt.Sprintf("-o IdentitiesOnly=yes -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes", ws.KnownHosts)}
	if err := cfg.Save(hw.config); err != nil {
		t.Fatal(err)
	}
	// The shipped playbooks, with the web server's grace period shortened.
	if err := os.CopyFS(hw.playbooks, os.DirFS(filepath.Join(suite.root, "playbooks"))); err != nil {
		t.Fatal(err)
	}
	pol := filepath.Join(hw.playbooks, "nginx_webserver", "service.yaml")
	data, err := os.ReadFile(pol)
	if err != nil {
		t.Fatal(err)
	}
	data = regexp.MustCompile(`(?m)^grace_period: .*$`).ReplaceAll(data, []byte("grace_period: "+healGrace))
	if err := os.WriteFile(pol, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// Nothing is multicast from a test; the config names the agents.
	toolkit.Browse = nil
	t.Setenv("RPI_AGENT", "")
	t.Setenv("RPI_TOKEN", "")
	t.Setenv("ANSIBLE_HOST_KEY_CHECKING", "True")
	t.Setenv("ANSIBLE_NOCOLOR", "1")
	return hw
}

func (h *healWS) args(args ...string) []string {
	out := append([]string{"rpi-launch"}, args...)
	return append(out, "--config", h.config, "--playbooks", h.playbooks,
		"--templates", filepath.Join(suite.root, "templates"), "--build-dir", h.build,
		"--", "--ssh-common-args", h.sshArgs, "--timeout", "20")
}

func (h *healWS) launch(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := cli.RunLaunch(ctx, h.args(args...), &out, &out)
	h.t.Logf("rpi-launch %s:\n%s", strings.Join(args, " "), out.String())
	return out.String(), err
}

func healServiceNodes(t *testing.T, c *vcluster.Cluster, from *vcluster.Node, service string) []*vcluster.Node {
	t.Helper()
	nodes, err := c.Client(from).ServiceNodes(context.Background(), service)
	if err != nil {
		t.Fatal(err)
	}
	var out []*vcluster.Node
	for _, n := range nodes {
		for _, vn := range c.Nodes() {
			if vn.IP.String() == n.Address {
				vn.Name = n.Name
				out = append(out, vn)
			}
		}
	}
	return out
}

// requestLoop sends GETs to a URL at a fixed pace, bounded in count and
// time, and records each result.
type requestLoop struct {
	stop chan struct{}
	done chan struct{}
	once sync.Once

	mu      sync.Mutex
	results []requestResult
}

type requestResult struct {
	at      time.Time
	ok      bool
	backend string
}

var backendRE = regexp.MustCompile(`served by rpi-cluster node (\S+)`)

func startRequests(url string, every time.Duration, maxRequests int, maxTime time.Duration) *requestLoop {
	l := &requestLoop{stop: make(chan struct{}), done: make(chan struct{})}
	hc := &http.Client{Timeout: 3 * time.Second}
	go func() {
		defer close(l.done)
		deadline := time.After(maxTime)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; i < maxRequests; i++ {
			r := requestResult{at: time.Now()}
			if resp, err := hc.Get(url); err == nil {
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
				if m := backendRE.FindSubmatch(body); resp.StatusCode == http.StatusOK && m != nil {
					r.ok, r.backend = true, string(m[1])
				}
			}
			l.mu.Lock()
			l.results = append(l.results, r)
			l.mu.Unlock()
			select {
			case <-l.stop:
				return
			case <-deadline:
				return
			case <-tick.C:
			}
		}
	}()
	return l
}

// Stop ends the loop and waits for it; safe to call more than once.
func (l *requestLoop) Stop() {
	l.once.Do(func() { close(l.stop) })
	<-l.done
}

// Backends are the nodes that answered since from, sorted.
func (l *requestLoop) Backends(from time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.results {
		if r.ok && !r.at.Before(from) && !slices.Contains(out, r.backend) {
			out = append(out, r.backend)
		}
	}
	slices.Sort(out)
	return out
}

// Since is how many requests were sent since from.
func (l *requestLoop) Since(from time.Time) int {
	_, n := l.Between(from, time.Now().Add(time.Hour))
	return n
}

// FailedSince is how many requests sent since from failed.
func (l *requestLoop) FailedSince(from time.Time) int {
	f, _ := l.Between(from, time.Now().Add(time.Hour))
	return f
}

// Between counts the requests sent in [from, to) and how many failed.
func (l *requestLoop) Between(from, to time.Time) (failed, total int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.results {
		if r.at.Before(from) || !r.at.Before(to) {
			continue
		}
		total++
		if !r.ok {
			failed++
		}
	}
	return failed, total
}

//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/e2e/vcluster"
)

// suite is what TestMain prepared once for every test.
var suite struct {
	root     string
	prepared *vcluster.Prepared
	token    string
	log      *slog.Logger
	results  *results
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctx := context.Background()
	suite.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	root, err := vcluster.RepoRoot(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	suite.root = root
	start := time.Now()
	p, err := vcluster.Prepare(ctx, vcluster.PrepareOptions{RepoRoot: root,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: prepare the node image:", err)
		return 1
	}
	suite.prepared = p
	cfg, err := vcluster.ImageAgentConfig(ctx, &vcluster.Docker{}, p.Image)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	suite.token = cfg.APIToken
	suite.results, err = openResults(filepath.Join(root, "build", "e2e-results.md"), p.Image, time.Since(start))
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer suite.results.Close()
	return m.Run()
}

// results collects the figures the tests print, as a Markdown table that
// can be copied into the README.
type results struct {
	mu sync.Mutex
	f  *os.File
}

func openResults(path, image string, prepared time.Duration) (*results, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("results file: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("results file: %w", err)
	}
	host, _ := os.Hostname()
	fmt.Fprintf(f, "# e2e results\n\n%s on %s, image %s (prepared in %v), agent profile lan\n\n| test | figure | value |\n| --- | --- | --- |\n",
		time.Now().UTC().Format(time.RFC3339), host, image, prepared.Round(100*time.Millisecond))
	return &results{f: f}, nil
}

func (r *results) Close() error { return r.f.Close() }

// figure logs a measured value and appends it to the results file.
func figure(t *testing.T, name, format string, args ...any) {
	t.Helper()
	v := fmt.Sprintf(format, args...)
	t.Logf("FIGURE %s: %s", name, v)
	r := suite.results
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.f, "| %s | %s | %s |\n", t.Name(), name, v)
}

// newCluster starts n nodes for one test, waits until they converge and
// removes everything when the test ends (RPI_E2E_KEEP=1 keeps a failed
// test's cluster for inspection). RPI_E2E_SESSION labels the clusters so
// e2e/run.sh can remove a crashed run's leftovers and nothing else.
func newCluster(t *testing.T, n int, agentArgs ...string) (*vcluster.Cluster, time.Duration) {
	t.Helper()
	ctx := context.Background()
	c, err := vcluster.Create(ctx, vcluster.Options{Image: suite.prepared.Image, Token: suite.token,
		Session: os.Getenv("RPI_E2E_SESSION"), AgentArgs: agentArgs, Logger: suite.log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, c)
			if os.Getenv("RPI_E2E_KEEP") == "1" {
				t.Logf("RPI_E2E_KEEP=1: cluster left running; remove it with: rpi-vcluster down --run-id %s", c.RunID)
				return
			}
		}
		if err := c.Down(context.Background()); err != nil {
			t.Errorf("remove cluster: %v", err)
		}
	})
	if _, err := c.AddNodes(ctx, n); err != nil {
		t.Fatal(err)
	}
	took, err := c.WaitConverged(ctx, nil, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster %s: %d nodes converged in %v", c.RunID, n, took.Round(time.Millisecond))
	return c, took
}

func dumpLogs(t *testing.T, c *vcluster.Cluster) {
	for _, n := range c.Nodes() {
		logs, err := c.Logs(context.Background(), n, 40)
		if err != nil {
			t.Logf("logs of %s: %v", n, err)
			continue
		}
		t.Logf("--- last lines of %s:\n%s", n, logs)
	}
}

// waitStatus polls every observer until it sees target with status and
// returns, per observer, how long that took from start.
func waitStatus(ctx context.Context, c *vcluster.Cluster, observers []*vcluster.Node, target *vcluster.Node, status string, start time.Time, timeout time.Duration) (map[*vcluster.Node]time.Duration, error) {
	seen := map[*vcluster.Node]time.Duration{}
	err := vcluster.Poll(ctx, timeout, 100*time.Millisecond, func() error {
		views, _ := c.Views(ctx, observers)
		now := time.Since(start)
		var missing []string
		for _, o := range observers {
			if _, ok := seen[o]; ok {
				continue
			}
			if got := vcluster.StatusOf(views[o], target.IP); got == status {
				seen[o] = now
			} else {
				missing = append(missing, fmt.Sprintf("%s sees %s as %q", o, target, got))
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("want %s: %s", status, strings.Join(missing, "; "))
		}
		return nil
	})
	return seen, err
}

// spread returns the fastest and slowest of ds.
func spread(ds map[*vcluster.Node]time.Duration) (lo, hi time.Duration) {
	first := true
	for _, d := range ds {
		if first || d < lo {
			lo = d
		}
		if first || d > hi {
			hi = d
		}
		first = false
	}
	return lo, hi
}

// watcher polls every observer's view in the background and records every
// status other than alive, and the highest phi, until Stop.
type watcher struct {
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	polls    int
	failed   []string
	suspects int
	maxPhi   float64
	errs     int
}

func watch(c *vcluster.Cluster, observers, targets []*vcluster.Node, every time.Duration) *watcher {
	w := &watcher{stop: make(chan struct{}), done: make(chan struct{})}
	want := map[string]*vcluster.Node{}
	for _, n := range targets {
		want[n.IP.String()] = n
	}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			views, err := c.Views(context.Background(), observers)
			w.mu.Lock()
			w.polls++
			if err != nil {
				w.errs++
			}
			for o, view := range views {
				for _, m := range view {
					if want[m.Address] == nil || m.Self {
						continue
					}
					switch m.Status {
					case apitypes.StatusAlive:
					case apitypes.StatusSuspect:
						w.suspects++
					default:
						w.failed = append(w.failed, fmt.Sprintf("%s: %s saw %s as %s", time.Now().Format("15:04:05.000"), o, m.Name, m.Status))
					}
					if m.Phi > w.maxPhi {
						w.maxPhi = m.Phi
					}
				}
			}
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// Stop ends the watch; it is safe to call more than once.
func (w *watcher) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// counterSum adds up the sample name (a counter without labels) over the
// nodes' /metrics.
func counterSum(ctx context.Context, nodes []*vcluster.Node, name string) (float64, error) {
	var sum float64
	for _, n := range nodes {
		v, err := n.Client().Metric(ctx, name)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

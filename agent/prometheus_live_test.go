package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/bench"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// TestPrometheusLive runs a real Prometheus whose whole configuration is
// one http_sd_configs URL, this cluster's /v1/sd/prometheus, against three
// rpi-agent processes on 127.72.N.1 to .3, and checks through Prometheus'
// HTTP API that it scrapes all three, that rpi_cpu_busy_ratio has exactly
// one series per node (N, not N²), and that a killed agent's target goes
// down.
func TestPrometheusLive(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: builds rpi-agent and runs Prometheus against three agent processes")
	}
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("skipping: no prometheus binary in PATH (Debian package prometheus; make deps installs it)")
	}

	bin := filepath.Join(t.TempDir(), "rpi-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/rpi-cluster/rpi-cluster/agent/cmd/rpi-agent").CombinedOutput(); err != nil {
		t.Fatalf("build rpi-agent: %v\n%s", err, out)
	}
	// A random /24 so two runs at once do not collide on ports 8080 and
	// 7946.
	subnet := 1 + rand.IntN(254)
	ip := func(i int) string { return fmt.Sprintf("127.72.%d.%d", subnet, i) }
	dir := t.TempDir()
	key := bench.NewKey()
	names := []string{"prom-1", "prom-2", "prom-3"}
	agents := make([]*agentProcess, len(names))
	for i, name := range names {
		var joins []string
		if i > 0 {
			joins = []string{ip(1) + ":7946"}
		}
		agents[i] = startAgentProcess(t, bin, filepath.Join(dir, name), name, ip(i+1), key, joins)
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		for _, a := range agents {
			select {
			case <-a.exited:
				t.Fatalf("%s exited: %s", a.name, a.stderr)
			default:
			}
		}
		return seesAlive("http://"+ip(1)+":8080", names...)
	})

	// A free port, not 9090: the Debian package's own service may hold it
	// on every address.
	l, err := net.Listen("tcp", ip(10)+":0")
	if err != nil {
		t.Fatal(err)
	}
	promAddr := l.Addr().String()
	l.Close()
	prom := startPrometheus(t, promBin, filepath.Join(dir, "prometheus"), promAddr,
		"http://"+ip(1)+":8080/v1/sd/prometheus")

	// All three targets up, each labelled with its node by the SD.
	testutil.WaitFor(t, 60*time.Second, func() error {
		health, err := prom.targets()
		if err != nil {
			return err
		}
		for _, name := range names {
			if health[name] != "up" {
				return fmt.Errorf("targets by node: %v; want %s up", health, name)
			}
		}
		if len(health) != len(names) {
			return fmt.Errorf("targets by node: %v; want exactly %v", health, names)
		}
		return nil
	})
	// One series of rpi_cpu_busy_ratio per node: three, not nine.
	testutil.WaitFor(t, 30*time.Second, func() error {
		series, err := prom.query("rpi_cpu_busy_ratio")
		if err != nil {
			return err
		}
		var nodes []string
		for _, s := range series {
			nodes = append(nodes, s["node"])
		}
		slices.Sort(nodes)
		if !slices.Equal(nodes, names) {
			return fmt.Errorf("rpi_cpu_busy_ratio series by node: %q (%d series: %v); want one for each of %q", nodes, len(series), series, names)
		}
		return nil
	})

	// Kill prom-3, as a power cut would: its target goes down, and stays
	// listed by the SD as a failed node rather than vanishing.
	if err := agents[2].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-agents[2].exited
	killed := time.Now()
	testutil.WaitFor(t, 60*time.Second, func() error {
		health, err := prom.targets()
		if err != nil {
			return err
		}
		if health["prom-3"] != "down" || health["prom-1"] != "up" || health["prom-2"] != "up" {
			return fmt.Errorf("targets by node: %v; want prom-3 down, the others up", health)
		}
		return nil
	})
	t.Logf("prom-3's target down %v after the kill", time.Since(killed).Round(100*time.Millisecond))
	series, err := prom.query(`up{node="prom-3"}`)
	if err != nil || len(series) != 1 {
		t.Errorf("up{node=\"prom-3\"}: %v %v; want one series", series, err)
	}
}

// promProcess is a Prometheus server started by a test.
type promProcess struct {
	base   string
	client *http.Client
}

// startPrometheus runs Prometheus on listen with sdURL as its only target
// source, scraping and refreshing every second, until the test ends.
func startPrometheus(t *testing.T, bin, data, listen, sdURL string) *promProcess {
	t.Helper()
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: rpi
    http_sd_configs:
      - url: %s
        refresh_interval: 1s
`, sdURL)
	cfgPath := filepath.Join(data, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(data, "tsdb"),
		"--web.listen-address="+listen, "--log.level=warn")
	stderr := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus output:\n%s", stderr)
		}
	})
	p := &promProcess{base: "http://" + listen, client: &http.Client{Timeout: 2 * time.Second}}
	testutil.WaitFor(t, 30*time.Second, func() error {
		select {
		case <-exited:
			t.Fatalf("prometheus exited: %s", stderr)
		default:
		}
		resp, err := p.client.Get(p.base + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("prometheus /-/ready: %s", resp.Status)
		}
		return nil
	})
	return p
}

// get decodes the data of a Prometheus API answer into v.
func (p *promProcess) get(path string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("prometheus %s: %s: %w", path, resp.Status, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("prometheus %s: %s: %s", path, resp.Status, body.Error)
	}
	return json.Unmarshal(body.Data, v)
}

// targets returns the health of each active target by its node label.
func (p *promProcess) targets() (map[string]string, error) {
	var data struct {
		ActiveTargets []struct {
			Labels    map[string]string `json:"labels"`
			Health    string            `json:"health"`
			LastError string            `json:"lastError"`
		} `json:"activeTargets"`
	}
	if err := p.get("/api/v1/targets?state=active", &data); err != nil {
		return nil, err
	}
	health := map[string]string{}
	for _, tg := range data.ActiveTargets {
		health[tg.Labels["node"]] = tg.Health
	}
	return health, nil
}

// query returns the label sets of an instant query's series.
func (p *promProcess) query(q string) ([]map[string]string, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
		} `json:"result"`
	}
	if err := p.get("/api/v1/query?query="+url.QueryEscape(q), &data); err != nil {
		return nil, err
	}
	series := make([]map[string]string, len(data.Result))
	for i, r := range data.Result {
		series[i] = r.Metric
	}
	return series, nil
}

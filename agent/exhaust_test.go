package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/bench"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// exhaustNet is where the exhaustion test runs: two rpi-agent processes on
// 127.70.N.1 and .2 (fixed ports 8080 and 7946, so N is random: two runs at
// once do not collide), the probe on 127.70.N.3, and the attack from
// 127.71.N.1 to .16.
type exhaustNet struct{ n int }

const exhaustSources = 16

func (e exhaustNet) agent(i int) string  { return fmt.Sprintf("127.70.%d.%d", e.n, i) }
func (e exhaustNet) probe() string       { return fmt.Sprintf("127.70.%d.3", e.n) }
func (e exhaustNet) source(i int) string { return fmt.Sprintf("127.71.%d.%d", e.n, 1+i%exhaustSources) }

// TestHTTPExhaustion attacks a real agent process with plain HTTP clients
// from the LAN, as the issue reports them: requests that announce a body and
// never send it, then connections sending a megabyte of headers. Throughout,
// the agent's RSS stays within twice its idle RSS, /healthz answers within a
// second, and its peer never declares it failed.
func TestHTTPExhaustion(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: builds rpi-agent and attacks it for about 30 s")
	}
	const slowBodies, bigHeaders = 5000, 200
	needFiles(t, slowBodies+bigHeaders+500)

	bin := filepath.Join(t.TempDir(), "rpi-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/rpi-cluster/rpi-cluster/agent/cmd/rpi-agent").CombinedOutput(); err != nil {
		t.Fatalf("build rpi-agent: %v\n%s", err, out)
	}
	dir := t.TempDir()
	key := bench.NewKey()
	lan := exhaustNet{n: 1 + rand.IntN(254)}
	a := startAgentProcess(t, bin, filepath.Join(dir, "a"), "exhaust-a", lan.agent(1), key, nil)
	b := startAgentProcess(t, bin, filepath.Join(dir, "b"), "exhaust-b", lan.agent(2), key, []string{lan.agent(1) + ":7946"})

	urlA, urlB := "http://"+lan.agent(1)+":8080", "http://"+lan.agent(2)+":8080"
	testutil.WaitFor(t, 30*time.Second, func() error {
		for _, p := range []*agentProcess{a, b} {
			select {
			case <-p.exited:
				t.Fatalf("%s exited: %s", p.name, p.stderr)
			default:
			}
		}
		for _, u := range []string{urlA, urlB} {
			if err := seesAlive(u, "exhaust-a", "exhaust-b"); err != nil {
				return err
			}
		}
		return nil
	})

	w := startWatch(a.cmd.Process.Pid, lan.probe(), urlA, urlB, "exhaust-a")
	defer w.stop()
	idle := w.phase(t, "idle", func() { w.waitSamples(10) })
	t.Logf("idle: %s", idle)

	slow := w.phase(t, "slow bodies", func() {
		conns := slowBodyAttack(lan, urlA, slowBodies)
		defer closeAll(conns)
		// Hold what the agent accepted past its read timeout, so a server
		// that never times reads out shows it.
		w.waitSamples(40)
	})
	t.Logf("%d requests announcing a body never sent: %s", slowBodies, slow)

	big := w.phase(t, "big headers", func() {
		conns := bigHeaderAttack(lan, urlA, bigHeaders, 1<<20)
		defer closeAll(conns)
		w.waitSamples(20)
	})
	t.Logf("%d connections sending 1 MiB of headers: %s", bigHeaders, big)

	for _, p := range []phaseStats{slow, big} {
		if p.peakRSS > 2*idle.peakRSS {
			t.Errorf("%s: RSS peaked at %.1f MiB, more than twice the idle %.1f MiB", p.name, mib(p.peakRSS), mib(idle.peakRSS))
		}
		if p.worstHealthz > time.Second || p.healthzErr != nil {
			t.Errorf("%s: /healthz worst %v (%d probes), last error %v; want every answer within 1s", p.name, p.worstHealthz, p.probes, p.healthzErr)
		}
		if p.failedSeen != "" {
			t.Errorf("%s: the peer saw the attacked agent %s", p.name, p.failedSeen)
		}
	}
	if err := seesAlive(urlB, "exhaust-a", "exhaust-b"); err != nil {
		t.Errorf("after the attacks: %v", err)
	}
}

// needFiles raises this process's open-file limit to n or skips the test.
func needFiles(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("skipping: read the open-file limit: %v", err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Skipf("skipping: needs %d open files, the hard limit is %d (raise it with ulimit -Hn)", n, lim.Max)
	}
	old := lim.Cur
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("skipping: raise the open-file limit to %d: %v", n, err)
	}
	t.Cleanup(func() {
		lim.Cur = old
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	})
}

// agentProcess is one rpi-agent started by a test.
type agentProcess struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
	stderr *bench.LimitedWriter
}

// startAgentProcess starts one rpi-agent with the local profile, stopped
// (SIGTERM, then SIGKILL) when the test ends.
func startAgentProcess(t *testing.T, bin, data, name, ip, key string, joins []string) *agentProcess {
	t.Helper()
	cmd, stderr, err := bench.AgentCommand(bin, data, name, ip, "local", key, joins)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
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
		if s := stderr.String(); s != "" {
			t.Logf("%s stderr:\n%s", name, s)
		}
	})
	return &agentProcess{name: name, cmd: cmd, exited: exited, stderr: stderr}
}

// seesAlive checks that the agent at base lists every one of names alive.
func seesAlive(base string, names ...string) error {
	cl, err := client.New(base, "")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	nodes, err := cl.Nodes(ctx)
	if err != nil {
		return err
	}
	for _, name := range names {
		status := "missing"
		for _, n := range nodes {
			if n.Name == name {
				status = n.Status
			}
		}
		if status != apitypes.StatusAlive {
			return fmt.Errorf("%s sees %s %s", base, name, status)
		}
	}
	return nil
}

// phaseStats is what the watch saw during one phase of the test.
type phaseStats struct {
	name         string
	peakRSS      uint64
	probes       int
	worstHealthz time.Duration
	healthzErr   error
	// failedSeen is the worst status the peer gave the attacked agent
	// ("" while it stayed alive or suspect).
	failedSeen string
	samples    int
}

func (p phaseStats) String() string {
	return fmt.Sprintf("peak RSS %.1f MiB, /healthz worst %v over %d probes (error: %v)", mib(p.peakRSS), p.worstHealthz.Round(time.Millisecond), p.probes, p.healthzErr)
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// watch samples the attacked agent every 200 ms: its RSS, a /healthz probe
// on a fresh connection from its own address, and its status as its peer
// sees it.
type watch struct {
	mu   sync.Mutex
	cur  phaseStats
	tick chan struct{}
	done chan struct{}
	wg   sync.WaitGroup
}

func startWatch(pid int, probeIP, urlA, urlB, nameA string) *watch {
	w := &watch{tick: make(chan struct{}, 1), done: make(chan struct{})}
	probe := &http.Client{
		Timeout: time.Second,
		Transport: &http.Transport{
			DialContext:       (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(probeIP)}}).DialContext,
			DisableKeepAlives: true,
		},
	}
	peer := &http.Client{Timeout: 2 * time.Second}
	sample := func() {
		var wg sync.WaitGroup
		wg.Add(2)
		var took time.Duration
		var probeErr error
		go func() {
			defer wg.Done()
			t0 := time.Now()
			resp, err := probe.Get(urlA + "/healthz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			took, probeErr = time.Since(t0), err
		}()
		var status string
		go func() {
			defer wg.Done()
			status = peerStatus(peer, urlB, nameA)
		}()
		mem, memErr := bench.ProcRSS(pid)
		wg.Wait()

		w.mu.Lock()
		defer w.mu.Unlock()
		p := &w.cur
		p.samples++
		if memErr == nil {
			p.peakRSS = max(p.peakRSS, mem["VmRSS"])
		}
		p.probes++
		p.worstHealthz = max(p.worstHealthz, took)
		if probeErr != nil {
			p.healthzErr = probeErr
		}
		if status == apitypes.StatusFailed || status == apitypes.StatusLeft {
			p.failedSeen = status
		}
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-t.C:
				sample()
				select {
				case w.tick <- struct{}{}:
				default:
				}
			}
		}
	}()
	return w
}

// peerStatus is the status the agent at base gives name; "" when it cannot
// tell (a slow answer is not a verdict).
func peerStatus(c *http.Client, base, name string) string {
	cl, err := client.New(base, "")
	if err != nil {
		return ""
	}
	cl.HTTP = c
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, err := cl.Node(ctx, name)
	if err != nil {
		return ""
	}
	return n.Status
}

// phase runs f and returns what the watch saw meanwhile.
func (w *watch) phase(t *testing.T, name string, f func()) phaseStats {
	t.Helper()
	w.mu.Lock()
	w.cur = phaseStats{name: name}
	w.mu.Unlock()
	f()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}

// waitSamples returns once the watch has taken n more samples.
func (w *watch) waitSamples(n int) {
	for range n {
		select {
		case <-w.tick:
		case <-w.done:
			return
		}
	}
}

func (w *watch) stop() {
	close(w.done)
	w.wg.Wait()
}

// slowBodyAttack opens n connections from the attack addresses, each
// sending a PUT that announces a 1000-byte body and never sends it. It
// returns the connections still open: the agent may have refused some.
func slowBodyAttack(e exhaustNet, base string, n int) []net.Conn {
	host := strings.TrimPrefix(base, "http://")
	req := "PUT /v1/services/exhaust HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 1000\r\n\r\n"
	return attack(e, host, n, func(c net.Conn) error {
		_, err := c.Write([]byte(req))
		return err
	})
}

// bigHeaderAttack opens n connections, each sending a request whose headers
// run to size bytes and never end.
func bigHeaderAttack(e exhaustNet, base string, n, size int) []net.Conn {
	host := strings.TrimPrefix(base, "http://")
	line := "X-Filler: " + strings.Repeat("a", 1000) + "\r\n"
	head := "GET /healthz HTTP/1.1\r\nHost: " + host + "\r\n" + strings.Repeat(line, size/len(line))
	return attack(e, host, n, func(c net.Conn) error {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Write([]byte(head))
		return err
	})
}

// attack dials n connections to host, 64 at a time, from the attack
// addresses in turn, and runs send on each. Connections the agent closes or
// refuses are dropped.
func attack(e exhaustNet, host string, n int, send func(net.Conn) error) []net.Conn {
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	next := make(chan int)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(e.source(i))}}
				c, err := d.Dial("tcp", host)
				if err != nil {
					continue
				}
				if err := send(c); err != nil && !errors.Is(err, syscall.EPIPE) {
					c.Close()
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return conns
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

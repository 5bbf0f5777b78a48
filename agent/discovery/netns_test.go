package discovery

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/mdns"
	"github.com/rpi-cluster/rpi-cluster/internal/netns"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// Environment of TestHelperProcess, the agent stand-in run inside a network
// namespace by TestMDNSBetweenNamespaces.
const (
	envHelper  = "RPIT_DISC_HELPER"
	envName    = "RPIT_DISC_NAME"
	envCluster = "RPIT_DISC_CLUSTER"
	envIface   = "RPIT_DISC_IFACE"
	envIP      = "RPIT_DISC_IP"
	envPort    = "RPIT_DISC_PORT"
	// envOneShot makes the helper run the one-shot Browse for this long
	// instead of a Discovery, print what it found and exit.
	envOneShot = "RPIT_DISC_ONESHOT"
)

// Lines the helper prints: a peer its browse saw (before any filtering), a
// Join call, and the end of a clean shutdown.
const (
	lineSeen    = "SEEN "
	lineJoin    = "JOIN "
	lineStopped = "STOPPED"
)

// seenPeer is Peer as the helper prints it.
type seenPeer struct {
	Instance, Cluster, Version string
	Addrs                      []string
	GossipPort, HTTPPort       int
}

// TestHelperProcess runs a real Discovery on real mDNS (zeroconf) until
// SIGTERM, printing what it sees and joins. It does nothing unless started
// by TestMDNSBetweenNamespaces.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(envHelper) != "1" {
		return
	}
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(os.Stdout, format+"\n", args...)
	}
	fail := func(err error) {
		say("ERROR %v", err)
		os.Exit(1)
	}
	if v := os.Getenv(envOneShot); v != "" {
		dur, err := time.ParseDuration(v)
		if err != nil {
			fail(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), dur)
		defer cancel()
		peers, err := mdns.Browse(ctx, os.Getenv(envIface), os.Getenv(envCluster))
		if err != nil {
			fail(err)
		}
		for _, p := range peers {
			b, _ := json.Marshal(seenPeer{Instance: p.Instance, Cluster: p.Cluster, Version: p.Version, GossipPort: p.GossipPort, HTTPPort: p.HTTPPort})
			say("%s%s", lineSeen, b)
		}
		say(lineStopped)
		return
	}
	port, _ := strconv.Atoi(os.Getenv(envPort))
	self := Peer{
		Instance:   os.Getenv(envName),
		Cluster:    os.Getenv(envCluster),
		Version:    "test-1.2.3",
		Addrs:      []net.IP{net.ParseIP(os.Getenv(envIP))},
		GossipPort: port,
		HTTPPort:   port + 1000,
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", self.Instance)
	rec := &printingMDNS{MDNS: NewZeroconf(logger), say: say}
	d, err := New(Config{
		Self:      self,
		Interface: os.Getenv(envIface),
		Quiet:     200 * time.Millisecond,
		Join: func(addrs []string) (int, error) {
			b, _ := json.Marshal(addrs)
			say("%s%s", lineJoin, b)
			return len(addrs), nil
		},
		Logger: logger,
	}, rec)
	if err != nil {
		fail(err)
	}
	if err := d.Start(); err != nil {
		fail(err)
	}
	// The parent ends the helper with SIGTERM; the timeout only guards
	// against a parent that died without doing so.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	<-ctx.Done()
	t0 := time.Now()
	d.Shutdown()
	logger.Info("discovery shut down", "took", time.Since(t0))
	say(lineStopped)
}

// printingMDNS reports every browse answer before discovery filters it.
type printingMDNS struct {
	MDNS
	say func(string, ...any)
}

func (p *printingMDNS) Browse(ctx context.Context, ifaces []net.Interface, found func(Peer)) error {
	return p.MDNS.Browse(ctx, ifaces, func(peer Peer) {
		sp := seenPeer{Instance: peer.Instance, Cluster: peer.Cluster, Version: peer.Version,
			GossipPort: peer.GossipPort, HTTPPort: peer.HTTPPort}
		for _, a := range peer.Addrs {
			sp.Addrs = append(sp.Addrs, a.String())
		}
		b, _ := json.Marshal(sp)
		p.say("%s%s", lineSeen, b)
		found(peer)
	})
}

// helper is a running TestHelperProcess as seen from the test.
type helper struct {
	name  string
	log   *testLogWriter // its stderr: the discovery log
	mu    sync.Mutex
	seen  map[string]seenPeer // by instance
	joins []string            // every address passed to Join
	lines []string
	done  chan error // the exit status, once
	stop  context.CancelFunc
	cmd   *exec.Cmd
}

func (h *helper) snapshot() (map[string]seenPeer, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := make(map[string]seenPeer, len(h.seen))
	for k, v := range h.seen {
		seen[k] = v
	}
	return seen, slices.Clone(h.joins)
}

func startHelper(t *testing.T, ns *netns.NS, name, cluster, iface, ip string, port int) *helper {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.Command(ctx, exe, "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		envHelper+"=1", envName+"="+name, envCluster+"="+cluster,
		envIface+"="+iface, envIP+"="+ip, envPort+"="+strconv.Itoa(port))
	// "ip netns exec" execs the helper in its own process, so the signal
	// reaches the helper itself, which then sends its mDNS goodbye.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	logw := &testLogWriter{t: t, prefix: name + ": "}
	cmd.Stderr = logw
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h := &helper{name: name, log: logw, seen: map[string]seenPeer{}, done: make(chan error, 1), cmd: cmd}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper %s: %v", name, err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			h.mu.Lock()
			h.lines = append(h.lines, line)
			switch {
			case strings.HasPrefix(line, lineSeen):
				var sp seenPeer
				if json.Unmarshal([]byte(line[len(lineSeen):]), &sp) == nil {
					h.seen[sp.Instance] = sp
				}
			case strings.HasPrefix(line, lineJoin):
				var addrs []string
				if json.Unmarshal([]byte(line[len(lineJoin):]), &addrs) == nil {
					h.joins = append(h.joins, addrs...)
				}
			}
			h.mu.Unlock()
		}
	}()
	go func() {
		<-scanned
		h.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(20 * time.Second):
			t.Errorf("helper %s did not exit", name)
		}
	})
	h.stop = cancel
	return h
}

// wait stops the helper with SIGTERM, waits for it to exit and returns its
// output.
func (h *helper) wait(t *testing.T) []string {
	t.Helper()
	h.stop()
	select {
	case err := <-h.done:
		h.done <- err // for the cleanup
		// Wait reports the cancellation even after a clean exit, so judge
		// by the exit status.
		if st := h.cmd.ProcessState; st == nil || !st.Success() {
			t.Errorf("helper %s: %v", h.name, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("helper %s did not stop within 20s of SIGTERM", h.name)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.lines)
}

// mark is a position in the helper's output, for sawSince.
func (h *helper) mark() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.lines)
}

// sawSince reports whether the helper's browse reported instance after
// mark.
func (h *helper) sawSince(mark int, instance string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, line := range h.lines[mark:] {
		var sp seenPeer
		if strings.HasPrefix(line, lineSeen) && json.Unmarshal([]byte(line[len(lineSeen):]), &sp) == nil && sp.Instance == instance {
			return true
		}
	}
	return false
}

// testLogWriter copies a helper's log into the test log and keeps it.
type testLogWriter struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex
	lines  []string
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Log(w.prefix + l)
		w.lines = append(w.lines, l)
	}
	return len(p), nil
}

// count returns how many log lines contain any of substrs.
func (w *testLogWriter) count(substrs ...string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, l := range w.lines {
		for _, s := range substrs {
			if strings.Contains(l, s) {
				n++
				break
			}
		}
	}
	return n
}

// TestMDNSBetweenNamespaces runs real mDNS between two network namespaces
// joined by a veth pair: node-a in one, node-b and node-c (another cluster)
// in the other. a and b must find and join each other; c is seen but never
// joined; node-d, started later, is found by and finds a and b. Packets exist only on the veth pair: the namespaces have no other
// interface but their loopback.
func TestMDNSBetweenNamespaces(t *testing.T) {
	if testing.Short() {
		t.Skip("real mDNS test skipped in -short mode")
	}
	netns.Require(t)
	pid := strconv.Itoa(os.Getpid())
	nsA := netns.Create(t, "rpit-disc-"+pid+"-a")
	nsB := netns.Create(t, "rpit-disc-"+pid+"-b")
	ifA, ifB := netns.Link(t, nsA, nsB, "10.201.0.1/24", "10.201.0.2/24")

	a := startHelper(t, nsA, "node-a", "test", ifA, "10.201.0.1", 7946)
	b := startHelper(t, nsB, "node-b", "test", ifB, "10.201.0.2", 7946)
	c := startHelper(t, nsB, "node-c", "other", ifB, "10.201.0.2", 7947)

	expect := func(h *helper, want seenPeer, joined string) func() error {
		return func() error {
			seen, joins := h.snapshot()
			got, ok := seen[want.Instance]
			switch {
			case !ok:
				return fmt.Errorf("%s has not seen %s (seen: %v)", h.name, want.Instance, seen)
			case got.Cluster != want.Cluster || got.GossipPort != want.GossipPort ||
				got.HTTPPort != want.HTTPPort || got.Version != want.Version ||
				!slices.Contains(got.Addrs, want.Addrs[0]):
				return fmt.Errorf("%s saw %+v, want %+v", h.name, got, want)
			case joined != "" && !slices.Contains(joins, joined):
				return fmt.Errorf("%s has not joined %s (joins: %q)", h.name, joined, joins)
			}
			return nil
		}
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		for _, check := range []func() error{
			expect(a, seenPeer{Instance: "node-b", Cluster: "test", Version: "test-1.2.3", Addrs: []string{"10.201.0.2"}, GossipPort: 7946, HTTPPort: 8946}, "10.201.0.2:7946"),
			expect(b, seenPeer{Instance: "node-a", Cluster: "test", Version: "test-1.2.3", Addrs: []string{"10.201.0.1"}, GossipPort: 7946, HTTPPort: 8946}, "10.201.0.1:7946"),
			// c is heard by a (so its absence from a's joins is the filter
			// at work, not silence), and c hears a but joins nobody.
			expect(a, seenPeer{Instance: "node-c", Cluster: "other", Version: "test-1.2.3", Addrs: []string{"10.201.0.2"}, GossipPort: 7947, HTTPPort: 8947}, ""),
			expect(c, seenPeer{Instance: "node-a", Cluster: "test", Version: "test-1.2.3", Addrs: []string{"10.201.0.1"}, GossipPort: 7946, HTTPPort: 8946}, ""),
		} {
			if err := check(); err != nil {
				return err
			}
		}
		return nil
	})

	// A late-comer: node-d starts in a's namespace once a and b have
	// settled. Both must find it, and it must find both.
	d := startHelper(t, nsA, "node-d", "test", ifA, "10.201.0.1", 7948)
	testutil.WaitFor(t, 30*time.Second, func() error {
		for _, check := range []func() error{
			expect(b, seenPeer{Instance: "node-d", Cluster: "test", Version: "test-1.2.3", Addrs: []string{"10.201.0.1"}, GossipPort: 7948, HTTPPort: 8948}, "10.201.0.1:7948"),
			expect(a, seenPeer{Instance: "node-d", Cluster: "test", Version: "test-1.2.3", Addrs: []string{"10.201.0.1"}, GossipPort: 7948, HTTPPort: 8948}, "10.201.0.1:7948"),
			expect(d, seenPeer{Instance: "node-a", Cluster: "test", Version: "test-1.2.3", Addrs: []string{"10.201.0.1"}, GossipPort: 7946, HTTPPort: 8946}, "10.201.0.1:7946"),
			expect(d, seenPeer{Instance: "node-b", Cluster: "test", Version: "test-1.2.3", Addrs: []string{"10.201.0.2"}, GossipPort: 7946, HTTPPort: 8946}, "10.201.0.2:7946"),
		} {
			if err := check(); err != nil {
				return err
			}
		}
		return nil
	})

	for _, h := range []*helper{a, b, c, d} {
		lines := h.wait(t)
		if !slices.Contains(lines, lineStopped) {
			t.Errorf("helper %s did not shut down cleanly; output:\n%s", h.name, strings.Join(lines, "\n"))
		}
	}
	_, joinsA := a.snapshot()
	_, joinsB := b.snapshot()
	_, joinsC := c.snapshot()
	if slices.Contains(joinsA, "10.201.0.2:7947") || slices.Contains(joinsB, "10.201.0.2:7947") {
		t.Errorf("a peer of another cluster was joined: a %q, b %q", joinsA, joinsB)
	}
	if slices.Contains(joinsA, "10.201.0.1:7946") || slices.Contains(joinsB, "10.201.0.2:7946") {
		t.Errorf("a node joined itself: a %q, b %q", joinsA, joinsB)
	}
	if len(joinsC) != 0 {
		t.Errorf("node-c (cluster other) joined %q", joinsC)
	}
}

// TestMDNSSurvivesRelink: the veth pair between two namespaces is deleted
// and a new one created with the same names and addresses (new interface
// indexes), as "docker network disconnect" and "connect" do to a container's
// eth0, or a replugged USB adapter to a Pi. Discovery must wait for the
// interface without flooding its log, then advertise and browse on the new
// one: a node started after the re-link finds node-a and is found by it, and
// node-b, which ran throughout, hears node-a again.
func TestMDNSSurvivesRelink(t *testing.T) {
	if testing.Short() {
		t.Skip("real mDNS test skipped in -short mode")
	}
	netns.Require(t)
	pid := strconv.Itoa(os.Getpid())
	nsA := netns.Create(t, "rpit-disc2-"+pid+"-a")
	nsB := netns.Create(t, "rpit-disc2-"+pid+"-b")
	const ipA, ipB = "10.203.0.1", "10.203.0.2"
	ifA, ifB := netns.Link(t, nsA, nsB, ipA+"/24", ipB+"/24")

	a := startHelper(t, nsA, "node-a", "test", ifA, ipA, 7946)
	b := startHelper(t, nsB, "node-b", "test", ifB, ipB, 7946)
	saw := func(h *helper, mark int, instance string) error {
		if !h.sawSince(mark, instance) {
			return fmt.Errorf("%s has not seen %s", h.name, instance)
		}
		return nil
	}
	testutil.WaitFor(t, 15*time.Second, func() error {
		return errors.Join(saw(a, 0, "node-b"), saw(b, 0, "node-a"))
	})

	// Unplug: deleting one end deletes the pair. Both sides notice and wait.
	ipCmd(t, "-n", nsA.Name, "link", "del", ifA)
	const paused = "mdns paused: waiting for the network interface"
	testutil.WaitFor(t, 10*time.Second, func() error {
		for _, h := range []*helper{a, b} {
			if h.log.count(paused) == 0 {
				return fmt.Errorf("%s has not noticed that %s is gone", h.name, ifA)
			}
		}
		return nil
	})

	// Plug in again: same names and addresses, new indexes.
	markA, markB := a.mark(), b.mark()
	ipCmd(t, "-n", nsA.Name, "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", nsB.Name)
	for _, end := range []struct{ ns, ifi, cidr string }{{nsA.Name, ifA, ipA + "/24"}, {nsB.Name, ifB, ipB + "/24"}} {
		ipCmd(t, "-n", end.ns, "addr", "add", end.cidr, "dev", end.ifi)
		ipCmd(t, "-n", end.ns, "link", "set", end.ifi, "up", "multicast", "on")
	}
	e := startHelper(t, nsB, "node-e", "test", ifB, ipB, 7947)
	testutil.WaitFor(t, 15*time.Second, func() error {
		_, joinsA := a.snapshot()
		var joined error
		if !slices.Contains(joinsA, ipB+":7947") {
			joined = fmt.Errorf("node-a has not joined node-e (joins: %q)", joinsA)
		}
		return errors.Join(saw(a, markA, "node-e"), joined, saw(e, 0, "node-a"), saw(b, markB, "node-a"))
	})

	// The one-shot browse of the workstation tools, run in a's namespace,
	// finds the nodes of cluster test (node-a through multicast loopback,
	// node-b and node-e over the new link), and not node-c of another
	// cluster.
	c := startHelper(t, nsB, "node-c", "other", ifB, ipB, 7948)
	testutil.WaitFor(t, 15*time.Second, func() error { return saw(c, 0, "node-a") })
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	oneShot := nsA.Command(ctx, exe, "-test.run=^TestHelperProcess$", "-test.count=1")
	oneShot.Env = append(os.Environ(), envHelper+"=1", envOneShot+"=2500ms", envIface+"="+ifA, envCluster+"=test")
	oneShot.Stderr = &testLogWriter{t: t, prefix: "browse: "}
	out, err := oneShot.Output()
	if err != nil {
		t.Fatalf("one-shot browse: %v; output:\n%s", err, out)
	}
	var found []string
	for _, line := range strings.Split(string(out), "\n") {
		var sp seenPeer
		if strings.HasPrefix(line, lineSeen) && json.Unmarshal([]byte(line[len(lineSeen):]), &sp) == nil {
			found = append(found, sp.Instance)
		}
	}
	if want := []string{"node-a", "node-b", "node-e"}; !slices.Equal(found, want) {
		t.Errorf("one-shot browse of cluster test in %s found %q, want %q", nsA.Name, found, want)
	}

	for _, h := range []*helper{a, b, c, e} {
		lines := h.wait(t)
		if !slices.Contains(lines, lineStopped) {
			t.Errorf("helper %s did not shut down cleanly; output:\n%s", h.name, strings.Join(lines, "\n"))
		}
	}
	// One unplug costs a handful of warnings (the pause, a browse round
	// or advertisement cut off by it), not a line per retry of a hot loop.
	const maxFailures = 10
	for _, h := range []*helper{a, b} {
		n := h.log.count("level=WARN", "level=ERROR")
		t.Logf("%s logged %d warnings or errors, %d of them about the pause", h.name, n, h.log.count(paused))
		if n > maxFailures {
			t.Errorf("%s logged %d warnings or errors over one unplug, want at most %d", h.name, n, maxFailures)
		}
	}
}

// ipCmd runs the ip command with args, failing t if it fails.
func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// fakeMDNS is an in-process MDNS: tests announce peers to whoever browses.
type fakeMDNS struct {
	mu          sync.Mutex
	advertising []Peer  // currently advertised
	goodbyes    []Peer  // withdrawn announcements
	advertIdx   [][]int // interface indexes of every Advertise call
	browsers    map[int]func(Peer)
	browseIdx   [][]int     // interface indexes of every Browse call
	browseAt    []time.Time // when each Browse call started
	announced   map[string]Peer
	nextID      int
	advertErr   error // returned by the next Advertise call, once
	browseErr   error // returned at once by the next browseFails Browse calls
	browseFails int
}

func newFake() *fakeMDNS {
	return &fakeMDNS{browsers: make(map[int]func(Peer)), announced: make(map[string]Peer)}
}

func indexes(ifaces []net.Interface) []int {
	out := make([]int, len(ifaces))
	for i, ifi := range ifaces {
		out[i] = ifi.Index
	}
	return out
}

func (f *fakeMDNS) Advertise(ctx context.Context, self Peer, ifaces []net.Interface) error {
	f.mu.Lock()
	f.advertIdx = append(f.advertIdx, indexes(ifaces))
	if err := f.advertErr; err != nil {
		f.advertErr = nil
		f.mu.Unlock()
		return err
	}
	f.advertising = append(f.advertising, self)
	f.mu.Unlock()
	<-ctx.Done()
	f.mu.Lock()
	f.advertising = slices.DeleteFunc(f.advertising, func(p Peer) bool { return p.Instance == self.Instance })
	f.goodbyes = append(f.goodbyes, self)
	f.mu.Unlock()
	return nil
}

// Browse is one round: like a real query, it is answered at once by every
// peer announced so far, then hears later announcements until ctx is done.
func (f *fakeMDNS) Browse(ctx context.Context, ifaces []net.Interface, found func(Peer)) error {
	f.mu.Lock()
	f.browseIdx = append(f.browseIdx, indexes(ifaces))
	f.browseAt = append(f.browseAt, time.Now())
	if f.browseFails > 0 {
		f.browseFails--
		f.mu.Unlock()
		return f.browseErr
	}
	id := f.nextID
	f.nextID++
	f.browsers[id] = found
	answers := slices.Collect(maps.Values(f.announced))
	f.mu.Unlock()
	for _, p := range answers {
		found(p)
	}
	<-ctx.Done()
	f.mu.Lock()
	delete(f.browsers, id)
	f.mu.Unlock()
	return nil
}

// announce delivers p to every browser, as an mDNS announcement would, and
// makes it answer later queries.
func (f *fakeMDNS) announce(p Peer) {
	f.mu.Lock()
	f.announced[p.Instance+"\x00"+p.GossipAddr()] = p
	browsers := make([]func(Peer), 0, len(f.browsers))
	for _, b := range f.browsers {
		browsers = append(browsers, b)
	}
	f.mu.Unlock()
	for _, b := range browsers {
		b(p)
	}
}

func (f *fakeMDNS) state() (advertising, goodbyes []Peer, browsers int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.advertising), slices.Clone(f.goodbyes), len(f.browsers)
}

// joins records the Join calls of a Discovery.
type joins struct {
	mu      sync.Mutex
	calls   [][]string
	members map[string]bool
	fail    bool
}

func (j *joins) join(addrs []string) (int, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.calls = append(j.calls, slices.Clone(addrs))
	if j.fail {
		return 0, errors.New("connection refused")
	}
	for _, a := range addrs {
		j.members[a] = true
	}
	return len(addrs), nil
}

func (j *joins) isMember(addr string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.members[addr]
}

func (j *joins) snapshot() [][]string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.calls)
}

// testLogger writes discovery's log into the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// fakeIface is an interface that does not exist on the machine, so its
// address list is empty.
func fakeIface(index int) net.Interface {
	return net.Interface{Index: index, Name: "fake0", Flags: net.FlagUp | net.FlagMulticast}
}

var selfPeer = Peer{
	Instance: "pi-a", Cluster: "home", Version: "v1.0.0",
	Addrs: []net.IP{net.ParseIP("192.0.2.1")}, GossipPort: 7946, HTTPPort: 8080,
}

func peer(i int, cluster string) Peer {
	return Peer{
		Instance: fmt.Sprintf("pi-%d", i), Cluster: cluster, Version: "v1.0.0",
		Addrs: []net.IP{net.ParseIP(fmt.Sprintf("192.0.2.%d", 10+i))}, GossipPort: 7946, HTTPPort: 8080,
	}
}

// start builds and starts a Discovery on the fake, with a fake interface so
// the test does not depend on the machine's network.
func start(t *testing.T, f *fakeMDNS, j *joins, quiet time.Duration) *Discovery {
	t.Helper()
	d, err := New(Config{Self: selfPeer, Quiet: quiet, Join: j.join, IsMember: j.isMember, Logger: testLogger(t)}, f)
	if err != nil {
		t.Fatal(err)
	}
	d.resolve = func() ([]net.Interface, error) { return []net.Interface{fakeIface(99)}, nil }
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Shutdown)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if adv, _, browsers := f.state(); len(adv) != 1 || browsers != 1 {
			return fmt.Errorf("advertising %d, browsing %d; want 1 and 1", len(adv), browsers)
		}
		return nil
	})
	return d
}

func TestBurstIsJoinedOnce(t *testing.T) {
	f, j := newFake(), &joins{members: map[string]bool{}}
	start(t, f, j, 200*time.Millisecond)

	var want []string
	for i := range 5 {
		p := peer(i, "home")
		f.announce(p)
		f.announce(p) // answers repeat; must not add joins
		want = append(want, p.GossipAddr())
	}
	slices.Sort(want)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if calls := j.snapshot(); len(calls) == 0 {
			return errors.New("no join yet")
		}
		return nil
	})
	calls := j.snapshot()
	if len(calls) != 1 || !slices.Equal(calls[0], want) {
		t.Fatalf("joins = %q; want one join with %q", calls, want)
	}

	// Peers that are members by now are not joined again when re-announced.
	for i := range 5 {
		f.announce(peer(i, "home"))
	}
	// A new peer after the batch gets a join of its own, for it alone.
	late := peer(9, "home")
	f.announce(late)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if calls := j.snapshot(); len(calls) < 2 {
			return errors.New("late peer not joined")
		}
		return nil
	})
	if calls := j.snapshot(); len(calls) != 2 || !slices.Equal(calls[1], []string{late.GossipAddr()}) {
		t.Fatalf("joins = %q; want the second to hold only %s", calls, late.GossipAddr())
	}
}

func TestOtherClusterAndSelfIgnored(t *testing.T) {
	f, j := newFake(), &joins{members: map[string]bool{}}
	start(t, f, j, 50*time.Millisecond)

	f.announce(selfPeer)
	f.announce(peer(1, "office"))
	f.announce(Peer{Instance: "no-addr", Cluster: "home", GossipPort: 7946})
	good := peer(2, "home")
	f.announce(good)

	testutil.WaitFor(t, 5*time.Second, func() error {
		if len(j.snapshot()) == 0 {
			return errors.New("no join yet")
		}
		return nil
	})
	if calls := j.snapshot(); len(calls) != 1 || !slices.Equal(calls[0], []string{good.GossipAddr()}) {
		t.Fatalf("joins = %q; want only %s (not self, not cluster office)", calls, good.GossipAddr())
	}
}

// TestSameNameOtherAddressIsJoined: a node that advertises our name from
// another address is not us; joining lets the cluster report the conflict.
func TestSameNameOtherAddressIsJoined(t *testing.T) {
	f, j := newFake(), &joins{members: map[string]bool{}}
	start(t, f, j, 50*time.Millisecond)
	twin := selfPeer
	twin.Addrs = []net.IP{net.ParseIP("192.0.2.200")}
	f.announce(twin)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if calls := j.snapshot(); len(calls) != 1 || calls[0][0] != "192.0.2.200:7946" {
			return fmt.Errorf("joins = %q; want the twin joined", calls)
		}
		return nil
	})
}

func TestFailedJoinIsRetriedOnNextAnswer(t *testing.T) {
	f, j := newFake(), &joins{members: map[string]bool{}, fail: true}
	start(t, f, j, 20*time.Millisecond)
	p := peer(1, "home")
	f.announce(p)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if len(j.snapshot()) != 1 {
			return errors.New("first join not attempted")
		}
		return nil
	})
	j.mu.Lock()
	j.fail = false
	j.mu.Unlock()
	f.announce(p) // the next browse round answers again
	testutil.WaitFor(t, 5*time.Second, func() error {
		if !j.isMember(p.GossipAddr()) {
			return fmt.Errorf("%s not joined after a failed attempt; joins %q", p.GossipAddr(), j.snapshot())
		}
		return nil
	})
}

// TestSteadyTrickleStillJoins: peers arriving just faster than the quiet
// period must not postpone the join forever.
func TestSteadyTrickleStillJoins(t *testing.T) {
	f, j := newFake(), &joins{members: map[string]bool{}}
	const quiet = 100 * time.Millisecond
	start(t, f, j, quiet)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(quiet / 2):
				f.announce(peer(i%200, "home"))
			}
		}
	}()
	testutil.WaitFor(t, 10*quiet*maxQuietFactor, func() error {
		if len(j.snapshot()) == 0 {
			return errors.New("a steady trickle of peers postponed every join")
		}
		return nil
	})
}

func TestAdvertiseFailureIsRetried(t *testing.T) {
	f, j := newFake(), &joins{members: map[string]bool{}}
	f.advertErr = errors.New("interface not ready")
	start(t, f, j, 50*time.Millisecond) // waits until advertising
}

func TestShutdownStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	f, j := newFake(), &joins{members: map[string]bool{}}
	d, err := New(Config{Self: selfPeer, Quiet: time.Hour, Join: j.join, Logger: testLogger(t)}, f)
	if err != nil {
		t.Fatal(err)
	}
	d.Shutdown() // before Start: harmless
	d, _ = New(Config{Self: selfPeer, Quiet: time.Hour, Join: j.join, Logger: testLogger(t)}, f)
	d.resolve = func() ([]net.Interface, error) { return []net.Interface{fakeIface(99)}, nil }
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err == nil {
		t.Error("second Start succeeded")
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if adv, _, browsers := f.state(); len(adv) != 1 || browsers != 1 {
			return fmt.Errorf("advertising %d, browsing %d", len(adv), browsers)
		}
		return nil
	})
	f.announce(peer(1, "home")) // pending behind an hour of quiet

	d.Shutdown()
	d.Shutdown()
	adv, goodbyes, browsers := f.state()
	if len(adv) != 0 || browsers != 0 {
		t.Fatalf("after Shutdown: advertising %d, browsing %d", len(adv), browsers)
	}
	if len(goodbyes) != 1 || goodbyes[0].Instance != selfPeer.Instance {
		t.Fatalf("goodbyes = %v; want one for %s", goodbyes, selfPeer.Instance)
	}
	if calls := j.snapshot(); len(calls) != 0 {
		t.Fatalf("joined during or after Shutdown: %q", calls)
	}
	if err := d.Start(); err == nil {
		t.Error("Start after Shutdown succeeded")
	}
	// Shutdown waits for its goroutines, but a goroutine's deferred
	// wg.Done runs just before it exits, so give the last ones a moment to
	// be gone; a leaked one stays and fails the test.
	err = testutil.Poll(2*time.Second, 0, func() error {
		if after := runtime.NumGoroutine(); after > before {
			return fmt.Errorf("%d goroutines before, %d after Shutdown", before, after)
		}
		return nil
	})
	if err != nil {
		buf := make([]byte, 1<<16)
		t.Fatalf("%v:\n%s", err, buf[:runtime.Stack(buf, true)])
	}
}

func TestNewValidates(t *testing.T) {
	join := func([]string) (int, error) { return 0, nil }
	cases := map[string]struct {
		c    Config
		m    MDNS
		want string
	}{
		"no mdns":    {Config{Self: selfPeer, Join: join}, nil, "no mDNS"},
		"no name":    {Config{Self: Peer{Cluster: "c", GossipPort: 1}, Join: join}, newFake(), "Instance"},
		"no cluster": {Config{Self: Peer{Instance: "a", GossipPort: 1}, Join: join}, newFake(), "Cluster"},
		"bad port":   {Config{Self: Peer{Instance: "a", Cluster: "c", GossipPort: 70000}, Join: join}, newFake(), "GossipPort 70000"},
		"no join":    {Config{Self: selfPeer}, newFake(), "Join"},
		"neg quiet":  {Config{Self: selfPeer, Join: join, Quiet: -time.Second}, newFake(), "Quiet"},
	}
	for name, tc := range cases {
		if _, err := New(tc.c, tc.m); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", name, err, tc.want)
		}
	}
}

func TestGossipAddr(t *testing.T) {
	cases := []struct {
		p    Peer
		want string
	}{
		{Peer{Addrs: []net.IP{net.ParseIP("fe80::1"), net.ParseIP("10.0.0.5")}, GossipPort: 7946}, "10.0.0.5:7946"},
		{Peer{Addrs: []net.IP{net.ParseIP("2001:db8::1")}, GossipPort: 7946}, "[2001:db8::1]:7946"},
		{Peer{Addrs: []net.IP{net.IPv4zero}, GossipPort: 7946}, ""},
		{Peer{GossipPort: 7946}, ""},
		{Peer{Addrs: []net.IP{net.ParseIP("10.0.0.5")}}, ""},
	}
	for _, tc := range cases {
		if got := tc.p.GossipAddr(); got != tc.want {
			t.Errorf("GossipAddr(%v) = %q, want %q", tc.p.Addrs, got, tc.want)
		}
	}
}

// logRecord is one log line discovery wrote, as recorded by logRecorder.
type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]slog.Value
}

// logRecorder is a slog.Handler that keeps every record and writes it to
// the test log.
type logRecorder struct {
	t       *testing.T
	mu      *sync.Mutex
	records *[]logRecord
}

func newLogRecorder(t *testing.T) *logRecorder {
	return &logRecorder{t: t, mu: new(sync.Mutex), records: new([]logRecord)}
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{level: r.Level, msg: r.Message, attrs: map[string]slog.Value{}}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.t.Log(b.String())
	h.mu.Lock()
	*h.records = append(*h.records, rec)
	h.mu.Unlock()
	return nil
}

// matching returns the records with message msg.
func (h *logRecorder) matching(msg string) []logRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []logRecord
	for _, r := range *h.records {
		if r.msg == msg {
			out = append(out, r)
		}
	}
	return out
}

// TestBrowseFailuresBackOff: a Browse that fails at once must be retried
// with capped exponential back-off, never in a hot loop, and the back-off
// starts again from its base once a round works.
func TestBrowseFailuresBackOff(t *testing.T) {
	const base = 5 * time.Millisecond
	const failures = 9 // waits 5, 10, 20, 40, 80, 150 (capped), 150, 150, 150 ms
	f, j := newFake(), &joins{members: map[string]bool{}}
	f.browseErr, f.browseFails = errors.New("udp4: failed to join any of these interfaces"), failures
	logs := newLogRecorder(t)
	d, err := New(Config{Self: selfPeer, Backoff: base, InterfaceCheck: time.Hour, Join: j.join, Logger: slog.New(logs)}, f)
	if err != nil {
		t.Fatal(err)
	}
	d.resolve = func() ([]net.Interface, error) { return []net.Interface{fakeIface(99)}, nil }
	d.minRound = 20 * time.Millisecond // rounds that work end soon, so the next failure comes soon
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Shutdown)

	// The failures, then a working round, then fail again: the wait after
	// that failure must be the base again.
	testutil.WaitFor(t, 10*time.Second, func() error {
		if _, _, browsers := f.state(); browsers == 0 {
			return errors.New("no browse round has worked yet")
		}
		return nil
	})
	f.mu.Lock()
	f.browseFails = 1
	f.mu.Unlock()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := len(logs.matching("mdns browse failed, retrying")); n < failures+1 {
			return fmt.Errorf("%d browse failures logged, want %d", n, failures+1)
		}
		return nil
	})
	d.Shutdown()

	var waits []time.Duration
	for _, r := range logs.matching("mdns browse failed, retrying") {
		waits = append(waits, r.attrs["in"].Duration())
	}
	want := []time.Duration{base, 2 * base, 4 * base, 8 * base, 16 * base, 30 * base, 30 * base, 30 * base, 30 * base, base}
	if !slices.Equal(waits, want) {
		t.Errorf("waits between browse attempts = %v, want %v", waits, want)
	}

	// The attempts really were that far apart: between the first and the
	// last of the failing ones at least the sum of the waits passed, so a
	// hot loop (thousands of attempts a second) cannot pass.
	f.mu.Lock()
	at := slices.Clone(f.browseAt)
	f.mu.Unlock()
	if len(at) < failures+1 {
		t.Fatalf("%d browse attempts, want at least %d", len(at), failures+1)
	}
	var sum time.Duration
	for _, w := range want[:failures] {
		sum += w
	}
	if took := at[failures].Sub(at[0]); took < sum {
		t.Errorf("%d browse attempts took %v, want at least %v of back-off", failures+1, took, sum)
	}
	t.Logf("%d failing attempts over %v", failures, at[failures].Sub(at[0]))
}

// fakeNet is a network interface that tests can delete, bring down and
// re-create with a new index.
type fakeNet struct {
	mu    sync.Mutex
	iface *net.Interface // nil: missing
	looks int            // resolve calls
}

func (n *fakeNet) resolve() ([]net.Interface, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.looks++
	switch {
	case n.iface == nil:
		return nil, errors.New(`mdns interface "fake0" does not exist`)
	case n.iface.Flags&net.FlagUp == 0:
		return nil, errors.New(`mdns interface "fake0" is down`)
	}
	return []net.Interface{*n.iface}, nil
}

func (n *fakeNet) set(ifi *net.Interface) {
	n.mu.Lock()
	n.iface = ifi
	n.mu.Unlock()
}

// TestInterfaceComesAndGoes: discovery waits for a missing interface
// (saying so once, at warn), starts on it when it appears, and when it is
// re-created with a new index advertises and browses again on the new one.
func TestInterfaceComesAndGoes(t *testing.T) {
	f, j := newFake(), &joins{members: map[string]bool{}}
	fn := &fakeNet{}
	logs := newLogRecorder(t)
	d, err := New(Config{Self: selfPeer, Backoff: 5 * time.Millisecond, InterfaceCheck: 5 * time.Millisecond,
		Quiet: 10 * time.Millisecond, Join: j.join, IsMember: j.isMember, Logger: slog.New(logs)}, f)
	if err != nil {
		t.Fatal(err)
	}
	d.resolve = fn.resolve
	if err := d.Start(); err != nil {
		t.Fatalf("Start without the interface: %v; want it to wait for it", err)
	}
	t.Cleanup(d.Shutdown)

	const waiting = "mdns paused: waiting for the network interface"
	// Missing at start: keep looking, with back-off, warning once.
	testutil.WaitFor(t, 5*time.Second, func() error {
		if len(logs.matching("mdns still waiting for the network interface")) < 4 {
			return errors.New("not looked for the interface a few times yet")
		}
		return nil
	})
	if n := len(logs.matching(waiting)); n != 1 {
		t.Errorf("%d warnings about the missing interface, want 1", n)
	}
	if adv, _, browsers := f.state(); len(adv) != 0 || browsers != 0 {
		t.Fatalf("advertising %d, browsing %d without an interface", len(adv), browsers)
	}

	// expectOn waits until discovery advertises and browses on index.
	expectOn := func(index int) {
		t.Helper()
		testutil.WaitFor(t, 5*time.Second, func() error {
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.advertising) != 1 || !slices.Equal(f.advertIdx[len(f.advertIdx)-1], []int{index}) {
				return fmt.Errorf("advertising %d, on %v; want once on [%d]", len(f.advertising), f.advertIdx, index)
			}
			if len(f.browsers) != 1 || !slices.Equal(f.browseIdx[len(f.browseIdx)-1], []int{index}) {
				return fmt.Errorf("browsing %d, on %v; want on [%d]", len(f.browsers), f.browseIdx, index)
			}
			return nil
		})
	}
	first := fakeIface(7)
	fn.set(&first)
	expectOn(7)
	if len(logs.matching("mdns network interface available again")) == 0 {
		t.Error("the interface's arrival was not logged")
	}

	// Deleted and re-created (new index): a goodbye on the old one, a new
	// advertisement and browse on the new one, and a peer on the new link
	// is found and joined.
	fn.set(nil)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if adv, goodbyes, _ := f.state(); len(adv) != 0 || len(goodbyes) != 1 {
			return fmt.Errorf("advertising %d with %d goodbyes after the interface went; want 0 and 1", len(adv), len(goodbyes))
		}
		return nil
	})
	if n := len(logs.matching(waiting)); n != 2 {
		t.Errorf("%d warnings about the missing interface after two outages, want 2", n)
	}
	second := fakeIface(8)
	fn.set(&second)
	expectOn(8)
	p := peer(3, "home")
	f.announce(p)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if !j.isMember(p.GossipAddr()) {
			return fmt.Errorf("%s not joined on the new interface; joins %q", p.GossipAddr(), j.snapshot())
		}
		return nil
	})

	// Re-created between two checks: never seen missing, only changed.
	third := fakeIface(9)
	fn.set(&third)
	expectOn(9)
	if _, goodbyes, _ := f.state(); len(goodbyes) != 2 {
		t.Errorf("%d goodbyes after the interface changed twice, want 2", len(goodbyes))
	}

	// Down is as good as gone.
	down := fakeIface(9)
	down.Flags &^= net.FlagUp
	fn.set(&down)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if adv, _, browsers := f.state(); len(adv) != 0 || browsers != 0 {
			return fmt.Errorf("advertising %d, browsing %d on a down interface", len(adv), browsers)
		}
		return nil
	})
	fn.set(&third)
	expectOn(9)
}

// A node whose address changed advertises the new one: the old
// announcement is withdrawn, and answers from the new address are its
// own, not a peer to join.
func TestSetAddrsReadvertises(t *testing.T) {
	f, j := newFake(), &joins{members: map[string]bool{}}
	d, err := New(Config{Self: selfPeer, Quiet: 20 * time.Millisecond, InterfaceCheck: 20 * time.Millisecond,
		Join: j.join, IsMember: j.isMember, Logger: testLogger(t)}, f)
	if err != nil {
		t.Fatal(err)
	}
	d.resolve = func() ([]net.Interface, error) { return []net.Interface{fakeIface(99)}, nil }
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Shutdown)
	moved := net.ParseIP("192.0.2.2")
	testutil.WaitFor(t, 5*time.Second, func() error {
		if adv, _, _ := f.state(); len(adv) != 1 {
			return fmt.Errorf("advertising %d, want 1", len(adv))
		}
		return nil
	})
	d.SetAddrs([]net.IP{moved})
	testutil.WaitFor(t, 5*time.Second, func() error {
		adv, bye, _ := f.state()
		if len(adv) != 1 || len(adv[0].Addrs) != 1 || !adv[0].Addrs[0].Equal(moved) {
			return fmt.Errorf("advertising %v, want %s", adv, moved)
		}
		if len(bye) == 0 || !bye[0].Addrs[0].Equal(selfPeer.Addrs[0]) {
			return fmt.Errorf("goodbyes %v, want the old address withdrawn", bye)
		}
		return nil
	})
	self := selfPeer
	self.Addrs = []net.IP{moved}
	f.announce(self)
	good := peer(3, "home")
	f.announce(good)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if len(j.snapshot()) == 0 {
			return errors.New("no join yet")
		}
		return nil
	})
	if calls := j.snapshot(); len(calls) != 1 || !slices.Equal(calls[0], []string{good.GossipAddr()}) {
		t.Fatalf("joins = %q; want only %s (its own new address is not a peer)", calls, good.GossipAddr())
	}
}

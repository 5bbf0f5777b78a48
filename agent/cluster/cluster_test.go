package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/rpi-cluster/rpi-cluster/agent/identity"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

const waitTimeout = 10 * time.Second

// testLogger routes logs into t.Log until the test ends; memberlist's
// goroutines may outlive Shutdown by a moment, so later lines are dropped.
func testLogger(t *testing.T) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(w.close)
	level := slog.LevelInfo
	if os.Getenv("RPI_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type tWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func (w *tWriter) close() { w.mu.Lock(); w.done = true; w.mu.Unlock() }

type nodeOpt func(*Config)

func withKey(k []byte) nodeOpt         { return func(c *Config) { c.SecretKey = k } }
func withCluster(n string) nodeOpt     { return func(c *Config) { c.ClusterName = n } }
func withServices(s ...string) nodeOpt { return func(c *Config) { c.Services = s } }

// startNode starts a node on ip (in 127.0.1.0/24) with a free port and the
// test profile; it is shut down when the test ends.
func startNode(t *testing.T, name, ip string, opts ...nodeOpt) *Cluster {
	t.Helper()
	p, err := ProfileByName("test")
	if err != nil {
		t.Fatal(err)
	}
	conf := &Config{NodeName: name, ClusterName: "rpi", BindAddr: ip, HTTPPort: 8080, Profile: p, Logger: testLogger(t).With("test_node", name)}
	for _, o := range opts {
		o(conf)
	}
	if conf.Key == nil {
		conf.Key = nodeKey(t, name)
	}
	c, err := Create(conf)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	if err := c.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { c.Shutdown() })
	return c
}

// testKeys holds each test node's signing key, so a node restarted in a
// test keeps its identity as an agent does with its data dir.
var testKeys sync.Map

func nodeKey(t *testing.T, name string) *identity.Key {
	k, _ := identity.Generate()
	got, _ := testKeys.LoadOrStore(t.Name()+"\x00"+name, k)
	return got.(*identity.Key)
}

// addPeerLocked puts name into c's view as memberlist had reported it
// alive at ip (port 9, where nothing listens) at heard, with a heartbeat
// announcing period arriving then.
func (c *Cluster) addPeerLocked(name, ip string, period time.Duration, heard time.Time) {
	p := &peer{addr: ip, port: 9}
	c.det.Joined(&p.live, period, heard)
	c.det.Heartbeat(&p.live, 1, period, heard)
	c.peers[name] = p
	c.recountLocked()
}

func addr(c *Cluster) string {
	ip, port := c.LocalAddr()
	return hostPort(ip, port)
}

func join(t *testing.T, c *Cluster, to *Cluster) {
	t.Helper()
	if _, err := c.Join([]string{addr(to)}); err != nil {
		t.Fatalf("%s joins %s: %v", c.conf.NodeName, to.conf.NodeName, err)
	}
}

// formCluster joins every node to the first and waits until each sees all
// of them alive. It returns nodes.
func formCluster(t *testing.T, nodes ...*Cluster) []*Cluster {
	t.Helper()
	for _, n := range nodes[1:] {
		join(t, n, nodes[0])
	}
	testutil.WaitFor(t, waitTimeout, allAlive(nodes, len(nodes)))
	return nodes
}

// expect checks what every observer says about name.
func expect(observers []*Cluster, name string, check func(m Member) error) func() error {
	return func() error {
		for _, o := range observers {
			m, ok := o.Member(name)
			if !ok {
				return fmt.Errorf("%s does not know %s", o.conf.NodeName, name)
			}
			if err := check(m); err != nil {
				return fmt.Errorf("%s sees %s: %w", o.conf.NodeName, name, err)
			}
		}
		return nil
	}
}

func status(want string) func(Member) error {
	return func(m Member) error {
		if m.Status != want {
			return fmt.Errorf("status %s (phi %.1f), want %s", m.Status, m.Phi, want)
		}
		return nil
	}
}

func allAlive(nodes []*Cluster, n int) func() error {
	return func() error {
		for _, o := range nodes {
			var alive []string
			for _, m := range o.Members() {
				if m.Status == StatusAlive {
					alive = append(alive, m.Name)
				}
			}
			if len(alive) != n {
				return fmt.Errorf("%s sees %d alive %v, want %d", o.conf.NodeName, len(alive), alive, n)
			}
		}
		return nil
	}
}

// collect records the events of one subscription.
type collector struct {
	mu     sync.Mutex
	events []Event
	done   chan struct{}
}

func collect(c *Cluster) *collector {
	ch, _ := c.Subscribe(1024)
	col := &collector{done: make(chan struct{})}
	go func() {
		defer close(col.done)
		for ev := range ch {
			col.mu.Lock()
			col.events = append(col.events, ev)
			col.mu.Unlock()
		}
	}()
	return col
}

// reached is a WaitFor condition: at least n events of typ for name have
// been collected. Events reach the collector through its own goroutine, so a
// status seen through Member can be ahead of them.
func (col *collector) reached(typ EventType, name string, n int) func() error {
	return func() error {
		if got := col.count(typ, name); got < n {
			return fmt.Errorf("%d %s events for %s collected, want %d", got, typ, name, n)
		}
		return nil
	}
}

func (col *collector) count(typ EventType, name string) int {
	col.mu.Lock()
	defer col.mu.Unlock()
	n := 0
	for _, ev := range col.events {
		if ev.Type == typ && ev.Member.Name == name {
			n++
		}
	}
	return n
}

// failCause returns who reached the first fail verdict on name (Event.Cause
// and By).
func (col *collector) failCause(name string) (Cause, string, error) {
	col.mu.Lock()
	defer col.mu.Unlock()
	for _, ev := range col.events {
		if ev.Type == EventFail && ev.Member.Name == name {
			return ev.Cause, ev.By, nil
		}
	}
	return "", "", fmt.Errorf("no fail event for %s among %d events", name, len(col.events))
}

func (col *collector) has(typ EventType, name string) error {
	col.mu.Lock()
	defer col.mu.Unlock()
	for _, ev := range col.events {
		if ev.Type == typ && ev.Member.Name == name {
			return nil
		}
	}
	return fmt.Errorf("no %s event for %s among %d events", typ, name, len(col.events))
}

func TestFiveNodesFailLeaveRestart(t *testing.T) {
	var nodes []*Cluster
	for i := 1; i <= 5; i++ {
		nodes = append(nodes, startNode(t, fmt.Sprintf("n%d", i), fmt.Sprintf("127.0.1.%d", i)))
	}
	events := collect(nodes[0])
	formCluster(t, nodes...)
	for _, m := range nodes[0].Members() {
		if !m.Self && (m.Phi >= m.PhiThreshold || m.PhiThreshold != 8) {
			t.Errorf("n1 sees %s with phi %v threshold %v, want a live peer below 8", m.Name, m.Phi, m.PhiThreshold)
		}
	}

	// n5 dies without a word.
	if err := nodes[4].Shutdown(); err != nil {
		t.Fatal(err)
	}
	others := nodes[:4]
	testutil.WaitFor(t, waitTimeout, expect(others, "n5", func(m Member) error {
		if m.Status != StatusFailed {
			return fmt.Errorf("status %s, want failed", m.Status)
		}
		// Convicted: shown at the threshold, not at a phi that grows
		// without bound with the silence.
		if m.Phi != m.PhiThreshold {
			return fmt.Errorf("phi %.2f, want the threshold %.0f", m.Phi, m.PhiThreshold)
		}
		return nil
	}))

	// n4 leaves politely, once every peer holds its record: its leave
	// intent is checked against the key the record pinned. (The silence
	// verdict on n5 comes within half a second of its death, which can
	// be before n4's record has reached everyone.)
	testutil.WaitFor(t, waitTimeout, func() error {
		for _, o := range nodes[:3] {
			o.mu.Lock()
			rec := o.peers["n4"].rec
			o.mu.Unlock()
			if rec == nil {
				return fmt.Errorf("%s has no record of n4 yet", o.conf.NodeName)
			}
		}
		return nil
	})
	if err := nodes[3].Leave(2 * time.Second); err != nil {
		t.Fatalf("leave: %v", err)
	}
	// Leave returns once every alive peer has acknowledged the intent, so
	// none of them can take memberlist's leave message for a failure.
	for _, o := range nodes[:3] {
		o.mu.Lock()
		leaving := o.peers["n4"].live.Leaving()
		o.mu.Unlock()
		if !leaving {
			t.Errorf("%s has no leave intent from n4 after Leave returned", o.conf.NodeName)
		}
	}
	if err := nodes[3].Shutdown(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, waitTimeout, expect(nodes[:3], "n4", status(StatusLeft)))

	// n4 comes back with the same name and a new record.
	n4 := startNode(t, "n4", "127.0.1.4", withServices("nginx_webserver"))
	join(t, n4, nodes[1])
	live := []*Cluster{nodes[0], nodes[1], nodes[2], n4}
	testutil.WaitFor(t, waitTimeout, expect(live, "n4", func(m Member) error {
		if m.Status != StatusAlive {
			return fmt.Errorf("status %s, want alive", m.Status)
		}
		if !slices.Equal(m.Services, []string{"nginx_webserver"}) {
			return fmt.Errorf("services %v, want [nginx_webserver]", m.Services)
		}
		if m.Addr+fmt.Sprint(m.GossipPort) != strings.Replace(addr(n4), ":", "", 1) {
			return fmt.Errorf("address %s:%d, want %s", m.Addr, m.GossipPort, addr(n4))
		}
		return nil
	}))
	testutil.WaitFor(t, waitTimeout, expect(nodes[:3], "n5", status(StatusFailed)))

	testutil.WaitFor(t, waitTimeout, func() error {
		for _, want := range []struct {
			typ  EventType
			name string
		}{{EventJoin, "n2"}, {EventFail, "n5"}, {EventLeave, "n4"}, {EventJoin, "n4"}, {EventUpdate, "n4"}} {
			if err := events.has(want.typ, want.name); err != nil {
				return err
			}
		}
		return nil
	})
	if err := events.has(EventFail, "n4"); err == nil {
		t.Error("n4 left gracefully but n1 emitted a fail event for it")
	}
	if s := nodes[0].Stats(); s.MessagesSent == 0 || s.BytesReceived == 0 {
		t.Errorf("stats %+v: no traffic counted", s)
	}
}

func TestRecordPropagationAndVersions(t *testing.T) {
	n1 := startNode(t, "r1", "127.0.1.21")
	n2 := startNode(t, "r2", "127.0.1.22")
	n3 := startNode(t, "r3", "127.0.1.23")
	join(t, n2, n1)
	join(t, n3, n2)
	all := []*Cluster{n1, n2, n3}
	testutil.WaitFor(t, waitTimeout, allAlive(all, 3))

	v0 := n1.Self().Version
	n1.UpdateSelf(func(r *Record) {
		r.Services = []string{"db", "web"}
		r.Monitoring.Load1 = 0.5
		r.Version = 1 // not UpdateSelf's to take: must be ignored
		r.Name = "renamed"
	})
	self := n1.Self()
	if self.Version <= v0 || self.Name != "r1" {
		t.Fatalf("after UpdateSelf: version %d (was %d), name %q", self.Version, v0, self.Name)
	}
	seen := map[*Cluster]uint64{}
	testutil.WaitFor(t, waitTimeout, expect(all, "r1", func(m Member) error {
		if !slices.Equal(m.Services, []string{"db", "web"}) || m.Monitoring.Load1 != 0.5 {
			return fmt.Errorf("services %v load1 %v, want [db web] 0.5", m.Services, m.Monitoring.Load1)
		}
		return nil
	}))
	for _, o := range all {
		m, _ := o.Member("r1")
		seen[o] = m.Version
		if m.Version != self.Version {
			t.Errorf("%s holds version %d of r1, want %d", o.conf.NodeName, m.Version, self.Version)
		}
	}

	// A stale record (an old version, as gossip may still carry) is ignored.
	stale := self.Record.Clone()
	stale.Version = v0
	stale.Services = []string{"stale"}
	msg := recordMsg(t, n1.key, stale)
	n2.handleMsg(msg)
	// A record for r1 from another address (an impostor) is ignored too.
	imp := self.Record.Clone()
	imp.Version = self.Version + 100
	imp.Addr = "127.0.1.99"
	imp.Services = []string{"impostor"}
	msg = recordMsg(t, n1.key, imp)
	n2.handleMsg(msg)
	if m, _ := n2.Member("r1"); !slices.Equal(m.Services, []string{"db", "web"}) || m.Version != self.Version {
		t.Fatalf("after stale and foreign records r2 sees services %v version %d", m.Services, m.Version)
	}

	// Malformed messages are dropped and counted.
	before := n2.Stats().MalformedMessages
	for _, bad := range [][]byte{{}, {99}, {msgRecord, '{'}, {msgRecord, '{', '}'}, {msgHeartbeat}, {msgLeave, 'x'},
		{msgLeaveDirect, 'x'}, {msgLeaveAck, '{', '}'}, {msgLeaveAck, 'x'}} {
		n2.handleMsg(bad)
	}
	n2.handleRemoteState([]byte("junk"), false)
	if got := n2.Stats().MalformedMessages - before; got != 10 {
		t.Fatalf("malformed messages counted: %d, want 10", got)
	}

	// Many updates: versions seen by peers only ever grow, and all converge.
	for i := range 20 {
		n1.UpdateSelf(func(r *Record) { r.Monitoring.Load1 = float64(i) })
		for _, o := range all {
			m, _ := o.Member("r1")
			if m.Version < seen[o] {
				t.Fatalf("%s: version of r1 went back from %d to %d", o.conf.NodeName, seen[o], m.Version)
			}
			seen[o] = m.Version
		}
	}
	final := n1.Self().Version
	testutil.WaitFor(t, waitTimeout, expect(all, "r1", func(m Member) error {
		if m.Version != final || m.Monitoring.Load1 != 19 {
			return fmt.Errorf("version %d load1 %v, want %d 19", m.Version, m.Monitoring.Load1, final)
		}
		return nil
	}))
}

// barrier waits until a record change of from has reached every node in
// to: proof that gossip rounds ran since.
func barrier(t *testing.T, from *Cluster, to []*Cluster) {
	t.Helper()
	var want float64
	from.UpdateSelf(func(r *Record) { r.Monitoring.Load15++; want = r.Monitoring.Load15 })
	testutil.WaitFor(t, waitTimeout, expect(to, from.conf.NodeName, func(m Member) error {
		if m.Monitoring.Load15 != want {
			return fmt.Errorf("load15 %v, want %v", m.Monitoring.Load15, want)
		}
		return nil
	}))
	// Let a push-pull round pass too.
	s := from.Stats().MessagesReceived
	testutil.WaitFor(t, waitTimeout, func() error {
		if from.Stats().MessagesReceived < s+50 {
			return errors.New("not enough gossip traffic yet")
		}
		return nil
	})
}

func nobodyLists(t *testing.T, nodes []*Cluster, name string) {
	t.Helper()
	for _, o := range nodes {
		if m, ok := o.Member(name); ok {
			t.Errorf("%s lists intruder %s as %s", o.conf.NodeName, name, m.Status)
		}
		if n := len(o.Members()); n != len(nodes) {
			t.Errorf("%s lists %d members, want %d", o.conf.NodeName, n, len(nodes))
		}
	}
}

func TestEncryptionKeepsOutNodesWithoutTheKey(t *testing.T) {
	keyA := bytes.Repeat([]byte{0xA}, 32)
	keyB := bytes.Repeat([]byte{0xB}, 32)
	nodes := []*Cluster{
		startNode(t, "e1", "127.0.1.31", withKey(keyA)),
		startNode(t, "e2", "127.0.1.32", withKey(keyA)),
		startNode(t, "e3", "127.0.1.33", withKey(keyA)),
	}
	formCluster(t, nodes...)

	wrong := startNode(t, "wrongkey", "127.0.1.34", withKey(keyB))
	if _, err := wrong.Join([]string{addr(nodes[0])}); err == nil {
		t.Error("node with key B joined a key A cluster")
	}
	plain := startNode(t, "nokey", "127.0.1.35")
	if _, err := plain.Join([]string{addr(nodes[1])}); err == nil {
		t.Error("node without a key joined an encrypted cluster")
	}
	barrier(t, nodes[0], nodes)
	nobodyLists(t, nodes, "wrongkey")
	nobodyLists(t, nodes, "nokey")
	if n := len(wrong.Members()); n != 1 {
		t.Errorf("wrong-key node lists %d members, want only itself", n)
	}
}

func TestOtherClusterCannotJoin(t *testing.T) {
	nodes := []*Cluster{startNode(t, "c1", "127.0.1.41"), startNode(t, "c2", "127.0.1.42")}
	formCluster(t, nodes...)

	other := startNode(t, "x1", "127.0.1.43", withCluster("lab"))
	_, err := other.Join([]string{addr(nodes[0])})
	if err == nil || !strings.Contains(err.Error(), "cluster") {
		t.Errorf("join of another cluster: err %v, want an error naming the cluster mismatch", err)
	}
	barrier(t, nodes[0], nodes)
	nobodyLists(t, nodes, "x1")
	if _, ok := other.Member("c1"); ok {
		t.Error("node of cluster lab lists c1")
	}
}

func TestDuplicateNameIsReported(t *testing.T) {
	d1 := startNode(t, "d1", "127.0.1.51")
	d2 := startNode(t, "d2", "127.0.1.52")
	join(t, d2, d1)
	testutil.WaitFor(t, waitTimeout, allAlive([]*Cluster{d1, d2}, 2))

	dup := startNode(t, "d2", "127.0.1.53", withServices("impostor"))
	dup.Join([]string{addr(d1)}) // may or may not report an error; the conflict is what counts
	testutil.WaitFor(t, waitTimeout, func() error {
		for _, c := range d1.Conflicts() {
			if c.Name == "d2" && c.ExistingAddr == addr(d2) && c.OtherAddr == addr(dup) {
				return nil
			}
		}
		return fmt.Errorf("d1 reports conflicts %+v, want d2 %s vs %s", d1.Conflicts(), addr(d2), addr(dup))
	})
	barrier(t, d2, []*Cluster{d1})
	m, _ := d1.Member("d2")
	if hostPort(m.Addr, m.GossipPort) != addr(d2) || slices.Contains(m.Services, "impostor") || m.Status != StatusAlive {
		t.Fatalf("d1 sees d2 as %s at %s:%d with %v: the impostor was merged", m.Status, m.Addr, m.GossipPort, m.Services)
	}
}

func TestRestartWithNewAddressReclaimsName(t *testing.T) {
	nodes := []*Cluster{
		startNode(t, "h1", "127.0.1.61"),
		startNode(t, "h2", "127.0.1.62"),
		startNode(t, "h3", "127.0.1.63"),
	}
	formCluster(t, nodes...)

	nodes[2].Shutdown()
	testutil.WaitFor(t, waitTimeout, expect(nodes[:2], "h3", status(StatusFailed)))

	// Same name, new DHCP lease.
	h3 := startNode(t, "h3", "127.0.1.64", withServices("web"))
	testutil.WaitFor(t, waitTimeout, func() error {
		_, err := h3.Join([]string{addr(nodes[0])})
		return err
	})
	live := []*Cluster{nodes[0], nodes[1], h3}
	testutil.WaitFor(t, waitTimeout, expect(live, "h3", func(m Member) error {
		if m.Status != StatusAlive || m.Addr != "127.0.1.64" || !slices.Equal(m.Services, []string{"web"}) {
			return fmt.Errorf("%s at %s with %v, want alive at 127.0.1.64 with [web]", m.Status, m.Addr, m.Services)
		}
		return nil
	}))
	testutil.WaitFor(t, waitTimeout, allAlive(live, 3))
}

func TestSubscribeCancelAndShutdown(t *testing.T) {
	c := startNode(t, "s1", "127.0.1.71")
	ch1, cancel1 := c.Subscribe(1)
	ch2, _ := c.Subscribe(1)
	c.UpdateSelf(func(r *Record) { r.Services = []string{"a"} })
	c.UpdateSelf(func(r *Record) { r.Services = []string{"b"} }) // dropped: buffer full
	if got := c.Stats().DroppedEvents; got != 2 {
		t.Errorf("dropped events counted: %d, want 2 (one per full subscriber)", got)
	}
	if ev := <-ch1; ev.Type != EventUpdate || !ev.Member.Self || !slices.Equal(ev.Member.Services, []string{"a"}) {
		t.Fatalf("first event %+v", ev)
	}
	cancel1()
	cancel1()
	if _, ok := <-ch1; ok {
		t.Fatal("cancelled channel not closed")
	}
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := c.Shutdown(); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}
	<-ch2 // the buffered event
	if _, ok := <-ch2; ok {
		t.Fatal("shutdown did not close subscriber channel")
	}
	if _, err := c.Join([]string{"127.0.1.72:1"}); !errors.Is(err, ErrShutdown) {
		t.Fatalf("join after shutdown: %v, want ErrShutdown", err)
	}
	if err := c.Leave(time.Second); !errors.Is(err, ErrShutdown) {
		t.Fatalf("leave after shutdown: %v", err)
	}
}

// A node that left and restarted can be reported dead again right after
// it rejoins, while memberlist still relays its previous run's leave. That
// report is a leave, not a failure; a report a suspicion timeout later is a
// failure again.
func TestStaleLeaveAfterRejoin(t *testing.T) {
	c := startNode(t, "st1", "127.0.1.81")
	events := collect(c)
	old := &memberlist.Node{Name: "st2", Addr: net.ParseIP("127.0.1.82"), Port: 7001}
	fresh := &memberlist.Node{Name: "st2", Addr: net.ParseIP("127.0.1.82"), Port: 7002}

	c.handleNodeJoin(old)
	intent := leaveIntent{Name: "st2"}
	c.handleLeaveIntent(intent, []byte("signed by st2"))
	c.handleNodeLeave(old) // the graceful leave
	c.handleNodeJoin(fresh)
	c.handleNodeLeave(fresh) // the old leave, relayed after the restart
	if m, _ := c.Member("st2"); m.Status != StatusLeft {
		t.Fatalf("st2 reported gone just after rejoining: status %s, want left", m.Status)
	}
	c.handleNodeJoin(fresh) // it refutes
	rejoined := time.Now()

	// Later, the new run really fails: once a verdict about it could
	// have been reached, a report of its death is one.
	window := c.det.Timing().MinSuspicion
	testutil.WaitFor(t, waitTimeout, func() error {
		if since := time.Since(rejoined); since < window {
			return fmt.Errorf("rejoined %v ago, within the %v suspicion window", since, window)
		}
		return nil
	})
	c.handleNodeLeave(fresh)
	if m, _ := c.Member("st2"); m.Status != StatusFailed {
		t.Fatalf("st2 gone a suspicion timeout after rejoining: status %s, want failed", m.Status)
	}
	testutil.WaitFor(t, waitTimeout, func() error {
		events.mu.Lock()
		defer events.mu.Unlock()
		var got []EventType
		for _, ev := range events.events {
			if ev.Member.Name == "st2" {
				got = append(got, ev.Type)
			}
		}
		want := []EventType{EventJoin, EventLeave, EventJoin, EventLeave, EventJoin, EventFail}
		if !slices.Equal(got, want) {
			return fmt.Errorf("events for st2: %v, want %v", got, want)
		}
		return nil
	})
}

// A node that gets heartbeats from a peer it holds failed asks that peer to
// re-advertise itself, since the peer may never have heard of its death.
func TestHeartbeatFromFailedPeerAsksForReadvertisement(t *testing.T) {
	a := startNode(t, "ra1", "127.0.1.91")
	b := startNode(t, "ra2", "127.0.1.92")
	formCluster(t, a, b)
	if got := b.Stats().Readvertisements; got != 0 {
		t.Fatalf("re-advertisements before any failure: %d", got)
	}
	// a holds b failed; b, alive, keeps sending heartbeats.
	a.mu.Lock()
	a.det.Fail(&a.peers["ra2"].live, time.Now())
	a.mu.Unlock()
	testutil.WaitFor(t, waitTimeout, func() error {
		if got := b.Stats().Readvertisements; got == 0 {
			return errors.New("b was not asked to re-advertise itself")
		}
		return nil
	})
}

package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
)

// LoopbackIPs returns the first n addresses of the benchmark's loopback
// range: 127.0.9.1-250, then 127.0.10.1-250 and 127.0.11.1-250. Beyond
// 750 it wraps around (nodes listen on port 0, so addresses can be shared).
func LoopbackIPs(n int) []string {
	const perNet = 250
	ips := make([]string, 0, n)
	for i := range n {
		j := i % (3 * perNet)
		ips = append(ips, fmt.Sprintf("127.0.%d.%d", 9+j/perNet, 1+j%perNet))
	}
	return ips
}

// SwarmConfig configures a Swarm.
type SwarmConfig struct {
	// ClusterName separates concurrent swarms. Required.
	ClusterName string
	Profile     cluster.Profile
	// IPs are the loopback addresses nodes bind to, round robin. Required.
	IPs []string
	// Loss is the probability that a node drops an outgoing UDP packet.
	Loss float64
	// Key turns gossip encryption on, as production clusters run.
	Key []byte
	// Seed makes victim choice and packet loss repeatable.
	Seed uint64
	// Logger receives the nodes' logs. Nil discards them.
	Logger *slog.Logger
	// Progress receives the swarm's own: joins retried, formation
	// progress. Nil discards them.
	Progress *slog.Logger
	// Dilation runs the swarm in dilated time: the nodes get Profile with
	// every duration multiplied by it, and the swarm's own durations (the
	// arguments and results of Grow, WaitJoined, WaitFailed, Freeze,
	// RunUpdates and Sleep, its poll intervals) are emulated time.
	Dilation Dilation
	// SplitKinds splits every byte sent by message kind (see KindCounter):
	// each packet is decrypted and parsed once more, which costs CPU.
	SplitKinds bool
}

// eventBuffer is each node's event subscription. A node joining a formed
// cluster learns of every member at once (a join and an update each), so
// 2048 covers 500 nodes while the collector drains; a drop is counted and
// reported (see DroppedEvents), never silent. It is bounded because the
// buffers are allocated up front and scanned by every GC: 16,384 slots
// were 6.7 MB per node, 670 MB at N = 100.
const eventBuffer = 2048

// FalsePositive is a live node declared failed by a peer.
type FalsePositive struct {
	Subject, Observer string
	Time              time.Time
	// Cause and By say who reached the verdict (cluster.Event); Phase is
	// what the run was doing then (Swarm.SetPhase).
	Cause cluster.Cause
	By    string
	Phase string
}

// Swarm is a cluster of in-process nodes on loopback whose membership
// events are collected, so that the time at which every peer reached a
// verdict about a node can be measured. Nodes are named n0, n1, ... and
// names are never reused. All methods are safe for concurrent use.
type Swarm struct {
	conf     SwarmConfig
	logger   *slog.Logger
	progress *slog.Logger

	mu     sync.Mutex
	rng    *rand.Rand
	nextID int
	nodes  map[string]*swarmNode // live nodes
	// alive[observer][subject] is when observer last saw subject become
	// alive; absent while observer considers it failed or unknown.
	alive map[string]map[string]time.Time
	// failed[subject][observer] is when observer declared subject failed.
	failed map[string]map[string]time.Time
	killed map[string]time.Time
	fps    []FalsePositive
	phase  string
	closed bool
	// gone sums the counters of nodes already stopped.
	gone cluster.Stats

	wg sync.WaitGroup
}

type swarmNode struct {
	name string
	ip   string
	c    *cluster.Cluster
	ft   *FaultyTransport
	// kinds splits what the node sends by kind; nil unless SplitKinds.
	kinds *KindCounter
}

// NewSwarm returns an empty swarm.
func NewSwarm(conf SwarmConfig) (*Swarm, error) {
	if conf.ClusterName == "" || len(conf.IPs) == 0 {
		return nil, errors.New("new swarm: cluster name and at least one IP are required")
	}
	if err := conf.Profile.Validate(); err != nil {
		return nil, fmt.Errorf("new swarm: %w", err)
	}
	conf.Profile = conf.Dilation.Profile(conf.Profile)
	logger, progress := conf.Logger, conf.Progress
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if progress == nil {
		progress = slog.New(slog.DiscardHandler)
	}
	return &Swarm{
		conf:     conf,
		logger:   logger.With("swarm", conf.ClusterName),
		progress: progress.With("swarm", conf.ClusterName),
		rng:      rand.New(rand.NewPCG(conf.Seed, 1)),
		nodes:    make(map[string]*swarmNode),
		alive:    make(map[string]map[string]time.Time),
		failed:   make(map[string]map[string]time.Time),
		killed:   make(map[string]time.Time),
	}, nil
}

// Add starts a node and, unless it is the first, joins it to a random live
// node. It returns the node's name and when the join began.
func (s *Swarm) Add() (string, time.Time, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return "", time.Time{}, errors.New("add node: swarm shut down")
	}
	id := s.nextID
	s.nextID++
	name := fmt.Sprintf("n%d", id)
	ip := s.conf.IPs[id%len(s.conf.IPs)]
	var seed string
	if live := s.liveLocked(); len(live) > 0 {
		n := s.nodes[live[s.rng.IntN(len(live))]]
		h, p := n.c.LocalAddr()
		seed = fmt.Sprintf("%s:%d", h, p)
	}
	s.alive[name] = make(map[string]time.Time)
	s.mu.Unlock()

	nt, err := cluster.NewNetTransport(ip, 0, nil)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("add node %s: listen on %s: %w", name, ip, err)
	}
	ft := NewFaultyTransport(nt, s.conf.Loss, s.conf.Seed^uint64(id+1)*0x9e3779b97f4a7c15)
	var kinds *KindCounter
	if s.conf.SplitKinds {
		if kinds, err = NewKindCounter(s.conf.Key, name); err != nil {
			ft.Shutdown()
			return "", time.Time{}, fmt.Errorf("add node %s: %w", name, err)
		}
		ft.CountKinds(kinds)
	}
	c, err := cluster.Create(&cluster.Config{
		NodeName:    name,
		ClusterName: s.conf.ClusterName,
		BindAddr:    ip,
		HTTPPort:    8080,
		Profile:     s.conf.Profile,
		SecretKey:   s.conf.Key,
		Transport:   ft,
		Logger:      s.logger,
		Monitoring:  sampleMonitoring(s.rngFloat()),
	})
	if err != nil {
		ft.Shutdown()
		return "", time.Time{}, fmt.Errorf("add node %s: %w", name, err)
	}
	events, _ := c.Subscribe(eventBuffer)
	s.wg.Add(1)
	go s.collect(name, events)
	if err := c.Start(); err != nil {
		c.Shutdown()
		ft.Shutdown()
		return "", time.Time{}, fmt.Errorf("add node %s: %w", name, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Shutdown()
		return "", time.Time{}, errors.New("add node: swarm shut down")
	}
	s.nodes[name] = &swarmNode{name: name, ip: ip, c: c, ft: ft, kinds: kinds}
	s.mu.Unlock()

	// A saturated machine can leave a seed's TCP accept queue unserved
	// past TCPTimeout: try up to two other seeds before giving up.
	began := time.Now()
	for attempt := 0; seed != ""; attempt++ {
		_, err := c.Join([]string{seed})
		if err == nil {
			break
		}
		if attempt == 2 {
			return name, began, fmt.Errorf("add node %s: %w", name, err)
		}
		s.progress.Warn("join failed, trying another seed", "node", name, "seed", seed, "err", err)
		other, ok := s.RandomLive(name)
		if !ok {
			return name, began, fmt.Errorf("add node %s: %w", name, err)
		}
		s.mu.Lock()
		n := s.nodes[other]
		s.mu.Unlock()
		if n == nil {
			return name, began, fmt.Errorf("add node %s: %w", name, err)
		}
		h, p := n.c.LocalAddr()
		seed = fmt.Sprintf("%s:%d", h, p)
	}
	return name, began, nil
}

func (s *Swarm) rngFloat() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rng.Float64()
}

// collect records one node's membership events until its channel closes.
func (s *Swarm) collect(observer string, events <-chan cluster.Event) {
	defer s.wg.Done()
	for ev := range events {
		subject := ev.Member.Name
		if ev.Member.Self {
			continue
		}
		switch ev.Type {
		case cluster.EventJoin:
			s.mu.Lock()
			if v := s.alive[observer]; v != nil {
				v[subject] = ev.Time
			}
			s.mu.Unlock()
		case cluster.EventFail, cluster.EventLeave:
			s.mu.Lock()
			delete(s.alive[observer], subject)
			if ev.Type == cluster.EventFail {
				f := s.failed[subject]
				if f == nil {
					f = make(map[string]time.Time)
					s.failed[subject] = f
				}
				if _, ok := f[observer]; !ok {
					f[observer] = ev.Time
				}
				if _, ok := s.killed[subject]; !ok {
					s.fps = append(s.fps, FalsePositive{Subject: subject, Observer: observer, Time: ev.Time, Cause: ev.Cause, By: ev.By, Phase: s.phase})
				}
			}
			s.mu.Unlock()
		}
	}
}

// Grow adds nodes until the swarm has n live nodes, starting one every
// every (as fast as joins complete when zero), then waits until every node
// sees every other alive. It returns how long that took. Starting the nodes
// may take timeout beyond the schedule, and converging timeout again: a
// machine too small for n nodes fails the row instead of running on.
func (s *Swarm) Grow(ctx context.Context, n int, every, timeout time.Duration) (time.Duration, error) {
	k := s.conf.Dilation
	every, timeout = k.Real(every), k.Real(timeout)
	start := time.Now()
	deadline := start.Add(time.Duration(n)*every + timeout)
	for i := 0; s.Len() < n; i++ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("grow to %d nodes: only %d started after %v, each join slower than the one before (load average %s): this machine cannot host %d of these nodes in one process; measure fewer, or use the procs rows on a larger machine",
				n, s.Len(), time.Since(start).Round(time.Second), LoadAvg(), n)
		}
		if wait := time.Until(start.Add(time.Duration(i) * every)); wait > 0 {
			if err := sleepCtx(ctx, wait); err != nil {
				return 0, err
			}
		}
		if _, _, err := s.Add(); err != nil {
			return 0, err
		}
	}
	lastLog := time.Now()
	err := poll(ctx, timeout, k.Real(50*time.Millisecond), func() error {
		err := s.converged()
		if err != nil && time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			s.progress.Info("still forming", "after", time.Since(start).Round(time.Millisecond), "waiting_for", err,
				"false_positives", s.falsePositivesByCause(), "handoff_drops", s.HandoffDrops())
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("grow to %d nodes: %w", n, err)
	}
	return k.Emulated(time.Since(start)), nil
}

// converged reports which nodes do not yet see every other live node alive.
// It is polled every 50 ms while s.mu also serves the collectors, so it
// first counts (O(N)) and compares names (O(N²)) only once the counts
// say everyone may be there.
func (s *Swarm) converged() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	short := 0
	for obs := range s.nodes {
		if len(s.alive[obs]) < len(s.nodes)-1 {
			short++
		}
	}
	if short > 0 {
		return fmt.Errorf("%d of %d nodes do not see everyone alive yet", short, len(s.nodes))
	}
	missing, worst, worstName, example := 0, 0, "", ""
	for obs := range s.nodes {
		lack, absent := 0, ""
		v := s.alive[obs]
		for sub := range s.nodes {
			if _, ok := v[sub]; !ok && sub != obs {
				lack++
				absent = sub
			}
		}
		if lack > 0 {
			missing++
			if lack > worst {
				worst, worstName, example = lack, obs, absent
			}
		}
	}
	if missing > 0 {
		m, _ := s.nodes[worstName].c.Member(example)
		return fmt.Errorf("%d of %d nodes do not see everyone alive yet (%s misses %d, e.g. %s, which it has as %q)",
			missing, len(s.nodes), worstName, worst, example, m.Status)
	}
	return nil
}

// Len returns the number of live nodes.
func (s *Swarm) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.nodes)
}

// Live returns the names of the live nodes, sorted.
func (s *Swarm) Live() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.liveLocked()
}

func (s *Swarm) liveLocked() []string {
	names := make([]string, 0, len(s.nodes))
	for n := range s.nodes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// RandomLive returns a random live node other than those in except.
func (s *Swarm) RandomLive(except ...string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cands []string
	for _, n := range s.liveLocked() {
		skip := false
		for _, e := range except {
			skip = skip || n == e
		}
		if !skip {
			cands = append(cands, n)
		}
	}
	if len(cands) == 0 {
		return "", false
	}
	return cands[s.rng.IntN(len(cands))], true
}

// Kill hard-stops a node (Shutdown without Leave) and returns the instant
// just before it stopped and the nodes that must now declare it failed.
func (s *Swarm) Kill(name string) (time.Time, []string, error) {
	s.mu.Lock()
	n := s.nodes[name]
	if n == nil {
		s.mu.Unlock()
		return time.Time{}, nil, fmt.Errorf("kill %s: no such live node", name)
	}
	delete(s.nodes, name)
	delete(s.alive, name)
	at := time.Now()
	s.killed[name] = at
	survivors := s.liveLocked()
	s.mu.Unlock()
	n.c.Shutdown()
	s.mu.Lock()
	st := n.c.Stats()
	s.gone.DroppedEvents += st.DroppedEvents
	s.gone.Overrules += st.Overrules
	s.gone.HandoffDrops += st.HandoffDrops
	s.mu.Unlock()
	return at, survivors, nil
}

// WaitFailed waits until every observer has declared subject failed and
// returns the latest verdict's delay after since.
func (s *Swarm) WaitFailed(ctx context.Context, subject string, observers []string, since time.Time, timeout time.Duration) (time.Duration, error) {
	k := s.conf.Dilation
	var last time.Time
	err := poll(ctx, k.Real(timeout), k.Real(20*time.Millisecond), func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		f := s.failed[subject]
		waiting := 0
		last = time.Time{}
		for _, o := range observers {
			if _, live := s.nodes[o]; !live {
				continue
			}
			t, ok := f[o]
			if !ok {
				waiting++
				continue
			}
			if t.After(last) {
				last = t
			}
		}
		if waiting > 0 {
			return fmt.Errorf("%d of %d peers have not declared %s failed", waiting, len(observers), subject)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("wait for %s to fail everywhere: %w", subject, err)
	}
	return k.Emulated(last.Sub(since)), nil
}

// WaitJoined waits until every other live node sees subject alive and
// returns the latest sighting's delay after since.
func (s *Swarm) WaitJoined(ctx context.Context, subject string, since time.Time, timeout time.Duration) (time.Duration, error) {
	k := s.conf.Dilation
	var last time.Time
	err := poll(ctx, k.Real(timeout), k.Real(20*time.Millisecond), func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		waiting := 0
		last = time.Time{}
		for o := range s.nodes {
			if o == subject {
				continue
			}
			t, ok := s.alive[o][subject]
			if !ok {
				waiting++
				continue
			}
			if t.After(last) {
				last = t
			}
		}
		if waiting > 0 {
			return fmt.Errorf("%d of %d peers do not see %s alive", waiting, len(s.nodes)-1, subject)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("wait for %s to be seen by all: %w", subject, err)
	}
	return k.Emulated(last.Sub(since)), nil
}

// Freeze starves the named node's transport for d (see FaultyTransport).
func (s *Swarm) Freeze(name string, d time.Duration) error {
	s.mu.Lock()
	n := s.nodes[name]
	s.mu.Unlock()
	if n == nil {
		return fmt.Errorf("freeze %s: no such live node", name)
	}
	n.ft.Freeze(s.conf.Dilation.Real(d))
	return nil
}

// Sleep waits for emulated duration d or until ctx is done.
func (s *Swarm) Sleep(ctx context.Context, d time.Duration) error {
	return sleepCtx(ctx, s.conf.Dilation.Real(d))
}

// SetPhase names what the run does from now on; false positives are
// labelled with it.
func (s *Swarm) SetPhase(phase string) {
	s.mu.Lock()
	s.phase = phase
	s.mu.Unlock()
}

// falsePositivesByCause counts the false positives so far by cause, for
// the progress log.
func (s *Swarm) falsePositivesByCause() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := map[cluster.Cause]int{}
	for _, f := range s.fps {
		n[f.Cause]++
	}
	var parts []string
	for _, c := range slices.Sorted(maps.Keys(n)) {
		parts = append(parts, fmt.Sprintf("%s:%d", c, n[c]))
	}
	return strings.Join(parts, " ")
}

// Phase returns what the run does now (SetPhase).
func (s *Swarm) Phase() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.phase
}

// FalsePositives returns the fail verdicts about nodes that were not killed.
func (s *Swarm) FalsePositives() []FalsePositive {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]FalsePositive(nil), s.fps...)
}

// DroppedEvents returns how many membership events the nodes dropped
// because the swarm's collectors fell behind. Anything but 0 means a
// verdict may be missing from the measurements.
func (s *Swarm) DroppedEvents() uint64 {
	return s.sum(func(st cluster.Stats) uint64 { return st.DroppedEvents })
}

// Overrules returns how many of memberlist's failure verdicts the nodes
// set aside because the accused node's heartbeat had outlived the
// suspicion (see agent/cluster/verdict.go): wrong verdicts that were not
// reported.
func (s *Swarm) Overrules() uint64 {
	return s.sum(func(st cluster.Stats) uint64 { return st.Overrules })
}

// HandoffDrops returns how many received messages memberlist dropped on
// the nodes, its handler queue full (cluster.Stats.HandoffDrops).
func (s *Swarm) HandoffDrops() uint64 {
	return s.sum(func(st cluster.Stats) uint64 { return st.HandoffDrops })
}

// sum adds up one counter over every node, stopped ones included.
func (s *Swarm) sum(counter func(cluster.Stats) uint64) uint64 {
	s.mu.Lock()
	total := counter(s.gone)
	nodes := make([]*swarmNode, 0, len(s.nodes))
	for _, n := range s.nodes {
		nodes = append(nodes, n)
	}
	s.mu.Unlock()
	for _, n := range nodes {
		total += counter(n.c.Stats())
	}
	return total
}

// checkEvents turns dropped events into an error (see DroppedEvents).
func (s *Swarm) checkEvents() error {
	if d := s.DroppedEvents(); d > 0 {
		return fmt.Errorf("the harness dropped %d membership events (collectors fell behind), so verdicts may be missing: the machine is too loaded for this size", d)
	}
	return nil
}

// BytesSent returns the gossip bytes the live nodes sent so far, as counted
// by each node's CountingTransport, and how many nodes were summed.
func (s *Swarm) BytesSent() (uint64, int) {
	s.mu.Lock()
	nodes := make([]*swarmNode, 0, len(s.nodes))
	for _, n := range s.nodes {
		nodes = append(nodes, n)
	}
	s.mu.Unlock()
	var total uint64
	for _, n := range nodes {
		total += n.c.Stats().BytesSent
	}
	return total, len(nodes)
}

// Traffic is what the live nodes sent so far: bytes as their transports
// counted them, the same split by kind (empty unless SplitKinds), and the
// counters of cluster.Stats that say why a node sent what it did.
type Traffic struct {
	Nodes    int
	Bytes    uint64
	Kinds    KindCounts
	Counters map[string]uint64
	// Degraded is how many nodes scored themselves late (detector.Health)
	// when the traffic was taken: a gauge, not a count.
	Degraded int
}

// Sub returns t minus earlier.
func (t Traffic) Sub(earlier Traffic) Traffic {
	d := Traffic{Nodes: t.Nodes, Degraded: t.Degraded, Bytes: t.Bytes - earlier.Bytes, Kinds: t.Kinds.Sub(earlier.Kinds), Counters: map[string]uint64{}}
	for k, v := range t.Counters {
		d.Counters[k] = v - earlier.Counters[k]
	}
	return d
}

// Traffic sums the live nodes' traffic so far. Nodes stopped between two
// calls take their counts with them: take differences over windows
// without kills or joins.
func (s *Swarm) Traffic() Traffic {
	s.mu.Lock()
	nodes := make([]*swarmNode, 0, len(s.nodes))
	for _, n := range s.nodes {
		nodes = append(nodes, n)
	}
	s.mu.Unlock()
	t := Traffic{Nodes: len(nodes), Counters: map[string]uint64{}}
	for _, n := range nodes {
		st := n.c.Stats()
		t.Bytes += st.BytesSent
		for k, v := range map[string]uint64{
			"messages sent":               st.MessagesSent,
			"introductions":               st.Introductions,
			"readvertisements":            st.Readvertisements,
			"overrules":                   st.Overrules,
			"silence verdicts":            st.SilenceVerdicts,
			"watcher verdicts":            st.WatcherVerdicts,
			"refutations":                 st.Refutations,
			"reaped":                      st.Reaped,
			"malformed":                   st.MalformedMessages,
			"dropped events":              st.DroppedEvents,
			"health: suppressed verdicts": st.Health.Suppressed,
		} {
			t.Counters[k] += v
		}
		for cause, v := range st.Health.LateRounds {
			t.Counters["health: late rounds, "+cause] += v
		}
		for reason, v := range st.Rejected {
			t.Counters["rejected: "+reason] += v
		}
		if st.Health.Score > 0 {
			t.Degraded++
		}
		if n.kinds != nil {
			t.Kinds.add(n.kinds.Counts(), 1)
		}
	}
	return t
}

// RunUpdates changes every live node's monitoring sample once per interval,
// spreading the updates evenly, until ctx is done. It returns when ctx is.
func (s *Swarm) RunUpdates(ctx context.Context, interval time.Duration) {
	live := s.Live()
	if len(live) == 0 {
		return
	}
	t := time.NewTicker(s.conf.Dilation.Real(interval) / time.Duration(len(live)))
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		n := s.nodes[live[i%len(live)]]
		f := s.rng.Float64()
		s.mu.Unlock()
		if n != nil {
			n.c.UpdateSelf(func(r *cluster.Record) { r.Monitoring = sampleMonitoring(f) })
		}
	}
}

// Shutdown stops every node and waits for the event collectors. It is safe
// to call more than once.
func (s *Swarm) Shutdown() {
	s.mu.Lock()
	s.closed = true
	nodes := make([]*swarmNode, 0, len(s.nodes))
	for _, n := range s.nodes {
		nodes = append(nodes, n)
	}
	s.nodes = make(map[string]*swarmNode)
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.c.Shutdown()
		}()
	}
	wg.Wait()
	s.wg.Wait()
}

// sampleMonitoring is a plausible Raspberry Pi 4 sample; f in [0,1) varies
// it so that every update is a real change of the record.
func sampleMonitoring(f float64) cluster.Monitoring {
	temp := 45 + 20*f
	return cluster.Monitoring{
		CPUs:            4,
		CPUPercent:      100 * f,
		MemTotal:        4 << 30,
		MemUsed:         uint64(float64(4<<30) * (0.2 + 0.5*f)),
		Load1:           4 * f,
		Load5:           3 * f,
		Load15:          2 * f,
		TempC:           &temp,
		DiskUsedPercent: 30 + 10*f,
		UptimeS:         uint64(86400 * (1 + f)),
		SampledAt:       time.Now(),
	}
}

// poll calls cond every interval until it returns nil, timeout passes (the
// last error is returned) or ctx is done.
func poll(ctx context.Context, timeout, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

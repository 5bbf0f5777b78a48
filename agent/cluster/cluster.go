// Package cluster wraps hashicorp/memberlist: SWIM membership, the gossiped
// node records with their versions and anti-entropy, membership events and
// timing profiles. It runs the failure detector of agent/detector: it
// sends the heartbeats, reports and verdicts the detector plans, hands it
// what arrives and what memberlist reports, and publishes its verdicts. It
// knows nothing about HTTP, flags or files; the agent wires those around it.
//
// Data flow. memberlist's node metadata carries only a static digest
// (protocol version, cluster name, HTTP port). Each node owns one Record;
// UpdateSelf bumps its Version and queues it in a TransmitLimitedQueue,
// where a newer record of the same node replaces the older one. Receivers
// apply a record only if it is newer than theirs and matches the address
// memberlist knows for that node, then relay it, so updates spread
// epidemically; push-pull exchanges all records for anti-entropy. Versions
// start from the wall clock (see Start), so a restarted node outranks its
// previous run without having to learn its old version first.
package cluster

import (
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/rpi-cluster/rpi-cluster/agent/detector"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
)

// EventType is the kind of an Event.
type EventType string

// Event types.
const (
	EventJoin   EventType = "join"   // a node became alive (new, or back after failing or leaving)
	EventLeave  EventType = "leave"  // a node left gracefully
	EventFail   EventType = "fail"   // a node was declared failed by SWIM
	EventUpdate EventType = "update" // a node's record changed
	// EventDesired: a service's desired replica count changed (set here or
	// learnt from a peer). Event.Desired holds the new entry; Member is
	// empty.
	EventDesired EventType = "desired"
	// EventConflict: a name was offered with another key than the one
	// pinned for it (see trust.go). Event.Conflict holds it; Member is
	// empty.
	EventConflict EventType = "conflict"
)

// Event is a membership or record change, as delivered to subscribers.
type Event struct {
	Type   EventType
	Member Member
	Time   time.Time
	// Desired is the new entry of an EventDesired.
	Desired Desired
	// Conflict is the key conflict of an EventConflict.
	Conflict *KeyConflict
	// Cause says who reached an EventFail's verdict; By names the peer
	// whose report decided it (the witness of a silence verdict, the
	// watcher of a watcher's verdict), empty for the others.
	Cause Cause
	By    string
}

// Cause is why a node was declared failed.
type Cause string

// Causes of an EventFail (see agent/detector).
const (
	// CauseMemberlist: memberlist's suspicion of the node ran out.
	CauseMemberlist Cause = "memberlist"
	// CauseUpheld: memberlist's verdict, set aside because the node had
	// sent a heartbeat since it was suspected, upheld when the node did not
	// re-advertise itself.
	CauseUpheld Cause = "upheld"
	// CauseSilence: this node found the node's heartbeats silent, and a
	// witness (By) did too.
	CauseSilence Cause = "silence"
	// CauseWatcher: one of the node's watchers (By) found it silent and
	// told every peer.
	CauseWatcher Cause = "watcher"
	// CausePeer: in a cluster small enough for silence verdicts, another
	// node (By) failed it on silence and told every peer; this node had not
	// reached its own verdict (it was degraded, or had no witness yet).
	CausePeer Cause = "peer"
	// CauseMove: the node announced a move and never showed up at its new
	// address.
	CauseMove Cause = "move"
)

// Conflict is a name claimed by two nodes at different addresses.
type Conflict struct {
	Name string
	// ExistingAddr is the "ip:port" memberlist kept for the name.
	ExistingAddr string
	// OtherAddr is the "ip:port" of the node that was refused.
	OtherAddr string
	// Time is when the conflict was last seen.
	Time time.Time
}

// maxConflicts bounds the conflict list; the oldest entries go first.
const maxConflicts = 64

// ErrNotStarted is returned by operations that need Start first.
var ErrNotStarted = errors.New("cluster not started")

// ErrShutdown is returned by operations after Shutdown.
var ErrShutdown = errors.New("cluster shut down")

// Cluster is this node's view of the cluster. Create it, Subscribe if you
// need events, then Start and Join. All methods are safe for concurrent use.
type Cluster struct {
	conf   Config
	logger *slog.Logger
	meta   []byte
	// key signs what this node says about itself; pub is its public half.
	// pins ties peers' names to their keys (see trust.go).
	key  *identity.Key
	pub  []byte
	pins *identity.Pins

	// rejected counts gossip refused by validation or signature checks,
	// by reason; warned remembers which (sender, reason) pairs were
	// logged at Warn (see validate.go).
	rejected [numRejectReasons]atomic.Uint64
	warnMu   sync.Mutex
	warned   map[warnKey]struct{}

	broadcasts *memberlist.TransmitLimitedQueue
	// numAlive feeds the queue's retransmit limit without calling into
	// memberlist (which may hold its node lock when asking).
	numAlive atomic.Int64
	// malformed counts dropped messages.
	malformed atomic.Uint64
	// introductions counts syncs with nodes heard from but not listed.
	introductions atomic.Uint64
	// droppedEvents counts events subscribers were too slow to take.
	droppedEvents atomic.Uint64
	// readvertisements counts re-advertisements peers asked for.
	readvertisements atomic.Uint64
	// overrules counts failure verdicts set aside by heartbeats (see
	// agent/detector).
	overrules atomic.Uint64
	// silenceVerdicts counts peers failed on heartbeat silence (see
	// agent/detector).
	silenceVerdicts atomic.Uint64
	// watcherVerdicts counts peers failed on a watcher's verdict (see
	// agent/detector).
	watcherVerdicts atomic.Uint64
	// refutations counts verdicts about this node it refuted.
	refutations atomic.Uint64
	// handoffDrops counts received messages memberlist dropped, its
	// handler queue full (see memberlistLog).
	handoffDrops atomic.Uint64
	// reaped counts members removed from the view, reaped or force-left
	// (see reap.go).
	reaped atomic.Uint64
	// det judges the peers: their liveness state, phi, silence verdicts,
	// overrules, and this node's own health (agent/detector).
	det *detector.Detector
	// hbSeq numbers this node's heartbeats; hbAddr is the address they
	// carry. Both are set before the heartbeat loop starts.
	hbSeq  atomic.Uint64
	hbAddr atomic.Pointer[string]

	// lifeMu serialises Start, Readdress, Leave and Shutdown.
	lifeMu sync.Mutex
	// ml is the running memberlist; Readdress replaces it. mlGen
	// numbers the memberlists made, to tell the running one's events
	// from a replaced one's (see eventDelegate).
	ml         atomic.Pointer[memberlist.Memberlist]
	mlGen      atomic.Uint64
	transport  *CountingTransport
	started    bool
	stopped    bool
	shutdownCh chan struct{}
	wg         sync.WaitGroup

	// mu guards the member table below. Never call memberlist with it held.
	mu   sync.Mutex
	self Record
	// selfSigned is self as signed and sent: signature ‖ JSON.
	selfSigned []byte
	leaving    bool
	peers      map[string]*peer
	unknown    int // peers with status "" (records seen before memberlist knew the node)
	// gen counts changes of a peer's status or address (recountLocked,
	// setAddrLocked): heartbeat rounds rebuild their view of the peers
	// only when it moved.
	gen       uint64
	conflicts []Conflict
	// keyConflicts are names offered with another key than their pin.
	keyConflicts []KeyConflict
	// introduced holds when each node heard from but never reported by
	// memberlist was last queued for introduction (see introduce.go).
	introduced  map[string]time.Time
	introduceCh chan heartbeat
	// acks is set while this node leaves (see leave.go); ackCh queues the
	// acknowledgements this node owes to peers that are leaving.
	acks  *leaveAcks
	ackCh chan *memberlist.Node
	// readvertiseCh holds a peer's request to re-advertise this node.
	readvertiseCh chan struct{}
	// refutedAt is when this node last answered a verdict about itself.
	refutedAt time.Time

	// desiredMu guards the desired table and its clock. It is never held
	// together with mu.
	desiredMu sync.Mutex
	desired   map[string]Desired
	// desiredSealed holds each entry as its writer signed it.
	desiredSealed map[string][]byte
	// desiredClock is the highest desired version seen or written.
	desiredClock uint64

	subMu      sync.Mutex
	subs       map[*subscription]struct{}
	subsClosed bool
}

// peer is everything this node knows about another node.
type peer struct {
	// live is the node's liveness as the detector judges it: its state
	// (alive, failed or left, and how this node came to hold it so), phi
	// and heartbeats (agent/detector).
	live detector.Peer
	// heldForceLeave is a peer's signed force-leave of this node, which
	// arrived while it was failed here on silence and memberlist had not
	// confirmed yet: applied when memberlist does, dropped if the node
	// comes back (reap.go).
	heldForceLeave []byte
	addr           string
	port           int
	httpPort       int
	// seenAt is when a reap sweep first saw the record of a node
	// memberlist has not reported (state Unknown).
	seenAt time.Time
	// rec is the node's latest applied record; nil until one arrives.
	// recSigned is rec as its owner signed it (signature ‖ JSON), kept
	// to relay, to offer in push-pull and to serve; never modified.
	rec       *Record
	recSigned []byte
	// pending is a newer record that arrived while the node was not alive
	// (or not yet known); it is applied when memberlist reports it alive.
	pending       *Record
	pendingSigned []byte
	// leaveSigned is the node's signed leave intent, offered in push-pull
	// while it is left.
	leaveSigned []byte
	// hbKey caches detector.HeartbeatKey(self, name), ringKey its place
	// on the watch ring; 0 until first needed.
	hbKey, ringKey uint64
	// movingTo is the "ip:port" the node announced it is moving to, at
	// movedAt (see move.go).
	movingTo string
	movedAt  time.Time
	// staleLeave is set when the leave of the node's old address reached
	// memberlist after the node had moved; the node is asked to
	// re-advertise itself.
	staleLeave bool
}

// state is the peer's liveness state.
func (p *peer) state() detector.State { return p.live.State() }

// status is the peer's status as Member shows it (suspect aside).
func (p *peer) status() string {
	switch s := p.live.State(); {
	case s.IsAlive():
		return StatusAlive
	case s.IsFailed():
		return StatusFailed
	case s == detector.Left:
		return StatusLeft
	}
	return ""
}

// Create validates conf and builds a Cluster. Nothing listens until Start.
func Create(conf *Config) (*Cluster, error) {
	if conf == nil {
		return nil, errors.New("create cluster: nil config")
	}
	c := *conf
	if c.Profile.Name == "" {
		c.Profile, _ = ProfileByName(DefaultProfileName)
	}
	if c.BindAddr == "" {
		c.BindAddr = "0.0.0.0"
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("create cluster: %w", err)
	}
	c.SecretKey = slices.Clone(c.SecretKey)
	logger := c.Logger
	if logger == nil {
		logger = discardLogger()
	}
	logger = logger.With("node", c.NodeName)
	if c.Key == nil {
		k, err := identity.Generate()
		if err != nil {
			return nil, fmt.Errorf("create cluster: %w", err)
		}
		c.Key = k
	}
	if c.Pins == nil {
		c.Pins, _ = identity.OpenPins("") // in memory: cannot fail
	}

	m, err := encodeMeta(meta{Proto: protoVersion, Cluster: c.ClusterName, HTTPPort: c.HTTPPort})
	if err != nil {
		return nil, fmt.Errorf("create cluster: %w", err)
	}
	cl := &Cluster{
		conf:          c,
		logger:        logger,
		meta:          m,
		key:           c.Key,
		pub:           c.Key.Public(),
		pins:          c.Pins,
		warned:        make(map[warnKey]struct{}),
		desiredSealed: make(map[string][]byte),
		shutdownCh:    make(chan struct{}),
		peers:         make(map[string]*peer),
		subs:          make(map[*subscription]struct{}),
		desired:       make(map[string]Desired),
		introduced:    make(map[string]time.Time),
		introduceCh:   make(chan heartbeat, introduceQueue),
		ackCh:         make(chan *memberlist.Node, ackQueue),
		readvertiseCh: make(chan struct{}, 1),
		det:           detector.New(c.Profile.Timing()),
		self: Record{
			Name:         c.NodeName,
			HTTPPort:     c.HTTPPort,
			Services:     slices.Clone(c.Services),
			SSHHostKeys:  slices.Clone(c.SSHHostKeys),
			AgentVersion: c.AgentVersion,
			Arch:         c.Arch,
			Model:        c.Model,
			Monitoring:   c.Monitoring,
			IdentityKey:  c.Key.Public(),
		},
	}
	cl.self = cl.self.Clone()
	cl.numAlive.Store(1)
	cl.broadcasts = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return int(cl.numAlive.Load()) },
		RetransmitMult: c.Profile.RetransmitMult,
	}
	return cl, nil
}

// Start opens the gossip listeners, creates the memberlist and begins
// sending heartbeats. It does not join anyone: call Join.
//
// The record version starts at the current Unix time in nanoseconds. A
// restarted node therefore outranks the records its previous run left in
// the cluster without first learning their version from peers (which would
// need a push-pull to finish before the first broadcast). Pis have no RTC
// and can boot with a clock behind the last run; for that case a node that
// is sent its own record with a version at least its own bumps past it
// (see handleRecord), so the newest record still wins.
func (c *Cluster) Start() error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.stopped {
		return fmt.Errorf("start cluster: %w", ErrShutdown)
	}
	if c.started {
		return errors.New("start cluster: already started")
	}
	inner := c.conf.Transport
	if inner == nil {
		nt, err := NewNetTransport(c.conf.BindAddr, c.conf.BindPort, c.logger)
		if err != nil {
			return fmt.Errorf("start cluster: listen on %s: %w", net.JoinHostPort(c.conf.BindAddr, strconv.Itoa(c.conf.BindPort)), err)
		}
		inner = nt
	}
	c.transport = NewCountingTransport(inner)

	ml, err := memberlist.Create(c.memberlistConfig(c.conf.AdvertiseAddr))
	if err != nil {
		c.transport.Shutdown()
		return fmt.Errorf("start cluster: create memberlist: %w", err)
	}
	c.ml.Store(ml)
	c.started = true
	rec, signed := c.adoptLocalAddress(ml)
	c.queueRecord(rec.Name, signed)

	c.wg.Add(4)
	hbAddr := net.JoinHostPort(rec.Addr, strconv.Itoa(rec.GossipPort))
	c.hbAddr.Store(&hbAddr)
	c.hbSeq.Store(nowVersion())
	go c.heartbeatLoop()
	go c.introduceLoop()
	go c.replyLoop()
	go c.reapLoop()
	c.logger.Info("cluster started", "addr", net.JoinHostPort(rec.Addr, strconv.Itoa(rec.GossipPort)),
		"cluster", c.conf.ClusterName, "profile", c.conf.Profile.Name, "encrypted", len(c.conf.SecretKey) > 0)
	return nil
}

// memberlistConfig is the memberlist configuration of this node, over
// c.transport, advertising advertise (empty: what the transport finds).
// The transport is handed over as a keptTransport: a memberlist shut
// down by Readdress must leave it open for the next one.
func (c *Cluster) memberlistConfig(advertise string) *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	p := c.conf.Profile
	mc.Name = c.conf.NodeName
	mc.Transport = keptTransport{c.transport}
	mc.BindAddr = c.conf.BindAddr
	mc.BindPort = c.conf.BindPort
	mc.AdvertiseAddr = advertise
	mc.AdvertisePort = c.conf.AdvertisePort
	mc.ProbeInterval = p.ProbeInterval
	mc.ProbeTimeout = p.ProbeTimeout
	mc.GossipInterval = p.GossipInterval
	mc.PushPullInterval = p.PushPullInterval
	mc.TCPTimeout = p.TCPTimeout
	mc.SuspicionMult = p.SuspicionMult
	mc.SuspicionMaxTimeoutMult = p.SuspicionMaxTimeoutMult
	mc.RetransmitMult = p.RetransmitMult
	mc.IndirectChecks = p.IndirectChecks
	mc.GossipNodes = p.GossipNodes
	mc.GossipToTheDeadTime = p.GossipToTheDeadTime
	// The profile's reclaim time is kept by checkMoving, which can also
	// tell a signed move from a second node taking the name; memberlist
	// only defers to it (see reclaimAnyTime).
	mc.DeadNodeReclaimTime = reclaimAnyTime
	mc.EnableCompression = p.Compress
	mc.Delegate = &delegate{c}
	mc.Events = &eventDelegate{c: c, gen: c.mlGen.Add(1)}
	mc.Conflict = &conflictDelegate{c}
	mc.Alive = &aliveDelegate{c}
	mc.Merge = &mergeDelegate{c}
	mc.Logger = newMemberlistLogger(c.logger, &c.handoffDrops)
	if len(c.conf.SecretKey) > 0 {
		// The key was checked by Validate: NewKeyring cannot fail.
		kr, _ := memberlist.NewKeyring(nil, c.conf.SecretKey)
		mc.Keyring = kr
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	return mc
}

// nowVersion is the wall clock as a record version.
func nowVersion() uint64 { return uint64(time.Now().UnixNano()) }

// memberlistOrErr returns the running memberlist.
func (c *Cluster) memberlistOrErr(op string) (*memberlist.Memberlist, error) {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	switch {
	case c.stopped:
		return nil, fmt.Errorf("%s: %w", op, ErrShutdown)
	case !c.started:
		return nil, fmt.Errorf("%s: %w", op, ErrNotStarted)
	}
	return c.ml.Load(), nil
}

// Join contacts the given "host:port" addresses (port defaults to 7946) and
// merges state with each. It returns how many were reached; the error says
// which failed and why (unreachable, wrong key, other cluster).
func (c *Cluster) Join(addrs []string) (int, error) {
	ml, err := c.memberlistOrErr("join")
	if err != nil {
		return 0, err
	}
	n, err := ml.Join(addrs)
	if err != nil {
		return n, fmt.Errorf("join %v: %w", addrs, err)
	}
	return n, nil
}

// Shutdown stops gossip and every goroutine of the Cluster and closes all
// subscriber channels. Without a prior Leave, peers will declare this node
// failed. It is safe to call more than once.
func (c *Cluster) Shutdown() error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	close(c.shutdownCh)
	var err error
	if ml := c.ml.Load(); ml != nil {
		// The transport first, while memberlist still takes what it
		// hands on (memberlist's own order; it leaves our transport
		// open, see keptTransport), then memberlist's loops.
		if e := c.transport.Shutdown(); e != nil {
			err = fmt.Errorf("shutdown transport: %w", e)
		}
		if e := ml.Shutdown(); e != nil && err == nil {
			err = fmt.Errorf("shutdown memberlist: %w", e)
		}
	}
	c.wg.Wait()
	c.closeSubscribers()
	c.logger.Info("cluster shut down")
	return err
}

// LocalAddr returns the advertised gossip address; empty before Start.
func (c *Cluster) LocalAddr() (ip string, port int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.self.Addr, c.self.GossipPort
}

// Stats returns the gossip traffic counted by the transport.
func (c *Cluster) Stats() Stats {
	c.lifeMu.Lock()
	t := c.transport
	c.lifeMu.Unlock()
	var s Stats
	if t != nil {
		s = t.Stats()
	}
	s.MalformedMessages = c.malformed.Load()
	s.Introductions = c.introductions.Load()
	s.DroppedEvents = c.droppedEvents.Load()
	s.Readvertisements = c.readvertisements.Load()
	s.Overrules = c.overrules.Load()
	s.SilenceVerdicts = c.silenceVerdicts.Load()
	s.WatcherVerdicts = c.watcherVerdicts.Load()
	s.Refutations = c.refutations.Load()
	s.HandoffDrops = c.handoffDrops.Load()
	s.Reaped = c.reaped.Load()
	s.Rejected = c.rejectedStats()
	s.Health = c.det.Health().Stats()
	return s
}

// Conflicts returns the duplicate names seen, oldest first.
func (c *Cluster) Conflicts() []Conflict {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.conflicts)
}

// UpdateSelf changes this node's record: fn mutates a copy under the lock
// (Name, Addr, GossipPort and Version are restored afterwards: they are not
// fn's to change), the version is bumped and the record is broadcast at
// once. Subscribers get an EventUpdate for the local node.
func (c *Cluster) UpdateSelf(fn func(r *Record)) {
	c.mu.Lock()
	r := c.self.Clone()
	fn(&r)
	r.Name, r.Addr, r.GossipPort = c.self.Name, c.self.Addr, c.self.GossipPort
	r.IdentityKey = c.self.IdentityKey
	r.Version = max(c.self.Version+1, nowVersion())
	c.self = r.Clone()
	signed := c.signSelfLocked()
	ev := Event{Type: EventUpdate, Member: c.selfMemberLocked(), Time: time.Now()}
	c.mu.Unlock()

	c.lifeMu.Lock()
	running := c.started && !c.stopped
	c.lifeMu.Unlock()
	if running {
		c.queueRecord(r.Name, signed)
	}
	c.publish(ev)
}

// signSelfLocked signs the current self record, keeps it as selfSigned
// and returns it: one ed25519 signature per change of the record.
func (c *Cluster) signSelfLocked() []byte {
	signed, err := signRecord(c.key, c.self)
	if err != nil {
		// Too large: peers keep the previous version.
		c.logger.Error("cannot gossip record", "err", err)
		return nil
	}
	c.selfSigned = signed
	return signed
}

// queueRecord broadcasts a signed record of name, replacing any queued
// older record of that node.
func (c *Cluster) queueRecord(name string, signed []byte) {
	if signed == nil {
		return
	}
	msg := append([]byte{msgRecord}, signed...)
	if len(msg) > maxGossipRecord {
		c.logger.Warn("record too large for a gossip packet; it spreads by push-pull only",
			"size", len(msg), "limit", maxGossipRecord)
	}
	c.broadcasts.QueueBroadcast(&namedBroadcast{key: recordKey(name), msg: msg})
}

// maxGossipRecord is about what fits in one encrypted gossip packet
// (memberlist's 1400-byte UDP buffer less framing and AES-GCM overhead).
const maxGossipRecord = 1300

// heartbeatLoop runs the detector's heartbeat rounds until Shutdown: each
// round it measures this node's own lateness (detector.Round), judges the
// peers' silence (detector.Judge), and sends the heartbeats, silence
// reports and watch verdicts the round's detector.Plan picks. Each
// heartbeat announces its period, so the receiver's phi detector expects
// the right interval at any cluster size.
//
// Heartbeats go directly to each peer as one best-effort UDP packet rather
// than through the gossip queue. Each observer then measures the arrival
// times of one sender over one path, which is what phi models; gossiped
// heartbeats arrive after a random number of relay hops, whose jitter would
// blur phi. It is also cheaper: a gossiped heartbeat is retransmitted
// RetransmitMult*log10(N+1) times by every node that relays it, a direct
// one is sent once. With the lan profile a node sends 8 slow heartbeats a
// second and 10 watch heartbeats in a cluster of more than 12 nodes, the
// same at any N; in one of up to 12 nodes, 20 a second to each peer
// (docs/PERFORMANCE.md has the bytes).
//
// Sequence numbers start from the wall clock so that a node restarted
// before peers noticed it was gone is not ignored as a replay.
func (c *Cluster) heartbeatLoop() {
	defer c.wg.Done()
	timing := c.det.Timing()
	interval := detector.RoundInterval(timing, 0)
	timer := time.NewTimer(interval)
	defer timer.Stop()
	due := time.Now().Add(interval)
	var sent time.Duration // how long the last round took
	var plan detector.Plan
	var targets []detector.Target
	var gen uint64
	var accused []string
	var dropsSeen uint64 // handoffDrops as of the last round
	for {
		select {
		case <-c.shutdownCh:
			return
		case <-timer.C:
		}
		now := time.Now()
		drops := c.handoffDrops.Load()
		c.det.Round(detector.Round{
			Slip:    now.Sub(due),
			Send:    sent,
			Backlog: c.transport.TakeBacklog(),
			Dropped: drops - dropsSeen,
			Slack:   detector.RoundSlack(timing, interval),
		})
		dropsSeen = drops
		c.mu.Lock()
		if c.leaving {
			c.mu.Unlock()
			timer.Reset(interval)
			due, sent = time.Now().Add(interval), 0
			continue
		}
		// The peers a round works from change only with membership, so
		// they are copied again only then: in a large cluster a round every
		// 200 ms must not cost O(N). Peers failed here on silence still get
		// heartbeats (detector.State.GetsHeartbeats).
		if c.gen != gen || targets == nil {
			gen = c.gen
			targets = targets[:0]
			for name, p := range c.peers {
				if s := p.state(); s.GetsHeartbeats() {
					if p.hbKey == 0 {
						p.hbKey, p.ringKey = detector.HeartbeatKey(c.conf.NodeName, name), detector.RingKey(name)
					}
					targets = append(targets, detector.Target{Key: p.hbKey, Ring: p.ringKey, Name: name, Addr: p.addr, Port: p.port, Alive: s.IsAlive()})
				}
			}
		}
		var verdicts []detector.Verdict
		verdicts, accused = c.det.Judge(c.livePeersLocked(), c.fastLocked(), now, accused[:0])
		events := c.verdictEventsLocked(verdicts, now)
		var sends, reportTo []detector.Send
		sends, reportTo, interval = plan.Next(timing, c.conf.NodeName, targets, gen, accused, now)
		for i, hs := range sends {
			// Degraded: announce a longer period, which peers do not
			// judge on silence.
			sends[i].Period = c.det.AnnouncedPeriod(hs.Period)
			// A dropped watcher is told the slow period for a while even
			// if it has been removed from the view (force-leave) since.
			if p := c.peers[hs.Name]; p != nil {
				p.live.SetSentPeriod(sends[i].Period)
			}
		}
		c.mu.Unlock()
		c.reportSilence(verdicts, events)
		c.sendVerdicts(verdicts, targets)
		c.sendHeartbeats(sends)
		if len(accused) > 0 {
			report := encodeNames(msgSilent, c.conf.NodeName, accused)
			for _, hs := range reportTo {
				if err := c.ml.Load().SendBestEffort(memberNode(hs.Name, hs.Addr, hs.Port), report); err != nil {
					c.logger.Debug("silence report not sent", "peer", hs.Name, "err", err)
				}
			}
		}
		timer.Reset(interval)
		due = time.Now().Add(interval)
		sent = time.Since(now)
	}
}

// livePeersLocked yields every peer's detector state by name.
func (c *Cluster) livePeersLocked() iter.Seq2[string, *detector.Peer] {
	return func(yield func(string, *detector.Peer) bool) {
		for name, p := range c.peers {
			if !yield(name, &p.live) {
				return
			}
		}
	}
}

// fastLocked reports whether this node heartbeats its peers fast, at its
// own count of alive peers.
func (c *Cluster) fastLocked() bool {
	return detector.FastHeartbeats(c.det.Timing(), int(c.numAlive.Load())-1)
}

// memberNode addresses a peer for memberlist's direct sends.
func memberNode(name, addr string, port int) *memberlist.Node {
	return &memberlist.Node{Name: name, Addr: net.ParseIP(addr), Port: uint16(port)}
}

// adoptLocalAddress puts the address and port memberlist advertises into
// this node's record, with a new version, and returns the record and its
// signed bytes.
func (c *Cluster) adoptLocalAddress(ml *memberlist.Memberlist) (Record, []byte) {
	local := ml.LocalNode()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.self.Addr = local.Addr.String()
	c.self.GossipPort = int(local.Port)
	c.self.Version = max(c.self.Version+1, nowVersion())
	return c.self.Clone(), c.signSelfLocked()
}

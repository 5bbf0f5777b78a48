package cluster

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/detector"
	"github.com/rpi-cluster/rpi-cluster/agent/phi"
)

// Profile is a named set of gossip and failure-detection timings. Profiles
// replace scattered constants: the agent picks one by name (--profile), the
// benchmarks tune them, and every value says why it was chosen.
type Profile struct {
	// Name is how the profile is selected: lan, local, wan or test.
	Name string

	// ProbeInterval is how often memberlist probes one random peer; with
	// ProbeTimeout it bounds how fast SWIM notices a dead node.
	ProbeInterval time.Duration
	// ProbeTimeout is how long to wait for a direct ack before asking
	// IndirectChecks other nodes to probe; it should exceed the 99th
	// percentile round trip of the network.
	ProbeTimeout time.Duration
	// GossipInterval is how often queued broadcasts (records, SWIM
	// messages) are sent to GossipNodes random peers.
	GossipInterval time.Duration
	// PushPullInterval is how often a full state exchange (membership and
	// every node record) runs with one random peer: the anti-entropy that
	// repairs whatever gossip lost.
	PushPullInterval time.Duration
	// TCPTimeout bounds stream connections (push-pull, fallback probes).
	TCPTimeout time.Duration
	// SuspicionMult scales the suspicion timeout (by log10 of the cluster
	// size and ProbeInterval) before a suspect node is declared failed.
	SuspicionMult int
	// SuspicionMaxTimeoutMult caps the suspicion timeout while few peers
	// have confirmed the suspicion.
	SuspicionMaxTimeoutMult int
	// RetransmitMult scales how many times each broadcast is retransmitted
	// (RetransmitMult * log10(N+1)).
	RetransmitMult int
	// IndirectChecks is how many peers are asked to probe a node that did
	// not answer a direct probe.
	IndirectChecks int
	// GossipNodes is how many random peers receive each gossip round.
	GossipNodes int
	// GossipToTheDeadTime is how long dead nodes still receive gossip, so
	// a node that was wrongly declared dead learns it and refutes.
	GossipToTheDeadTime time.Duration
	// DeadNodeReclaimTime is how long after a node is declared failed its
	// name may be taken by a node at another address. It lets a Pi that
	// got a new DHCP lease rejoin under its own name; while the old node is
	// alive (or failed more recently than this) a second node with the same
	// name is rejected and reported as a conflict.
	DeadNodeReclaimTime time.Duration
	// HeartbeatInterval is how often each node sends a round of phi
	// heartbeats.
	HeartbeatInterval time.Duration
	// HeartbeatFanout bounds the heartbeats a node sends per round. A
	// cluster of up to HeartbeatFanout+1 nodes heartbeats all-to-all every
	// round; in a larger one each node walks its peers in turn, so every
	// peer still hears from every node, once per ceil((N-1)/fanout) rounds,
	// and the cost per node stays flat as the cluster grows.
	HeartbeatFanout int
	// FastHeartbeatPeers and FastHeartbeatInterval: while a node has at
	// most FastHeartbeatPeers alive peers, its heartbeat rounds go to all
	// of them every FastHeartbeatInterval instead. Zero turns this off.
	FastHeartbeatPeers    int
	FastHeartbeatInterval time.Duration
	// SilenceTimeout, when set, lets a node declare a peer failed itself,
	// ahead of memberlist, once the peer's fast heartbeats have been
	// silent this long and another peer finds it silent too (see
	// agent/detector). It needs fast heartbeats; zero leaves every verdict to
	// memberlist.
	SilenceTimeout time.Duration
	// WatchPeers, WatchInterval and WatchSilenceTimeout carry silence
	// verdicts past FastHeartbeatPeers (see agent/detector): each node
	// heartbeats the WatchPeers nodes that follow it on a ring of the
	// cluster every WatchInterval, they fail it once it has been silent
	// for WatchSilenceTimeout and one of them has a witness, and they tell
	// every peer. Zero leaves larger clusters to memberlist.
	WatchPeers          int
	WatchInterval       time.Duration
	WatchSilenceTimeout time.Duration
	// Compress turns on memberlist's LZW compression of every packet and
	// stream. It is off in every built-in profile: almost all packets are
	// probes, acks and heartbeats of 30-70 bytes, which LZW does not
	// shrink, and memberlist allocates a fresh 64 KB table per compressed
	// packet, which was a fifth of the CPU of a 100-node benchmark cluster
	// and most of an idle agent's garbage. Receivers decompress either way,
	// so nodes with different settings interoperate.
	Compress bool
	// Phi tunes the per-peer phi accrual detectors; FirstHeartbeatEstimate
	// should match HeartbeatInterval.
	Phi phi.Config
}

// profiles holds the built-in profiles by name.
var profiles = map[string]Profile{
	// lan: Pis on one switched Ethernet or Wi-Fi segment, tuned with
	// rpi-bench against memberlist's DefaultLANConfig, which Serf and
	// Consul ship (the figures are in docs/PERFORMANCE.md). Failures are
	// detected by heartbeats (agent/detector): up to 12 nodes every peer
	// gets one every 50 ms and a peer silent for 2.35 s with a witness is
	// failed at once, so a 2 s stall (an SD-card write, a CPU hog) plus
	// five heartbeats lost in a row is survived; beyond 12 each node also
	// heartbeats its two watchers every 200 ms, which fail it after 3.2 s
	// (a 2 s stall plus six lost in a row). Besides, 1 s rounds of at most
	// 8 peers feed phi (it crosses 8 about 3.5 s after the last one).
	// memberlist's SWIM keeps DefaultLANConfig's probe and suspicion
	// timings: with the heartbeats ahead of it at every size it is the
	// backstop (both watchers gone with the node, or a degraded observer),
	// and a backstop that hurries accuses live nodes whenever a process is
	// starved of CPU: lan's earlier 200 ms probes and 11·log10(N)·200 ms
	// suspicion did, at scale, where these timings do not (the figures are
	// in docs/PERFORMANCE.md). Gossip runs every 100 ms, twice
	// DefaultLANConfig's rate, so joins and records spread in half the
	// time. The fast heartbeats cost about ten times the bandwidth of slow
	// rounds at 10 nodes: nothing on Ethernet, but on a busy Wi-Fi
	// memberlist-lan, which has none of them, is the better choice.
	"lan": {
		Name:                    "lan",
		ProbeInterval:           time.Second,
		ProbeTimeout:            500 * time.Millisecond,
		GossipInterval:          100 * time.Millisecond,
		PushPullInterval:        30 * time.Second,
		TCPTimeout:              10 * time.Second,
		SuspicionMult:           4,
		SuspicionMaxTimeoutMult: 6,
		RetransmitMult:          4,
		IndirectChecks:          3,
		GossipNodes:             3,
		GossipToTheDeadTime:     30 * time.Second,
		DeadNodeReclaimTime:     10 * time.Second,
		HeartbeatInterval:       time.Second,
		HeartbeatFanout:         8,
		FastHeartbeatPeers:      11,
		FastHeartbeatInterval:   50 * time.Millisecond,
		SilenceTimeout:          2350 * time.Millisecond,
		WatchPeers:              2,
		WatchInterval:           200 * time.Millisecond,
		WatchSilenceTimeout:     3200 * time.Millisecond,
		Phi: phi.Config{
			Threshold:              8,
			WindowSize:             1000,
			MinStdDev:              100 * time.Millisecond,
			AcceptablePause:        2 * time.Second,
			FirstHeartbeatEstimate: time.Second,
		},
	},
	// memberlist-lan: memberlist's DefaultLANConfig, the timings Serf and
	// Consul ship (a probe a second, suspicion 4·log10(N) s, gossip every
	// 200 ms, compression on), with lan's slow heartbeat rounds for phi but
	// none of its verdicts: lan without the detector. Slower to fail a dead
	// Pi (about 6 s at N = 10 against lan's 2.4 s) and a tenth of lan's
	// bandwidth at 10 nodes: for a busy or lossy Wi-Fi where lan is too
	// eager, and the baseline rpi-bench measures lan against.
	"memberlist-lan": {
		Name:                    "memberlist-lan",
		ProbeInterval:           time.Second,
		ProbeTimeout:            500 * time.Millisecond,
		GossipInterval:          200 * time.Millisecond,
		PushPullInterval:        30 * time.Second,
		TCPTimeout:              10 * time.Second,
		SuspicionMult:           4,
		SuspicionMaxTimeoutMult: 6,
		RetransmitMult:          4,
		IndirectChecks:          3,
		GossipNodes:             3,
		GossipToTheDeadTime:     30 * time.Second,
		DeadNodeReclaimTime:     10 * time.Second,
		HeartbeatInterval:       time.Second,
		HeartbeatFanout:         8,
		Compress:                true,
		Phi: phi.Config{
			Threshold:              8,
			WindowSize:             1000,
			MinStdDev:              100 * time.Millisecond,
			AcceptablePause:        2 * time.Second,
			FirstHeartbeatEstimate: time.Second,
		},
	},
	// local: agents on one host or a container network (the e2e virtual
	// cluster): round trips are sub-millisecond, so everything runs about
	// five times faster than lan, as memberlist's DefaultLocalConfig does.
	"local": {
		Name:                    "local",
		ProbeInterval:           time.Second,
		ProbeTimeout:            200 * time.Millisecond,
		GossipInterval:          100 * time.Millisecond,
		PushPullInterval:        15 * time.Second,
		TCPTimeout:              time.Second,
		SuspicionMult:           3,
		SuspicionMaxTimeoutMult: 6,
		RetransmitMult:          2,
		IndirectChecks:          3,
		GossipNodes:             3,
		GossipToTheDeadTime:     15 * time.Second,
		DeadNodeReclaimTime:     5 * time.Second,
		HeartbeatInterval:       500 * time.Millisecond,
		HeartbeatFanout:         8,
		Phi: phi.Config{
			Threshold:              8,
			WindowSize:             1000,
			MinStdDev:              50 * time.Millisecond,
			AcceptablePause:        time.Second,
			FirstHeartbeatEstimate: 500 * time.Millisecond,
		},
	},
	// wan: nodes across sites or behind slow, lossy links: memberlist's
	// WAN defaults (3 s probe timeout, 5 s probes, fewer, slower gossip
	// rounds) and a patient detector, trading detection time for not
	// flapping on every congested minute.
	"wan": {
		Name:                    "wan",
		ProbeInterval:           5 * time.Second,
		ProbeTimeout:            3 * time.Second,
		GossipInterval:          500 * time.Millisecond,
		PushPullInterval:        60 * time.Second,
		TCPTimeout:              30 * time.Second,
		SuspicionMult:           6,
		SuspicionMaxTimeoutMult: 6,
		RetransmitMult:          4,
		IndirectChecks:          3,
		GossipNodes:             4,
		GossipToTheDeadTime:     60 * time.Second,
		DeadNodeReclaimTime:     30 * time.Second,
		HeartbeatInterval:       2 * time.Second,
		HeartbeatFanout:         4,
		Phi: phi.Config{
			Threshold:              10,
			WindowSize:             1000,
			MinStdDev:              500 * time.Millisecond,
			AcceptablePause:        6 * time.Second,
			FirstHeartbeatEstimate: 2 * time.Second,
		},
	},
	// test: in-process clusters on loopback. Fast enough that failure,
	// leave and reclaim complete in about a second so the package tests
	// stay well under 30 s, yet slow enough that a loaded 2-core CI
	// machine running -race does not produce false suspicions. Shaped
	// like lan, so the suite runs the production detector: fast
	// heartbeats and silence verdicts up to 11 peers, watched heartbeats
	// beyond, and local health. Not for real networks.
	"test": {
		Name:                    "test",
		ProbeInterval:           100 * time.Millisecond,
		ProbeTimeout:            50 * time.Millisecond,
		GossipInterval:          20 * time.Millisecond,
		PushPullInterval:        500 * time.Millisecond,
		TCPTimeout:              500 * time.Millisecond,
		SuspicionMult:           3,
		SuspicionMaxTimeoutMult: 3,
		RetransmitMult:          3,
		IndirectChecks:          2,
		GossipNodes:             3,
		GossipToTheDeadTime:     time.Second,
		DeadNodeReclaimTime:     100 * time.Millisecond,
		HeartbeatInterval:       50 * time.Millisecond,
		HeartbeatFanout:         8,
		FastHeartbeatPeers:      11,
		FastHeartbeatInterval:   20 * time.Millisecond,
		SilenceTimeout:          400 * time.Millisecond,
		WatchPeers:              2,
		WatchInterval:           25 * time.Millisecond,
		WatchSilenceTimeout:     500 * time.Millisecond,
		Phi: phi.Config{
			Threshold:              8,
			WindowSize:             100,
			MinStdDev:              20 * time.Millisecond,
			AcceptablePause:        200 * time.Millisecond,
			FirstHeartbeatEstimate: 50 * time.Millisecond,
		},
	},
}

// DefaultProfileName is the profile used when none is configured.
const DefaultProfileName = "lan"

// Timing is what the failure detector (agent/detector) needs of the
// profile.
func (p Profile) Timing() detector.Timing {
	return detector.Timing{
		HeartbeatInterval:     p.HeartbeatInterval,
		HeartbeatFanout:       p.HeartbeatFanout,
		FastHeartbeatPeers:    p.FastHeartbeatPeers,
		FastHeartbeatInterval: p.FastHeartbeatInterval,
		SilenceTimeout:        p.SilenceTimeout,
		WatchPeers:            p.WatchPeers,
		WatchInterval:         p.WatchInterval,
		WatchSilenceTimeout:   p.WatchSilenceTimeout,
		MinSuspicion:          time.Duration(p.SuspicionMult) * p.ProbeInterval,
		Phi:                   p.Phi,
	}
}

// ProfileNames returns the names of the built-in profiles, sorted.
func ProfileNames() []string {
	names := make([]string, 0, len(profiles))
	for n := range profiles {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ProfileByName returns a copy of the named built-in profile. An empty name
// selects DefaultProfileName.
func ProfileByName(name string) (Profile, error) {
	if name == "" {
		name = DefaultProfileName
	}
	p, ok := profiles[name]
	if !ok {
		return Profile{}, fmt.Errorf("unknown profile %q: valid profiles are %s", name, strings.Join(ProfileNames(), ", "))
	}
	return p, nil
}

// Validate reports the first field of the profile that is out of range.
func (p Profile) Validate() error {
	durations := []struct {
		name string
		v    time.Duration
	}{
		{"probe interval", p.ProbeInterval}, {"probe timeout", p.ProbeTimeout},
		{"gossip interval", p.GossipInterval}, {"push-pull interval", p.PushPullInterval},
		{"tcp timeout", p.TCPTimeout}, {"gossip to the dead time", p.GossipToTheDeadTime},
		{"dead node reclaim time", p.DeadNodeReclaimTime}, {"heartbeat interval", p.HeartbeatInterval},
	}
	for _, d := range durations {
		if d.v <= 0 {
			return fmt.Errorf("profile %q: %s %v must be positive", p.Name, d.name, d.v)
		}
	}
	ints := []struct {
		name string
		v    int
	}{
		{"suspicion mult", p.SuspicionMult}, {"suspicion max timeout mult", p.SuspicionMaxTimeoutMult},
		{"retransmit mult", p.RetransmitMult}, {"indirect checks", p.IndirectChecks}, {"gossip nodes", p.GossipNodes},
		{"heartbeat fanout", p.HeartbeatFanout},
	}
	for _, i := range ints {
		if i.v <= 0 {
			return fmt.Errorf("profile %q: %s %d must be positive", p.Name, i.name, i.v)
		}
	}
	if p.FastHeartbeatPeers < 0 || p.FastHeartbeatInterval < 0 || p.SilenceTimeout < 0 {
		return fmt.Errorf("profile %q: fast heartbeat peers, fast heartbeat interval and silence timeout must not be negative", p.Name)
	}
	if (p.FastHeartbeatPeers > 0) != (p.FastHeartbeatInterval > 0) {
		return fmt.Errorf("profile %q: fast heartbeats need both a peer count and an interval (or neither)", p.Name)
	}
	if p.SilenceTimeout > 0 && (p.FastHeartbeatInterval == 0 || p.SilenceTimeout < detector.MinSilenceRounds*p.FastHeartbeatInterval) {
		return fmt.Errorf("profile %q: silence timeout %v needs fast heartbeats at least %d times as frequent (fast heartbeat interval %v)",
			p.Name, p.SilenceTimeout, detector.MinSilenceRounds, p.FastHeartbeatInterval)
	}
	if p.WatchPeers < 0 || p.WatchInterval < 0 || p.WatchSilenceTimeout < 0 {
		return fmt.Errorf("profile %q: watch peers, watch interval and watch silence timeout must not be negative", p.Name)
	}
	if (p.WatchPeers > 0) != (p.WatchInterval > 0) || (p.WatchPeers > 0) != (p.WatchSilenceTimeout > 0) {
		return fmt.Errorf("profile %q: watched heartbeats need watch peers, a watch interval and a watch silence timeout (or none)", p.Name)
	}
	if p.WatchPeers == 1 {
		return fmt.Errorf("profile %q: watch peers must be at least 2: a verdict needs a second watcher as its witness", p.Name)
	}
	if p.WatchInterval > 0 {
		if p.WatchSilenceTimeout < detector.MinSilenceRounds*p.WatchInterval {
			return fmt.Errorf("profile %q: watch silence timeout %v needs watch heartbeats at least %d times as frequent (watch interval %v)",
				p.Name, p.WatchSilenceTimeout, detector.MinSilenceRounds, p.WatchInterval)
		}
		if p.WatchInterval <= p.FastHeartbeatInterval || p.WatchInterval >= p.HeartbeatInterval {
			return fmt.Errorf("profile %q: watch interval %v must lie between the fast heartbeat interval %v and the heartbeat interval %v",
				p.Name, p.WatchInterval, p.FastHeartbeatInterval, p.HeartbeatInterval)
		}
	}
	if p.ProbeTimeout >= p.ProbeInterval {
		return fmt.Errorf("profile %q: probe timeout %v must be shorter than probe interval %v", p.Name, p.ProbeTimeout, p.ProbeInterval)
	}
	if err := p.Phi.Validate(); err != nil {
		return fmt.Errorf("profile %q: %w", p.Name, err)
	}
	return nil
}

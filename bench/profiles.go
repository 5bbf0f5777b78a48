package bench

import (
	"fmt"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
)

// Contender is one set of timings compared side by side.
type Contender struct {
	// Label names the column in the report.
	Label   string
	Profile cluster.Profile
}

// MemberlistLANProfile mirrors memberlist's DefaultLANConfig (the timings
// Serf and Consul ship) as a cluster.Profile. Heartbeats, phi and the
// reclaim time, which memberlist does not have, are taken from lan so that
// only SWIM's timings differ.
func MemberlistLANProfile() cluster.Profile {
	p, _ := cluster.ProfileByName("lan")
	p.Name = "memberlist-default-lan"
	p.ProbeInterval = time.Second
	p.ProbeTimeout = 500 * time.Millisecond
	p.SuspicionMult = 4
	p.SuspicionMaxTimeoutMult = 6
	p.GossipInterval = 200 * time.Millisecond
	p.GossipNodes = 3
	p.RetransmitMult = 4
	p.PushPullInterval = 30 * time.Second
	p.IndirectChecks = 3
	p.TCPTimeout = 10 * time.Second
	p.GossipToTheDeadTime = 30 * time.Second
	return p
}

// CandidateLANProfile is the tuning of lan the benchmark evaluates beside
// the current one: probes twice as often with a shorter timeout, a
// suspicion window of 3·log10(N)·0.5 s (1.5 s at N = 10, 3 s at N = 100)
// capped at 4 times that while few peers confirm, gossip twice as often.
// Everything else is lan's.
func CandidateLANProfile() cluster.Profile {
	p, _ := cluster.ProfileByName("lan")
	p.Name = "lan-candidate"
	p.ProbeInterval = 500 * time.Millisecond
	p.ProbeTimeout = 250 * time.Millisecond
	p.SuspicionMult = 3
	p.SuspicionMaxTimeoutMult = 4
	p.GossipInterval = 100 * time.Millisecond
	return p
}

// Contenders returns the timings compared in every row: our lan profile,
// memberlist's DefaultLANConfig and, when candidate is true, the proposed
// lan tuning.
func Contenders(candidate bool) ([]Contender, error) {
	lan, err := cluster.ProfileByName("lan")
	if err != nil {
		return nil, fmt.Errorf("contenders: %w", err)
	}
	out := []Contender{
		{Label: "lan", Profile: lan},
		{Label: "memberlist DefaultLANConfig", Profile: MemberlistLANProfile()},
	}
	if candidate {
		out = append(out, Contender{Label: "lan candidate", Profile: CandidateLANProfile()})
	}
	for _, c := range out {
		if err := c.Profile.Validate(); err != nil {
			return nil, fmt.Errorf("contenders: %s: %w", c.Label, err)
		}
	}
	return out, nil
}

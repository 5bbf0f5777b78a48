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
// Serf and Consul ship, compression on) as a cluster.Profile. Heartbeats,
// phi and the reclaim time, which memberlist does not have, are taken from
// lan so that only memberlist's settings differ.
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
	p.Compress = true
	return p
}

// Contenders returns the timings compared in every row: our lan profile
// and memberlist's DefaultLANConfig.
func Contenders() ([]Contender, error) {
	lan, err := cluster.ProfileByName("lan")
	if err != nil {
		return nil, fmt.Errorf("contenders: %w", err)
	}
	out := []Contender{
		{Label: "lan", Profile: lan},
		{Label: "memberlist DefaultLANConfig", Profile: MemberlistLANProfile()},
	}
	for _, c := range out {
		if err := c.Profile.Validate(); err != nil {
			return nil, fmt.Errorf("contenders: %s: %w", c.Label, err)
		}
	}
	return out, nil
}

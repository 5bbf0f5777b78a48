package cluster

import (
	"fmt"
	"log/slog"
	"net"

	"github.com/hashicorp/memberlist"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
)

// Config configures a Cluster. Create copies it; later changes have no
// effect.
type Config struct {
	// NodeName is this node's unique name in the cluster. Required.
	NodeName string
	// ClusterName separates clusters sharing a network: nodes only accept
	// peers whose node metadata carries the same name. Required.
	ClusterName string

	// BindAddr is the IP gossip listens on (UDP and TCP). Empty: 0.0.0.0.
	BindAddr string
	// BindPort is the gossip port; 0 picks a free one (tests).
	BindPort int
	// AdvertiseAddr is the IP peers should use to reach this node, when it
	// differs from BindAddr (NAT, several interfaces). Optional.
	AdvertiseAddr string
	// AdvertisePort is the advertised port. Optional; 0 means the bound port.
	AdvertisePort int

	// HTTPPort is the agent API port, published in the node metadata.
	HTTPPort int

	// Profile holds the timings. The zero Profile means the "lan" profile.
	Profile Profile

	// SecretKey turns on gossip encryption (AES-GCM through memberlist's
	// keyring) when set: 16, 24 or 32 bytes. Both incoming and outgoing
	// traffic are verified, so nodes without the key cannot join.
	SecretKey []byte

	// Transport replaces memberlist's UDP/TCP transport (benchmarks wrap
	// it). Nil: a NetTransport on BindAddr:BindPort. Either way it is
	// wrapped in a CountingTransport for Stats and shut down by Shutdown.
	Transport memberlist.Transport

	// Key is this node's own signing key: everything the node says about
	// itself (record, leave) is signed with it. Nil: a key made for this
	// run only (tests, benchmarks); the agent loads it from its data dir.
	Key *identity.Key
	// Pins ties peers' names to the keys first seen for them. Nil: pins
	// held in memory for this run only; the agent keeps them in its data
	// dir, so a restart does not forget whom it trusts.
	Pins *identity.Pins

	// Logger receives this package's logs; memberlist's own log lines are
	// routed into it at debug level. Nil discards them.
	Logger *slog.Logger

	// Initial contents of the local record.
	Services     []string
	SSHHostKeys  []string
	AgentVersion string
	Arch         string
	Model        string
	Monitoring   Monitoring
}

// Validate reports the first field that is missing or out of range.
func (c *Config) Validate() error {
	if c.NodeName == "" {
		return fmt.Errorf("cluster config: node name is required")
	}
	if err := apitypes.ValidateNodeName(c.NodeName); err != nil {
		return fmt.Errorf("cluster config: %w", err)
	}
	if c.ClusterName == "" {
		return fmt.Errorf("cluster config: cluster name is required")
	}
	if c.BindAddr != "" && net.ParseIP(c.BindAddr) == nil {
		return fmt.Errorf("cluster config: bind address %q is not an IP address", c.BindAddr)
	}
	if c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil {
		return fmt.Errorf("cluster config: advertise address %q is not an IP address", c.AdvertiseAddr)
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"bind port", c.BindPort}, {"advertise port", c.AdvertisePort}, {"http port", c.HTTPPort}} {
		if p.v < 0 || p.v > 65535 {
			return fmt.Errorf("cluster config: %s %d is outside 0-65535", p.name, p.v)
		}
	}
	if c.Profile.Name != "" {
		if err := c.Profile.Validate(); err != nil {
			return fmt.Errorf("cluster config: %w", err)
		}
	}
	switch len(c.SecretKey) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("cluster config: secret key is %d bytes, want 16, 24 or 32 (generate one with `rpi-agent keygen`)", len(c.SecretKey))
	}
	return nil
}

package cluster

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/rpi-cluster/rpi-cluster/agent/identity"
)

func TestProfiles(t *testing.T) {
	names := ProfileNames()
	if strings.Join(names, ",") != "lan,local,memberlist-lan,test,wan" {
		t.Fatalf("ProfileNames() = %v", names)
	}
	for _, n := range names {
		p, err := ProfileByName(n)
		if err != nil || p.Name != n {
			t.Fatalf("ProfileByName(%q) = %q, %v", n, p.Name, err)
		}
		if err := p.Validate(); err != nil {
			t.Errorf("profile %s invalid: %v", n, err)
		}
		if p.Phi.FirstHeartbeatEstimate != p.HeartbeatInterval {
			t.Errorf("profile %s: phi first estimate %v differs from heartbeat interval %v", n, p.Phi.FirstHeartbeatEstimate, p.HeartbeatInterval)
		}
	}
	if p, _ := ProfileByName(""); p.Name != "lan" {
		t.Errorf("default profile %q, want lan", p.Name)
	}
	_, err := ProfileByName("fast")
	if err == nil || !strings.Contains(err.Error(), "lan, local, memberlist-lan, test, wan") {
		t.Errorf("unknown profile error %v, want it to list the valid names", err)
	}
	// memberlist-lan is memberlist's DefaultLANConfig wherever memberlist
	// has the setting.
	conf, _ := ProfileByName("memberlist-lan")
	def := memberlist.DefaultLANConfig()
	if conf.ProbeInterval != def.ProbeInterval || conf.ProbeTimeout != def.ProbeTimeout ||
		conf.GossipInterval != def.GossipInterval || conf.GossipNodes != def.GossipNodes ||
		conf.PushPullInterval != def.PushPullInterval || conf.SuspicionMult != def.SuspicionMult ||
		conf.SuspicionMaxTimeoutMult != def.SuspicionMaxTimeoutMult || conf.RetransmitMult != def.RetransmitMult ||
		conf.IndirectChecks != def.IndirectChecks || conf.TCPTimeout != def.TCPTimeout ||
		conf.GossipToTheDeadTime != def.GossipToTheDeadTime || conf.Compress != def.EnableCompression {
		t.Errorf("memberlist-lan differs from memberlist.DefaultLANConfig")
	}
	p, _ := ProfileByName("lan")
	p.ProbeTimeout = 2 * time.Second
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "probe timeout") {
		t.Errorf("probe timeout > interval: %v", err)
	}
	for name, tc := range map[string]struct {
		mutate func(p *Profile)
		want   string
	}{
		"silence without fast heartbeats": {func(p *Profile) { p.FastHeartbeatPeers, p.FastHeartbeatInterval = 0, 0 }, "silence timeout"},
		"silence too short":               {func(p *Profile) { p.SilenceTimeout = 15 * p.FastHeartbeatInterval }, "silence timeout"},
		"fast peers without interval":     {func(p *Profile) { p.FastHeartbeatInterval, p.SilenceTimeout = 0, 0 }, "fast heartbeats"},
		"negative":                        {func(p *Profile) { p.SilenceTimeout = -time.Second }, "negative"},
	} {
		p, _ := ProfileByName("lan")
		tc.mutate(&p)
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error about %s", name, err, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{NodeName: "pi1", ClusterName: "rpi"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for field, mutate := range map[string]func(*Config){
		"node name":         func(c *Config) { c.NodeName = "" },
		"cluster name":      func(c *Config) { c.ClusterName = "" },
		"bind address":      func(c *Config) { c.BindAddr = "pi.local" },
		"advertise":         func(c *Config) { c.AdvertiseAddr = "x" },
		"bind port":         func(c *Config) { c.BindPort = 70000 },
		"http port":         func(c *Config) { c.HTTPPort = -1 },
		"secret key":        func(c *Config) { c.SecretKey = make([]byte, 10) },
		"heartbeat":         func(c *Config) { c.Profile, _ = ProfileByName("lan"); c.Profile.HeartbeatInterval = 0 },
		"phi config":        func(c *Config) { c.Profile, _ = ProfileByName("lan"); c.Profile.Phi.Threshold = -1 },
		"invalid node name": func(c *Config) { c.NodeName = strings.Repeat("a", 300) },
		"reserved":          func(c *Config) { c.NodeName = "all" },
		"use letters":       func(c *Config) { c.NodeName = "evil ansible_connection=local" },
	} {
		c := ok
		mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: Validate() = %v", field, err)
		}
		if _, err := Create(&c); err == nil {
			t.Errorf("%s: Create accepted an invalid config", field)
		}
	}
}

func TestCodecRoundTripAndLimits(t *testing.T) {
	temp := 48.5
	r := Record{Name: "pi1", Addr: "10.0.0.5", GossipPort: 7946, HTTPPort: 8080, Services: []string{"web"},
		Monitoring:  Monitoring{CPUs: 4, Load1: 0.25, TempC: &temp, SampledAt: time.Unix(1700000000, 0).UTC()},
		SSHHostKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ"}, Version: 42}
	k, _ := identity.Generate()
	r.IdentityKey = k.Public()
	b, err := signRecord(k, r)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	got, sig, body, err := decodeRecord(b)
	if err != nil || !sameRecord(got, r) || *got.Monitoring.TempC != 48.5 || !identity.Verify(k.Public(), identity.PurposeRecord, body, sig) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if len(b)+1 > maxGossipRecord {
		t.Errorf("a typical record is %d bytes, more than fits a gossip packet", len(b)+1)
	}
	big := r
	big.Services = []string{strings.Repeat("s", maxRecordSize)}
	if _, err := signRecord(k, big); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("oversized record: %v", err)
	}
	hb, err := decodeHeartbeat(encodeHeartbeat("pi1", "10.0.0.7:7946", 1<<62, 13*time.Second)[1:])
	if err != nil || hb != (heartbeat{name: "pi1", addr: "10.0.0.7:7946", seq: 1 << 62, period: 13 * time.Second}) {
		t.Errorf("heartbeat round trip: %+v %v", hb, err)
	}
	for what, body := range map[string][]byte{
		"no name":         {5, 100},
		"no period":       {5},
		"period 0":        {5, 0, 'p'},
		"period of years": append(binary.AppendUvarint([]byte{5}, uint64(400*24*time.Hour/time.Millisecond)), 3, '1', ':', '2', 'p'),
	} {
		if _, err := decodeHeartbeat(body); err == nil {
			t.Errorf("heartbeat with %s accepted", what)
		}
	}
	if _, _, _, err := decodeRecord(append(make([]byte, identity.SignatureSize), `{"n":"x"}`...)); err == nil {
		t.Error("record with version 0 accepted")
	}
	c := r.Clone()
	c.Services[0] = "changed"
	*c.Monitoring.TempC = 0
	if r.Services[0] != "web" || *r.Monitoring.TempC != 48.5 {
		t.Error("Clone shares memory with the original")
	}
}

// In lan the heartbeats decide first at every size: memberlist's shortest
// suspicion (its suspicionTimeout: SuspicionMult·max(1, log10 N) probe
// intervals, reached once enough peers confirm) outlasts the detector's
// verdict, a silence verdict up to FastHeartbeatPeers+1 nodes and a
// watcher's beyond. SWIM is the backstop, so a starved process's late
// acks do not turn into memberlist verdicts on live nodes before the
// heartbeats, which local health discounts, have had their say.
func TestLanHeartbeatsDecideBeforeSWIM(t *testing.T) {
	p, _ := ProfileByName("lan")
	for n := 3; n <= 5000; n++ {
		scale := max(1, math.Log10(float64(n)))
		swim := time.Duration(float64(p.SuspicionMult) * scale * float64(p.ProbeInterval))
		heartbeats, by := p.WatchSilenceTimeout, "a watcher's"
		if n-1 <= p.FastHeartbeatPeers {
			heartbeats, by = p.SilenceTimeout, "a silence"
		}
		if swim <= heartbeats {
			t.Fatalf("at N = %d memberlist's shortest suspicion (%v) ends before %s verdict (%v): SWIM, the backstop, would judge live nodes first whenever acks are late",
				n, swim.Round(time.Millisecond), by, heartbeats)
		}
	}
}

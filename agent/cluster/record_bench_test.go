package cluster

import (
	"net"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/rpi-cluster/rpi-cluster/agent/identity"
)

// benchRecord is a typical record: one service, one SSH host key, a full
// monitoring sample.
func benchRecord(b *testing.B, name, addr string, pub []byte) Record {
	temp := 48.5
	return Record{Name: name, Addr: addr, GossipPort: 7946, HTTPPort: 8080, Services: []string{"nginx_webserver"},
		SSHHostKeys: []string{sshHostKeyB(b)}, AgentVersion: "v1.0.0", Arch: "arm64", Model: "Raspberry Pi 4 Model B Rev 1.4",
		Monitoring: Monitoring{CPUs: 4, CPUPercent: 12.5, MemTotal: 4 << 30, MemUsed: 1 << 30, Load1: 0.5, Load5: 0.4,
			Load15: 0.3, TempC: &temp, DiskUsedPercent: 40, UptimeS: 3600, SampledAt: time.Now().UTC()},
		IdentityKey: pub}
}

// BenchmarkRecordReceive is the cost of a peer's newer record arriving as
// a gossip message: decode, checks, signature verification and apply.
func BenchmarkRecordReceive(b *testing.B) {
	p, _ := ProfileByName("test")
	c, err := Create(&Config{NodeName: "self", ClusterName: "rpi", Profile: p})
	if err != nil {
		b.Fatal(err)
	}
	c.handleNodeJoin(&memberlist.Node{Name: "peer", Addr: net.ParseIP("10.0.0.2"), Port: 7946, Meta: c.meta})
	k, _ := identity.Generate()
	r := benchRecord(b, "peer", "10.0.0.2", k.Public())
	const n = 1000
	msgs := make([][]byte, n)
	for i := range msgs {
		r.Version = uint64(i + 1)
		r.Monitoring.Load1 = float64(i)
		signed, err := signRecord(k, r)
		if err != nil {
			b.Fatal(err)
		}
		msgs[i] = append([]byte{msgRecord}, signed...)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%n == 0 {
			c.mu.Lock()
			c.peers["peer"].rec = nil // the versions start over
			c.mu.Unlock()
		}
		c.handleMsg(msgs[i%n])
		i++
	}
	if m, _ := c.Member("peer"); m.Version == 0 {
		b.Fatal("no record applied")
	}
}

// BenchmarkUpdateSelf is the cost of a change of this node's record: the
// monitoring sample every few seconds, signed and queued.
func BenchmarkUpdateSelf(b *testing.B) {
	p, _ := ProfileByName("test")
	c, err := Create(&Config{NodeName: "self", ClusterName: "rpi", BindAddr: "127.0.9.99", Profile: p, Services: []string{"nginx_webserver"}, SSHHostKeys: []string{sshHostKeyB(b)}})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Start(); err != nil {
		b.Fatal(err)
	}
	defer c.Shutdown()
	b.ReportAllocs()
	load := 0.0
	for b.Loop() {
		load++
		c.UpdateSelf(func(r *Record) { r.Monitoring.Load1 = load })
	}
}

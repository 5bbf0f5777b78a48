package command

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent"
	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
)

// startAgent starts an in-process agent called name with gossip and the
// API on ip (ports chosen by the system), its data in dir, writes needing
// token, no mDNS and no SSH host keys, on the test timing profile, joined
// to join ("" for none). It shuts down when the test ends.
func startAgent(t *testing.T, name, ip, dir, token, join string) *agent.Agent {
	t.Helper()
	conf := agent.DefaultConfig()
	conf.Name = name
	conf.Bind, conf.HTTP = ip+":0", ip+":0"
	conf.MDNS, conf.SSHHostKeys = false, ""
	conf.DataDir, conf.APIToken = dir, token
	conf.MonitorInterval, conf.RetryJoinInterval = 300*time.Millisecond, 100*time.Millisecond
	if join != "" {
		conf.Join = []string{join}
	}
	p, err := cluster.ProfileByName("test")
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.Create(conf, slog.New(slog.NewTextHandler(io.Discard, nil)), agent.WithProfile(p))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Shutdown() })
	return a
}

// gossipAddr is a's gossip address, for another agent to join.
func gossipAddr(a *agent.Agent) string {
	ip, port := a.Cluster().LocalAddr()
	return fmt.Sprintf("%s:%d", ip, port)
}

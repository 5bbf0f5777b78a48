package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
	"github.com/rpi-cluster/rpi-cluster/agent/hooks"
)

func TestReapTimes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.yaml")
	os.WriteFile(p, []byte("reap_failed_after: 72h\nreap_left_after: 10m\n"), 0o600)
	c := DefaultConfig()
	if c.ReapFailedAfter != 24*time.Hour || c.ReapLeftAfter != time.Hour {
		t.Fatalf("defaults %v and %v, want Serf's 24h and a shorter 1h", c.ReapFailedAfter, c.ReapLeftAfter)
	}
	if err := c.LoadFile(p); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil || c.ReapFailedAfter != 72*time.Hour || c.ReapLeftAfter != 10*time.Minute {
		t.Fatalf("got %v and %v (%v)", c.ReapFailedAfter, c.ReapLeftAfter, err)
	}
	for _, tc := range []struct {
		field string
		mut   func(*Config)
	}{
		{"reap_failed_after", func(c *Config) { c.ReapFailedAfter = 0 }},
		{"reap_failed_after", func(c *Config) { c.ReapFailedAfter = 30 * time.Second }},
		{"reap_failed_after", func(c *Config) { c.ReapFailedAfter = -time.Hour }},
		{"reap_left_after", func(c *Config) { c.ReapLeftAfter = 1000 * time.Hour }},
	} {
		c := DefaultConfig()
		tc.mut(c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), "1m0s to 720h0m0s") {
			t.Errorf("%s %v/%v: %v, want an error naming it and the range", tc.field, c.ReapFailedAfter, c.ReapLeftAfter, err)
		}
	}
}

// A reaped or force-left member runs the member-reap handlers, as in Serf.
func TestReapEventRunsMemberReapHooks(t *testing.T) {
	if err := (hooks.Hook{Event: hooks.MemberReap, Command: "true"}).Validate(); err != nil {
		t.Fatalf("member-reap hook refused: %v", err)
	}
	ev, ok := toHookEvent(cluster.Event{Type: cluster.EventReap, Member: cluster.Member{Record: cluster.Record{Name: "pi-7"}, Status: cluster.StatusFailed}})
	if !ok || ev.Type != hooks.MemberReap || ev.Node.Name != "pi-7" {
		t.Fatalf("reap event became %+v (%v), want member-reap for pi-7", ev, ok)
	}
}

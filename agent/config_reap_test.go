package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

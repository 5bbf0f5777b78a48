package agent

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSampleConfigIsValid(t *testing.T) {
	c := DefaultConfig()
	if err := c.LoadFile(filepath.Join("..", "dist", "agent.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("dist/agent.yaml does not validate: %v", err)
	}
	if c.Cluster != "rpi" || c.HTTP != ":8080" || c.MonitorInterval != 5*time.Second {
		t.Fatalf("sample config drifted from the defaults: %+v", c)
	}
}

func TestLoadFileRejectsUnknownKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte("cluster: home\nphi_treshold: 9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := DefaultConfig().LoadFile(path)
	if err == nil || !strings.Contains(err.Error(), "phi_treshold") {
		t.Fatalf("want an error naming the unknown key phi_treshold, got %v", err)
	}
}

func TestLoadFileEmptyAndDurations(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.yaml")
	os.WriteFile(empty, nil, 0o600)
	c := DefaultConfig()
	if err := c.LoadFile(empty); err != nil {
		t.Fatalf("empty file: %v", err)
	}
	p := filepath.Join(dir, "a.yaml")
	os.WriteFile(p, []byte("retry_join_interval: 250ms\njoin: [10.0.0.1, '10.0.0.2:7000']\nmdns: false\n"), 0o600)
	if err := c.LoadFile(p); err != nil {
		t.Fatal(err)
	}
	if c.RetryJoinInterval != 250*time.Millisecond || len(c.Join) != 2 || c.MDNS {
		t.Fatalf("got %+v", c)
	}
}

func TestValidateNamesTheBadField(t *testing.T) {
	cases := []struct {
		field string
		mut   func(*Config)
	}{
		{"name", func(c *Config) { c.Name = "../etc" }},
		{"cluster", func(c *Config) { c.Cluster = "" }},
		{"bind", func(c *Config) { c.Bind = "1.2.3.4:99999" }},
		{"advertise", func(c *Config) { c.Advertise = "not-an-ip" }},
		{"http", func(c *Config) { c.HTTP = "" }},
		{"join", func(c *Config) { c.Join = []string{"host:port:extra"} }},
		{"encrypt", func(c *Config) { c.Encrypt = "!!!" }},
		{"encrypt", func(c *Config) { c.Encrypt = "c2hvcnQ=" }},
		{"profile", func(c *Config) { c.Profile = "fastest" }},
		{"phi_threshold", func(c *Config) { c.PhiThreshold = -1 }},
		{"monitor_interval", func(c *Config) { c.MonitorInterval = time.Millisecond }},
		{"log_level", func(c *Config) { c.LogLevel = "loud" }},
		{"data_dir", func(c *Config) { c.DataDir = "" }},
	}
	for _, tc := range cases {
		c := DefaultConfig()
		tc.mut(c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.field) {
			t.Errorf("%s: want an error starting with %q, got %v", tc.field, tc.field, err)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
}

func TestDefaultNodeName(t *testing.T) {
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	ifaces := []net.Interface{
		{Name: "lo", Flags: net.FlagLoopback},
		{Name: "docker0", HardwareAddr: mac("02:42:00:00:00:01")},
		{Name: "eth0", HardwareAddr: mac("dc:a6:32:a1:b2:c3")},
		{Name: "wlan0", HardwareAddr: mac("dc:a6:32:00:00:09")},
	}
	for _, tc := range []struct{ host, want string }{
		{"kitchen", "kitchen"},
		{"raspberrypi", "rpi-a1b2c3"},
		{"raspberrypi.local", "rpi-a1b2c3"},
		{"localhost", "rpi-a1b2c3"},
		{"", "rpi-a1b2c3"},
	} {
		got, err := DefaultNodeName(tc.host, ifaces)
		if err != nil || got != tc.want {
			t.Errorf("DefaultNodeName(%q) = %q, %v; want %q", tc.host, got, err, tc.want)
		}
	}
	// No eth0: wlan0; neither: first by name.
	if got, _ := DefaultNodeName("raspberrypi", ifaces[3:]); got != "rpi-000009" {
		t.Errorf("wlan0 fallback: %q", got)
	}
	if got, _ := DefaultNodeName("raspberrypi", ifaces[:2]); got != "rpi-000001" {
		t.Errorf("first-by-name fallback: %q", got)
	}
	if _, err := DefaultNodeName("raspberrypi", ifaces[:1]); err == nil {
		t.Error("no MAC at all: want an error")
	}
}

func TestReadHostKeys(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ssh_host_ed25519_key.pub"), []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample root@raspberrypi\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "ssh_host_rsa_key.pub"), []byte("garbage"), 0o644)
	if _, err := readHostKeys(filepath.Join(dir, "ssh_host_*_key.pub")); err == nil {
		t.Fatal("a malformed key file must be reported")
	}
	os.Remove(filepath.Join(dir, "ssh_host_rsa_key.pub"))
	keys, err := readHostKeys(filepath.Join(dir, "ssh_host_*_key.pub"))
	if err != nil || len(keys) != 1 || keys[0] != "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample" {
		t.Fatalf("keys %q, err %v", keys, err)
	}
}

// Every numeric setting, written in YAML and read by the real loader: NaN,
// infinities, negatives, zero where it means nothing and absurd magnitudes
// are errors naming the field; sane values load.
func TestNumericSettingsStrict(t *testing.T) {
	bad := []struct{ yaml, field string }{
		{"phi_threshold: .nan", "phi_threshold"},
		{"phi_threshold: .NaN", "phi_threshold"},
		{"phi_threshold: .inf", "phi_threshold"},
		{"phi_threshold: -.inf", "phi_threshold"},
		{"phi_threshold: -1", "phi_threshold"},
		{"phi_threshold: 0.001", "phi_threshold"},
		{"phi_threshold: 1e9", "phi_threshold"},
		{"phi_threshold: 1e400", "phi_threshold"},
		{"phi_threshold: eight", "phi_threshold"},
		{"retry_join_interval: 0s", "retry_join_interval"},
		{"retry_join_interval: -5s", "retry_join_interval"},
		{"retry_join_interval: 1ns", "retry_join_interval"},
		{"retry_join_interval: 100000h", "retry_join_interval"},
		{"retry_join_interval: .nan", "retry_join_interval"},
		{"retry_join_interval: 5", "retry_join_interval"},
		{"retry_join_max: -1", "retry_join_max"},
		{"retry_join_max: 1e12", "retry_join_max"},
		{"retry_join_max: .inf", "retry_join_max"},
		{"retry_join_max: 99999999999999999999", "retry_join_max"},
		{"monitor_interval: 0s", "monitor_interval"},
		{"monitor_interval: -1s", "monitor_interval"},
		{"monitor_interval: 1000h", "monitor_interval"},
		{"event_handler_timeout: 0s", "event_handler_timeout"},
		{"event_handler_timeout: -30s", "event_handler_timeout"},
		{"event_handler_timeout: 10000h", "event_handler_timeout"},
	}
	dir := t.TempDir()
	for i, tc := range bad {
		path := filepath.Join(dir, fmt.Sprintf("bad-%d.yaml", i))
		if err := os.WriteFile(path, []byte(tc.yaml+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c := DefaultConfig()
		err := c.LoadFile(path)
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%q: want an error naming %s, got %v", tc.yaml, tc.field, err)
		}
	}

	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("phi_threshold: 12.5\nretry_join_interval: 250ms\nretry_join_max: 10\n"+
		"monitor_interval: 1m\nevent_handler_timeout: 2m\n"), 0o600)
	c := DefaultConfig()
	if err := c.LoadFile(good); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("sane numbers refused: %v", err)
	}
	c.PhiThreshold = 0 // the profile's threshold
	if err := c.Validate(); err != nil {
		t.Fatalf("phi_threshold 0 refused: %v", err)
	}
}

package agent

import (
	"log/slog"
	"math"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// Reload applies a new api_token to the next request; an invalid
// configuration changes nothing; a setting that needs a restart says so.
func TestReloadToken(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	conf := DefaultConfig()
	conf.Name = "node-41"
	conf.Bind = "127.0.2.41:0"
	conf.HTTP = "127.0.2.41:0"
	conf.MDNS = false
	conf.DataDir = filepath.Join(t.TempDir(), "data")
	conf.SSHHostKeys = ""
	conf.APIToken = "old-token"
	profile, err := cluster.ProfileByName("test")
	if err != nil {
		t.Fatal(err)
	}
	a, err := Create(conf, slog.New(slog.NewTextHandler(logs, nil)), WithProfile(profile))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Shutdown() })
	put := func(token string) int {
		code, _ := request(t, http.MethodPut, "http://"+a.HTTPAddr()+"/v1/services/x", token)
		return code
	}
	next := func(mut func(*Config)) *Config {
		c := *conf
		mut(&c)
		return &c
	}
	if code := put("old-token"); code != http.StatusOK {
		t.Fatalf("old token before reload: %d", code)
	}
	if strings.Contains(logs.String(), "API writes need no token") {
		t.Fatalf("warned about open writes with a token set:\n%s", logs)
	}

	if err := a.Reload(next(func(c *Config) { c.APIToken = "new-token" })); err != nil {
		t.Fatal(err)
	}
	if code := put("old-token"); code != http.StatusUnauthorized {
		t.Errorf("old token after reload: %d, want 401", code)
	}
	if code := put("new-token"); code != http.StatusOK {
		t.Errorf("new token after reload: %d, want 200", code)
	}
	if strings.Contains(logs.String(), "new-token") {
		t.Error("the token was logged")
	}

	// Invalid: refused whole, the token in force stays.
	err = a.Reload(next(func(c *Config) { c.APIToken = "evil"; c.PhiThreshold = math.NaN() }))
	if err == nil || !strings.Contains(err.Error(), "phi_threshold") {
		t.Fatalf("invalid reload: %v, want an error naming phi_threshold", err)
	}
	if put("evil") != http.StatusUnauthorized || put("new-token") != http.StatusOK {
		t.Error("an invalid configuration changed the token")
	}

	// Settings fixed at start are named as needing a restart; the token
	// still changes.
	err = a.Reload(next(func(c *Config) {
		c.APIToken = "third"
		c.Bind = "127.0.2.42:7946"
		c.DataDir = "/elsewhere"
		c.Encrypt = "ZGVhZGJlZWZkZWFkYmVlZmRlYWRiZWVmZGVhZGJlZWY="
	}))
	if err != nil {
		t.Fatal(err)
	}
	line := ""
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "restart") {
			line = l
		}
	}
	for _, key := range []string{"bind", "data_dir", "encrypt"} {
		if !strings.Contains(line, key) {
			t.Errorf("restart warning %q does not name %s", line, key)
		}
	}
	if strings.Contains(line, "api_token") {
		t.Errorf("restart warning %q names api_token, which was applied", line)
	}
	if put("third") != http.StatusOK {
		t.Error("token not applied alongside settings that need a restart")
	}

	// Dropping the token opens writes, and the agent says so.
	if err := a.Reload(next(func(c *Config) { c.APIToken = "" })); err != nil {
		t.Fatal(err)
	}
	if put("") != http.StatusOK {
		t.Error("writes still need a token after it was removed")
	}
	if !strings.Contains(logs.String(), "API writes need no token") {
		t.Errorf("no warning once writes are open:\n%s", logs)
	}
}

// At start, an agent open to the LAN logs what is open and what closes it.
func TestInsecureStartWarnings(t *testing.T) {
	for _, tc := range []struct {
		name, token, key string
		want             []string
	}{
		{"open", "", "", []string{"set api_token", "set encrypt"}},
		{"token only", "t0ken", "", []string{"set encrypt"}},
		{"closed", "t0ken", "ZGVhZGJlZWZkZWFkYmVlZmRlYWRiZWVmZGVhZGJlZWY=", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &testutil.SyncBuffer{}
			conf := DefaultConfig()
			conf.Name = "node-43"
			conf.Bind, conf.HTTP = "127.0.2.43:0", "127.0.2.43:0"
			conf.MDNS, conf.SSHHostKeys = false, ""
			conf.DataDir = t.TempDir()
			conf.APIToken, conf.Encrypt = tc.token, tc.key
			profile, _ := cluster.ProfileByName("test")
			a, err := Create(conf, slog.New(slog.NewTextHandler(logs, nil)), WithProfile(profile))
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Start(); err != nil {
				t.Fatal(err)
			}
			a.Shutdown()
			var warns []string
			for l := range strings.Lines(logs.String()) {
				if strings.Contains(l, "level=WARN") && strings.Contains(l, "insecure") {
					warns = append(warns, l)
				}
			}
			if len(warns) != len(tc.want) {
				t.Fatalf("%d insecure warnings, want %d:\n%s", len(warns), len(tc.want), logs)
			}
			for i, w := range tc.want {
				if !strings.Contains(strings.ToLower(warns[i]), w) {
					t.Errorf("warning %q does not say %q", warns[i], w)
				}
			}
		})
	}
}

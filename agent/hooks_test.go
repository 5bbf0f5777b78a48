package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/hooks"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

func TestFailedHookFiresWhenPeerIsHardStopped(t *testing.T) {
	dir := t.TempDir()
	record := filepath.Join(dir, "record.sh")
	// Each run appends one line: the hook's tag, then what it was told.
	if err := os.WriteFile(record, []byte(`#!/bin/sh
echo "$1 $RPI_EVENT $RPI_NODE_NAME $RPI_NODE_STATUS $RPI_NODE_SERVICES $RPI_SELF_NAME $RPI_CLUSTER" >> "$(dirname "$0")/log"
`), 0o755); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "log")
	watcher := startAgent(t, 1, on(121, func(c *Config) {
		c.Cluster = "hooks"
		c.EventHandlers = []hooks.Hook{
			{Event: hooks.MemberJoin, Command: record + " join"},
			{Event: hooks.MemberFailed, Service: "nginx_webserver", Command: record + " web-failed"},
			{Event: hooks.MemberFailed, Service: "postgres", Command: record + " db-failed"},
		}
	}))

	// The peer runs nginx_webserver from the start: the join hook must see
	// its services even though memberlist reports the join first.
	peer := startAgent(t, 2, on(122, joinTo(watcher), func(c *Config) {
		c.Cluster = "hooks"
		if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(c.DataDir, "meta-data.json"), []byte(`{"services":["nginx_webserver"]}`), 0o644); err != nil {
			t.Fatal(err)
		}
	}))
	waitAlive(t, []*Agent{watcher, peer}, 2)
	wantJoin := "join member-join node-2 alive nginx_webserver node-1 hooks\n"
	testutil.WaitFor(t, 10*time.Second, func() error {
		got, _ := os.ReadFile(logPath)
		if string(got) != wantJoin {
			return fmt.Errorf("hook log %q, want %q", got, wantJoin)
		}
		return nil
	})

	// Hard stop: no leave, so the watcher declares the peer failed.
	if err := peer.Shutdown(); err != nil {
		t.Fatal(err)
	}
	want := wantJoin + "web-failed member-failed node-2 failed nginx_webserver node-1 hooks\n"
	testutil.WaitFor(t, 15*time.Second, func() error {
		got, _ := os.ReadFile(logPath)
		if string(got) != want {
			return fmt.Errorf("hook log %q, want %q", got, want)
		}
		// The run is counted once its script has exited.
		if s := watcher.hooks.Stats(); s.Runs != 2 || s.Failures != 0 || s.Dropped != 0 {
			return fmt.Errorf("hook stats %+v, want 2 runs", s)
		}
		return nil
	})
	// Shutdown stops the runner with the agent and stays idempotent.
	watcher.Shutdown()
	watcher.Shutdown()
	if watcher.hooks.Submit(hooks.Event{Type: hooks.MemberJoin, HasRecord: true}) {
		t.Fatal("the hook runner still accepts events after Shutdown")
	}
}

func TestEventHandlerConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(`event_handlers:
  - event: member-failed
    service: nginx_webserver
    command: /usr/local/bin/page "web down"
  - event: "*"
    command: logger -t rpi
event_handler_timeout: 5s
`), 0o600)
	c := DefaultConfig()
	if c.EventHandlerTimeout != 30*time.Second {
		t.Fatalf("default event_handler_timeout %v, want 30s", c.EventHandlerTimeout)
	}
	if err := c.LoadFile(good); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.EventHandlers) != 2 || c.EventHandlers[0].Service != "nginx_webserver" ||
		c.EventHandlers[0].Command != `/usr/local/bin/page "web down"` || c.EventHandlers[1].Event != "*" || c.EventHandlerTimeout != 5*time.Second {
		t.Fatalf("loaded %+v, timeout %v", c.EventHandlers, c.EventHandlerTimeout)
	}

	typo := filepath.Join(dir, "typo.yaml")
	os.WriteFile(typo, []byte("event_handlers:\n  - event: member-join\n    comand: /bin/true\n"), 0o600)
	if err := DefaultConfig().LoadFile(typo); err == nil || !strings.Contains(err.Error(), "comand") {
		t.Fatalf("an unknown key inside an entry: got %v, want an error naming comand", err)
	}

	for _, tc := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) {
			c.EventHandlers = []hooks.Hook{{Event: "member-join", Command: "/bin/true"}, {Event: "member-down", Command: "/bin/x"}}
		}, `event_handlers entry 2 (event "member-down", command "/bin/x"): unknown event "member-down"`},
		{func(c *Config) { c.EventHandlers = []hooks.Hook{{Event: "member-join"}} }, "event_handlers entry 1 (event \"member-join\", command \"\"): command is empty"},
		{func(c *Config) { c.EventHandlerTimeout = 0 }, "event_handler_timeout"},
	} {
		c := DefaultConfig()
		tc.mut(c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error containing %q", err, tc.want)
		}
	}
}

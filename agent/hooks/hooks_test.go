package hooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// script writes an executable shell script into dir and returns its path.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func newRunner(t *testing.T, conf Config) *Runner {
	t.Helper()
	if conf.Logger == nil {
		conf.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	r, err := New(conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Shutdown)
	return r
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func failedEvent() Event {
	return Event{
		Type:      MemberFailed,
		Node:      Node{Name: "pi-2", Address: "10.0.0.2", GossipPort: 7946, HTTPPort: 8080, Status: "failed", Services: []string{"nginx_webserver", "redis"}},
		Time:      time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
		HasRecord: true,
	}
}

func TestHookGetsEnvironmentArgumentsAndStdin(t *testing.T) {
	dir := t.TempDir()
	sh := script(t, dir, "on-failed.sh", `
printf '%s\n' "$@" > "$OUT/args"
env > "$OUT/env"
cat > "$OUT/stdin"
`)
	t.Setenv("OUT", dir)
	t.Setenv("RPI_API_TOKEN", "must-not-leak")
	r := newRunner(t, Config{
		Hooks:    []Hook{{Event: MemberFailed, Command: sh + ` first 'two words'`}},
		SelfName: "pi-1",
		Cluster:  "home",
	})
	results := r.Run(context.Background(), failedEvent())
	if len(results) != 1 || results[0].Err != nil || results[0].ExitCode != 0 {
		t.Fatalf("results %+v", results)
	}

	args, _ := os.ReadFile(filepath.Join(dir, "args"))
	if string(args) != "first\ntwo words\n" {
		t.Fatalf("arguments %q, want first and 'two words'", args)
	}
	envData, _ := os.ReadFile(filepath.Join(dir, "env"))
	env := map[string]string{}
	for _, line := range strings.Split(string(envData), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	for k, want := range map[string]string{
		"RPI_EVENT":            "member-failed",
		"RPI_NODE_NAME":        "pi-2",
		"RPI_NODE_ADDR":        "10.0.0.2",
		"RPI_NODE_GOSSIP_PORT": "7946",
		"RPI_NODE_HTTP_PORT":   "8080",
		"RPI_NODE_STATUS":      "failed",
		"RPI_NODE_SERVICES":    "nginx_webserver,redis",
		"RPI_SELF_NAME":        "pi-1",
		"RPI_CLUSTER":          "home",
		"OUT":                  dir,
	} {
		if env[k] != want {
			t.Errorf("%s=%q, want %q", k, env[k], want)
		}
	}
	if _, ok := env["RPI_API_TOKEN"]; ok {
		t.Error("the agent's own RPI_API_TOKEN was passed to the handler")
	}

	var got payload
	stdin, _ := os.ReadFile(filepath.Join(dir, "stdin"))
	if err := json.Unmarshal(stdin, &got); err != nil {
		t.Fatalf("stdin %q: %v", stdin, err)
	}
	ev := failedEvent()
	if got.Event != ev.Type || got.Self != "pi-1" || got.Cluster != "home" || !got.Time.Equal(ev.Time) ||
		got.Node.Name != "pi-2" || strings.Join(got.Node.Services, ",") != "nginx_webserver,redis" || got.Node.HTTPPort != 8080 {
		t.Fatalf("stdin event %+v", got)
	}
}

func TestTimeoutKillsTheProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	sh := script(t, dir, "slow.sh", `
sleep 60 &
echo $! > "`+pidFile+`"
echo started
sleep 60
`)
	r := newRunner(t, Config{Hooks: []Hook{{Event: Any, Command: sh}}, Timeout: 300 * time.Millisecond})
	start := time.Now()
	results := r.Run(context.Background(), failedEvent())
	took := time.Since(start)
	if len(results) != 1 {
		t.Fatalf("results %+v", results)
	}
	res := results[0]
	if !res.TimedOut || res.ExitCode != -1 || !errors.Is(res.Err, context.DeadlineExceeded) {
		t.Fatalf("want a timed-out result, got %+v", res)
	}
	if took > 10*time.Second {
		t.Fatalf("run took %v with a 300ms timeout", took)
	}
	if string(res.Output) != "started\n" {
		t.Fatalf("output %q", res.Output)
	}
	// The background child was in the group: it must be gone too (or a
	// zombie waiting for its new parent to reap it).
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	testutil.WaitFor(t, 5*time.Second, func() error {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil // gone
		}
		if f := strings.Fields(string(stat)); len(f) > 2 && f[2] == "Z" {
			return nil
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("background child %d still running: %s", pid, stat)
	})
	if s := r.Stats(); s.Runs != 1 || s.Failures != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestOutputIsBounded(t *testing.T) {
	dir := t.TempDir()
	sh := script(t, dir, "loud.sh", `
head -c 15000 /dev/zero | tr '\0' o
head -c 5000 /dev/zero | tr '\0' e >&2
exit 3
`)
	r := newRunner(t, Config{Hooks: []Hook{{Event: MemberFailed, Command: sh}}, MaxOutput: 1024})
	res := r.Run(context.Background(), failedEvent())[0]
	if len(res.Output) != 1024 || res.OutputDropped != 20000-1024 {
		t.Fatalf("kept %d bytes and dropped %d, want 1024 and %d", len(res.Output), res.OutputDropped, 20000-1024)
	}
	if res.ExitCode != 3 || res.Err == nil || res.TimedOut {
		t.Fatalf("exit code %d, err %v, timed out %v; want 3, an error, no timeout", res.ExitCode, res.Err, res.TimedOut)
	}
}

func TestHooksMatchEventAndService(t *testing.T) {
	dir := t.TempDir()
	mark := script(t, dir, "mark.sh", `echo "$1 $RPI_EVENT $RPI_NODE_NAME" >> "`+filepath.Join(dir, "log")+`"`)
	r := newRunner(t, Config{Hooks: []Hook{
		{Event: MemberFailed, Service: "nginx_webserver", Command: mark + " web-failed"},
		{Event: MemberFailed, Service: "postgres", Command: mark + " db-failed"},
		{Event: MemberJoin, Command: mark + " joined"},
		{Event: Any, Command: mark + " any"},
	}})
	ev := failedEvent()
	r.Run(context.Background(), ev)
	ev.Type, ev.Node.Name, ev.Node.Services = MemberJoin, "pi-3", nil
	r.Run(context.Background(), ev)
	ev.Type = MemberFailed
	r.Run(context.Background(), ev)

	log, _ := os.ReadFile(filepath.Join(dir, "log"))
	want := "web-failed member-failed pi-2\nany member-failed pi-2\n" +
		"joined member-join pi-3\nany member-join pi-3\n" +
		"any member-failed pi-3\n"
	if string(log) != want {
		t.Fatalf("ran:\n%s\nwant:\n%s", log, want)
	}
}

func TestSubmitShapesTheEventStream(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "log")
	mark := script(t, dir, "mark.sh", `echo "$RPI_EVENT $RPI_NODE_NAME $RPI_NODE_SERVICES" >> "`+logPath+`"`)
	r := newRunner(t, Config{Hooks: []Hook{{Event: Any, Command: mark}}})
	r.Start()

	node := func(name string, services ...string) Node {
		return Node{Name: name, Address: "10.0.0.9", GossipPort: 7946, Status: "alive", Services: services}
	}
	for _, ev := range []Event{
		{Type: MemberUpdate, Node: node("self", "a"), HasRecord: true},         // baseline only
		{Type: MemberJoin, Node: node("pi-9")},                                 // held: no record yet
		{Type: MemberUpdate, Node: node("pi-9", "web"), HasRecord: true},       // delivered as the join
		{Type: MemberUpdate, Node: node("pi-9", "web"), HasRecord: true},       // a monitoring sample: nothing
		{Type: MemberUpdate, Node: node("pi-9", "web", "lb"), HasRecord: true}, // services changed
		{Type: MemberUpdate, Node: node("self", "a", "b"), HasRecord: true},    // self changed
		{Type: MemberFailed, Node: node("pi-9", "web", "lb"), HasRecord: true},
		{Type: MemberJoin, Node: node("pi-9", "web", "lb"), HasRecord: true}, // back with its record
	} {
		if !r.Submit(ev) {
			t.Fatalf("Submit(%+v) dropped the event", ev)
		}
	}
	want := "member-join pi-9 web\nmember-update pi-9 web,lb\nmember-update self a,b\n" +
		"member-failed pi-9 web,lb\nmember-join pi-9 web,lb\n"
	testutil.WaitFor(t, 10*time.Second, func() error {
		log, _ := os.ReadFile(logPath)
		if string(log) != want {
			return fmt.Errorf("ran:\n%s\nwant:\n%s", log, want)
		}
		// The last run is counted once its script has exited.
		if s := r.Stats(); s.Queued != 5 || s.Dropped != 0 || s.Runs != 5 {
			return fmt.Errorf("stats %+v, want 5 queued and run", s)
		}
		return nil
	})
}

func TestFullQueueDropsAndShutdownKillsTheRunningHook(t *testing.T) {
	dir := t.TempDir()
	startedPath := filepath.Join(dir, "started")
	sh := script(t, dir, "block.sh", `echo x >> "`+startedPath+`"; exec sleep 60`)
	r := newRunner(t, Config{Hooks: []Hook{{Event: MemberFailed, Command: sh}}, QueueSize: 2})
	r.Start()
	// The first event occupies the worker; then two fit in the queue.
	r.Submit(failedEvent())
	testutil.WaitFor(t, 10*time.Second, func() error {
		if _, err := os.Stat(startedPath); err != nil {
			return errors.New("the first handler has not started")
		}
		return nil
	})
	var accepted, dropped int
	for range 10 {
		if r.Submit(failedEvent()) {
			accepted++
		} else {
			dropped++
		}
	}
	if accepted != 2 || dropped != 8 || r.Stats().Dropped != 8 {
		t.Fatalf("accepted %d, dropped %d (stats %+v); want 2 and 8", accepted, dropped, r.Stats())
	}

	start := time.Now()
	r.Shutdown()
	r.Shutdown() // idempotent
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("Shutdown took %v: the running handler was not killed", took)
	}
	if data, _ := os.ReadFile(startedPath); string(data) != "x\n" {
		t.Fatalf("handlers started after Shutdown: %q", data)
	}
	if r.Submit(failedEvent()) {
		t.Fatal("Submit after Shutdown accepted the event")
	}
}

func TestInvalidHooksAreNamed(t *testing.T) {
	for _, tc := range []struct {
		hook Hook
		want string
	}{
		{Hook{Event: "member-joined", Command: "/bin/true"}, `event handler 2 (/bin/true): unknown event "member-joined"`},
		{Hook{Event: "", Command: "/bin/true"}, "event is missing"},
		{Hook{Event: MemberJoin, Command: "  "}, "command is empty"},
		{Hook{Event: MemberJoin, Service: "Web/../x", Command: "/bin/true"}, "service: invalid service name"},
	} {
		_, err := New(Config{Hooks: []Hook{{Event: MemberLeave, Command: "/bin/true"}, tc.hook}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want an error containing %q", tc.hook, err, tc.want)
		}
	}
}

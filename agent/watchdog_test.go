package agent

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// A stuck monitor loop or cluster lock stops the beats; the watchdog then
// sends systemd the reason instead of the ping, and pings again once the
// beats resume.
func TestWatchdogFeedsOnlyWhileHealthy(t *testing.T) {
	next := testutil.NotifySocket(t, filepath.Join(t.TempDir(), "notify"))
	w := newWatchdog(time.Second, slog.New(slog.NewTextHandler(tlogWriter{t}, nil)))
	tick := make(chan time.Time)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.run(ctx, tick) }()
	defer func() { cancel(); <-done }()

	tick <- time.Now()
	if got := next(); got != "WATCHDOG=1" {
		t.Fatalf("fresh beat: sent %q, want WATCHDOG=1", got)
	}
	tick <- time.Now().Add(w.stale + time.Second) // no beat since
	if got := next(); !strings.HasPrefix(got, "STATUS=unhealthy: no monitoring sample recorded") || strings.Contains(got, "WATCHDOG=1") {
		t.Fatalf("stale beat: sent %q, want the reason and no ping", got)
	}
	w.beat()
	tick <- time.Now()
	if got := next(); got != "STATUS=\nWATCHDOG=1" {
		t.Fatalf("beats resumed: sent %q, want the status cleared and a ping", got)
	}
}

func TestWatchdogStaleLimit(t *testing.T) {
	if w := newWatchdog(500*time.Millisecond, slog.Default()); w.stale != 15*time.Second {
		t.Errorf("monitor every 500ms: stale after %v, want the 15s floor", w.stale)
	}
	if w := newWatchdog(time.Minute, slog.Default()); w.stale != 3*time.Minute {
		t.Errorf("monitor every minute: stale after %v, want three intervals", w.stale)
	}
}

// Under systemd the agent says READY=1 once it listens, then feeds the
// watchdog at a third of WATCHDOG_USEC.
func TestAgentNotifiesSystemd(t *testing.T) {
	next := testutil.NotifySocket(t, filepath.Join(t.TempDir(), "notify"))
	t.Setenv("WATCHDOG_USEC", "300000")
	t.Setenv("WATCHDOG_PID", "")
	a := startAgent(t, 61, nil)
	if got := next(); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	for range 3 {
		if got := next(); got != "WATCHDOG=1" {
			t.Fatalf("notification %q, want WATCHDOG=1", got)
		}
	}
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
}

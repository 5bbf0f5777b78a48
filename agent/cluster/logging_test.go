package cluster

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// memberlist's lines about suspicions reach an info-level log; the rest
// only a debug-level one.
func TestMemberlistLogLevels(t *testing.T) {
	lines := map[string]string{
		"[INFO] memberlist: Suspect n2 has failed, no acks received":                              "INFO",
		"[INFO] memberlist: Marking n2 as failed, suspect timeout reached (0 peer confirmations)": "INFO",
		"[WARN] memberlist: Refuting a suspect message (from: n3)":                                "INFO",
		"[WARN] memberlist: Refuting a dead message (from: n3)":                                   "INFO",
		"[DEBUG] memberlist: Stream connection from=127.0.0.1:5000":                               "DEBUG",
		"[ERR] memberlist: Failed to send gossip to 127.0.0.1:7946: timeout":                      "DEBUG",
	}
	for _, min := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var out bytes.Buffer
		l := newMemberlistLogger(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: min})), nil)
		for line := range lines {
			l.Print(line)
		}
		for line, want := range lines {
			text := line[strings.Index(line, "memberlist: ")+len("memberlist: "):]
			got := ""
			for _, o := range strings.Split(out.String(), "\n") {
				if strings.Contains(o, text) {
					got = o
				}
			}
			shown := want == "INFO" || min == slog.LevelDebug
			switch {
			case shown && !strings.Contains(got, " level="+want+" "):
				t.Errorf("log at %v: %q came out as %q, want level %s", min, line, got, want)
			case !shown && got != "":
				t.Errorf("log at %v: %q came out as %q, want nothing", min, line, got)
			}
		}
	}
}

// memberlist's drops of received messages are counted whatever the log
// level, since it says so only in its log.
func TestMemberlistLogCountsDroppedMessages(t *testing.T) {
	var dropped atomic.Uint64
	l := newMemberlistLogger(slog.New(slog.DiscardHandler), &dropped)
	l.Print("[WARN] memberlist: handler queue full, dropping message (8) from=127.0.0.1:7946")
	l.Print("[WARN] memberlist: handler queue full, dropping message (2) from=127.0.0.2:7946")
	l.Print("[WARN] memberlist: Refuting a suspect message (from: n3)")
	if n := dropped.Load(); n != 2 {
		t.Fatalf("counted %d dropped messages, want 2", n)
	}
}

// A node whose packet handler cannot keep up has memberlist drop what it
// receives; the drops are counted and make the node's next round late.
func TestMemberlistDropsAreCountedAndDegrade(t *testing.T) {
	a := startNode(t, "dr1", "127.0.1.231")
	b := startNode(t, "dr2", "127.0.1.232")
	formCluster(t, a, b)
	// While a's member lock is held its handler stalls on the first
	// heartbeat, and the rest fill memberlist's queue (1,024 deep): send
	// until memberlist drops some (the kernel may drop some first), then
	// let go of the lock before anything can fail.
	msg := encodeHeartbeat("dr2", addr(b), 1, time.Second)
	to := memberNode("dr1", "127.0.1.231", int(a.ml.Load().LocalNode().Port))
	deadline := time.Now().Add(waitTimeout)
	a.mu.Lock()
	var err error
	for a.handoffDrops.Load() == 0 && err == nil && time.Now().Before(deadline) {
		err = b.ml.Load().SendBestEffort(to, msg)
	}
	dropped := a.handoffDrops.Load()
	a.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if dropped == 0 {
		t.Fatalf("memberlist dropped nothing in %v with its handler stalled", waitTimeout)
	}
	testutil.WaitFor(t, waitTimeout, func() error {
		s := a.Stats()
		if s.HandoffDrops == 0 || s.Health.LateRounds["receive"] == 0 {
			return fmt.Errorf("%d messages dropped, %d rounds late on receive: want both counted", s.HandoffDrops, s.Health.LateRounds["receive"])
		}
		return nil
	})
}

package cluster

import (
	"bytes"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
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

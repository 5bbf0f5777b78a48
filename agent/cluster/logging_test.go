package cluster

import (
	"bytes"
	"log/slog"
	"strings"
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
		l := newMemberlistLogger(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: min})))
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

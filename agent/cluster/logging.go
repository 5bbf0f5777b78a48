package cluster

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"sync/atomic"
)

// memberlistLog adapts memberlist's *log.Logger output ("[WARN] memberlist:
// text") to slog, keeping memberlist's own level as memberlist_level.
// memberlist is chatty about routine events (probe failures during a
// partition, rejected packets), and this package logs what operators need
// in its own words, so its lines go out at debug level, except the life of
// a suspicion (a peer suspected, declared failed, or this node refuting
// one), which explains every failure verdict and goes out at info.
//
// It also counts the messages memberlist dropped because its handler
// queue was full (dropped may be nil): memberlist has no other way to say
// so, and a node that drops what it receives may be dropping heartbeats.
type memberlistLog struct {
	logger  *slog.Logger
	dropped *atomic.Uint64
}

func newMemberlistLogger(l *slog.Logger, dropped *atomic.Uint64) *log.Logger {
	return log.New(memberlistLog{l.With("component", "memberlist"), dropped}, "", 0)
}

// queueFull is memberlist's line for a received message dropped because
// its handler queue (HandoffQueueDepth) was full.
var queueFull = []byte("handler queue full, dropping message")

// suspicionLines start memberlist's messages about suspicions.
var suspicionLines = [][]byte{
	[]byte("Suspect "),            // its probes of a peer went unanswered
	[]byte("Marking "),            // a suspicion of a peer ran out
	[]byte("Refuting a suspect "), // this node was suspected
	[]byte("Refuting a dead "),    // this node was declared failed
}

func (w memberlistLog) Write(p []byte) (int, error) {
	if w.dropped != nil && bytes.Contains(p, queueFull) {
		w.dropped.Add(1)
	}
	ctx := context.Background()
	if !w.logger.Enabled(ctx, slog.LevelInfo) { // nor, then, debug
		return len(p), nil
	}
	line := bytes.TrimSpace(p)
	level := ""
	if len(line) > 0 && line[0] == '[' {
		if end := bytes.IndexByte(line, ']'); end > 0 {
			level = string(line[1:end])
			line = bytes.TrimSpace(line[end+1:])
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	to := slog.LevelDebug
	for _, prefix := range suspicionLines {
		if bytes.HasPrefix(line, prefix) {
			to = slog.LevelInfo
			break
		}
	}
	if w.logger.Enabled(ctx, to) {
		w.logger.Log(ctx, to, string(line), "memberlist_level", level)
	}
	return len(p), nil
}

// discardLogger is used when Config.Logger is nil.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

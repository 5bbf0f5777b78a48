package cluster

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// memberlistLog adapts memberlist's *log.Logger output ("[WARN] memberlist:
// text") to slog at debug level, keeping memberlist's own level as an
// attribute. memberlist is chatty about routine events (refutations, probe
// failures during a partition); this package logs what operators need.
type memberlistLog struct{ logger *slog.Logger }

func newMemberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(memberlistLog{l.With("component", "memberlist")}, "", 0)
}

func (w memberlistLog) Write(p []byte) (int, error) {
	if !w.logger.Enabled(context.Background(), slog.LevelDebug) {
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
	w.logger.Debug(string(line), "level", level)
	return len(p), nil
}

// discardLogger is used when Config.Logger is nil.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/sdnotify"
)

// watchdog tells systemd (rpi-agent.service is Type=notify) when the agent
// is up, and feeds the unit's watchdog only while the agent's own loops are
// alive: a hung agent stops the feeding and systemd restarts it. The beat
// is the monitor loop putting a sample into the gossiped record, which needs
// the monitor's goroutine and the cluster's state lock both working.
type watchdog struct {
	// last is when the last sample was recorded, in Unix nanoseconds.
	last atomic.Int64
	// stale is how old the last beat may be while the agent counts as
	// healthy: three monitor intervals, at least 15 s.
	stale  time.Duration
	logger *slog.Logger
}

func newWatchdog(monitorInterval time.Duration, logger *slog.Logger) *watchdog {
	w := &watchdog{stale: max(3*monitorInterval, 15*time.Second), logger: logger}
	w.beat()
	return w
}

// beat records that the agent's loops just did their work. Safe for
// concurrent use.
func (w *watchdog) beat() { w.last.Store(time.Now().UnixNano()) }

// healthy returns why the agent is not healthy at now, nil when it is.
func (w *watchdog) healthy(now time.Time) error {
	if age := now.Sub(time.Unix(0, w.last.Load())); age > w.stale {
		return fmt.Errorf("no monitoring sample recorded for %v (limit %v): the monitor loop or the cluster state is stuck", age.Round(time.Second), w.stale)
	}
	return nil
}

// start sends READY=1 and, when systemd set a watchdog on the unit, feeds
// it from a goroutine that ends with ctx.
func (w *watchdog) start(ctx context.Context, wg *sync.WaitGroup) {
	if ok, err := sdnotify.Notify(sdnotify.Ready); err != nil {
		w.logger.Warn("cannot tell systemd the agent is ready", "err", err)
	} else if ok {
		w.logger.Debug("told systemd the agent is ready")
	}
	interval, err := sdnotify.WatchdogInterval()
	if err != nil {
		w.logger.Warn("systemd watchdog not fed", "err", err)
		return
	}
	if interval == 0 {
		return
	}
	w.logger.Info("feeding the systemd watchdog", "timeout", interval, "stale_after", w.stale)
	// Three pings per timeout: one late ping is not yet a restart.
	t := time.NewTicker(interval / 3)
	wg.Go(func() {
		defer t.Stop()
		w.run(ctx, t.C)
	})
}

// run sends WATCHDOG=1 on every tick while the agent is healthy, and the
// reason it is not (STATUS=, shown by `systemctl status`) instead of the
// ping while it is not, until ctx ends.
func (w *watchdog) run(ctx context.Context, tick <-chan time.Time) {
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick:
			state := sdnotify.Watchdog
			if err := w.healthy(now); err != nil {
				if !failing {
					w.logger.Error("agent unhealthy: not feeding the systemd watchdog", "err", err)
				}
				failing = true
				state = "STATUS=unhealthy: " + err.Error()
			} else if failing {
				w.logger.Info("agent healthy again: feeding the systemd watchdog")
				failing = false
				state = "STATUS=\n" + sdnotify.Watchdog
			}
			if _, err := sdnotify.Notify(state); err != nil {
				w.logger.Debug("systemd watchdog", "err", err)
			}
		}
	}
}

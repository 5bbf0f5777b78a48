package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// DefaultRetryInterval is the wait between RetryJoin attempts when none is
// given, as Consul's retry_interval.
const DefaultRetryInterval = 30 * time.Second

// RetryJoin joins the cluster through static addrs the way serf's and
// Consul's retry_join do: it calls join with all addrs, and if no address
// could be contacted waits interval and tries again, until one attempt
// contacts at least one peer, maxAttempts attempts have failed (0 means try
// forever) or ctx is done. It returns nil once joined, the last join error
// when attempts run out, and ctx's error when cancelled.
//
// interval <= 0 means DefaultRetryInterval; a nil logger means
// slog.Default().
func RetryJoin(ctx context.Context, addrs []string, interval time.Duration, maxAttempts int,
	join func([]string) (int, error), logger *slog.Logger) error {
	if len(addrs) == 0 {
		return errors.New("retry join: no addresses given")
	}
	if join == nil {
		return errors.New("retry join: no join function given")
	}
	if maxAttempts < 0 {
		return fmt.Errorf("retry join: max attempts %d is negative (0 means forever)", maxAttempts)
	}
	if interval <= 0 {
		interval = DefaultRetryInterval
	}
	if logger == nil {
		logger = slog.Default()
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for attempt := 1; ; attempt++ {
		select {
		case <-ctx.Done():
			return fmt.Errorf("retry join %v: %w", addrs, ctx.Err())
		case <-t.C:
		}
		n, err := join(addrs)
		if n > 0 {
			if err != nil {
				logger.Info("joined cluster, some addresses failed", "addrs", addrs, "contacted", n, "attempt", attempt, "err", err)
			} else {
				logger.Info("joined cluster", "addrs", addrs, "contacted", n, "attempt", attempt)
			}
			return nil
		}
		if err == nil {
			err = errors.New("no address answered")
		}
		if maxAttempts > 0 && attempt >= maxAttempts {
			return fmt.Errorf("retry join %v: gave up after %d attempts: %w", addrs, attempt, err)
		}
		logger.Warn("join failed, will retry", "addrs", addrs, "attempt", attempt, "in", interval, "err", err)
		t.Reset(interval)
	}
}

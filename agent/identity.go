package agent

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/identity"
)

// PinsFile is the name of the pinned peer keys inside the data dir.
const PinsFile = "pins.json"

// pinsFlushInterval is how often pins learnt from gossip are saved. Pins
// change in memory on the gossip path, which must not wait for a disk;
// a crash loses at most this much of what was learnt, and the lost pins
// are learnt again on first sight.
const pinsFlushInterval = 10 * time.Second

// loadIdentity loads this node's signing key from dataDir, making it on
// first start, and the pins of its peers' keys.
func loadIdentity(dataDir string, logger *slog.Logger) (*identity.Key, *identity.Pins, error) {
	key, created, err := identity.LoadOrCreate(dataDir)
	if err != nil {
		return nil, nil, err
	}
	if created {
		logger.Info("made this node's signing key", "path", filepath.Join(dataDir, identity.KeyFile), "fingerprint", identity.Fingerprint(key.Public()))
	}
	pins, err := identity.OpenPins(filepath.Join(dataDir, PinsFile))
	if err != nil {
		return nil, nil, fmt.Errorf("%w (the agent refuses to start rather than trust every key again)", err)
	}
	return key, pins, nil
}

// flushPins saves the pins every pinsFlushInterval until ctx ends.
func (a *Agent) flushPins(ctx context.Context) {
	t := time.NewTicker(pinsFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.pins.Flush(); err != nil {
				a.logger.Error("cannot save pinned node keys", "err", err)
			}
		}
	}
}

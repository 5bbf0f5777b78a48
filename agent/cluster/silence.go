package cluster

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/detector"
)

// The detector (agent/detector) reaches silence verdicts each heartbeat
// round; this file publishes them and carries the silence reports that
// make other nodes witnesses.

// verdictEventsLocked returns the fail event of each silence verdict of
// this round, in order, and recounts the alive peers.
func (c *Cluster) verdictEventsLocked(verdicts []detector.Verdict, now time.Time) []Event {
	if len(verdicts) == 0 {
		return nil
	}
	c.silenceVerdicts.Add(uint64(len(verdicts)))
	c.recountLocked()
	events := make([]Event, 0, len(verdicts))
	for _, v := range verdicts {
		events = append(events, c.goneEventLocked(v.Name, c.peers[v.Name], now, CauseSilence, v.Witness))
	}
	return events
}

// reportSilence logs and publishes the verdicts of a round, with their
// events from verdictEventsLocked.
func (c *Cluster) reportSilence(verdicts []detector.Verdict, events []Event) {
	for i, v := range verdicts {
		c.logger.Info("no heartbeat from a node, and a peer finds it silent too; failing it ahead of memberlist",
			"peer", v.Name, "silent", v.Silent.Round(time.Millisecond), "witness", v.Witness)
		c.reportGone(events[i])
	}
}

// handleSilent records a peer's report of the nodes it finds silent: the
// reporter is their witness. Reports from nodes not alive here, and about
// this node or the reporter itself, are ignored.
func (c *Cluster) handleSilent(from string, names []string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w := c.peers[from]; w == nil || !w.state().IsAlive() {
		return
	}
	for _, name := range names {
		if name == from || name == c.conf.NodeName {
			continue
		}
		if p := c.peers[name]; p != nil {
			c.det.Witnessed(&p.live, from, now)
		}
	}
}

// encodeNames builds a msgSilent or msgVerdict: the sender's name, then the
// names of the peers it finds silent or has failed, each prefixed with its
// length.
func encodeNames(typ byte, from string, names []string) []byte {
	b := make([]byte, 0, 2+len(from)+detector.MaxSilentReport)
	b = append(b, typ)
	b = binary.AppendUvarint(b, uint64(len(from)))
	b = append(b, from...)
	for _, n := range names {
		b = binary.AppendUvarint(b, uint64(len(n)))
		b = append(b, n...)
	}
	return b
}

// decodeNames parses the body of a msgSilent or msgVerdict (without the
// type byte).
func decodeNames(body []byte) (from string, names []string, err error) {
	for len(body) > 0 {
		n, k := binary.Uvarint(body)
		if k <= 0 || n == 0 || n > uint64(len(body)-k) {
			return "", nil, fmt.Errorf("decode names: bad name: %w", errMalformed)
		}
		name := string(body[k : k+int(n)])
		body = body[k+int(n):]
		if from == "" {
			from = name
		} else {
			names = append(names, name)
		}
	}
	if from == "" {
		return "", nil, fmt.Errorf("decode names: no sender: %w", errMalformed)
	}
	return from, names, nil
}

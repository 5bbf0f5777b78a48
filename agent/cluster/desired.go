package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
)

// Desired is how many replicas of a service the cluster should run. Every
// node holds the whole desired table; it travels as broadcasts (one per
// change) and in push-pull state, so it survives the loss of any node and
// reaches nodes that join later or come back from a partition.
//
// Entries are never deleted: lowering a service to 0 replicas keeps the
// entry as a tombstone, so an older positive count still circulating in the
// cluster cannot bring the service back.
type Desired struct {
	Service  string `json:"s"`
	Replicas int    `json:"r"`
	// Version orders the writes of a service. It is a hybrid clock: the
	// writer's wall clock in Unix nanoseconds, or one past the highest
	// version this node has seen when that is ahead, so a write always
	// supersedes every write its node knew of, even with a clock behind.
	Version uint64 `json:"v"`
	// UpdatedBy is the node that wrote the entry; it breaks ties between
	// two writes of the same version.
	UpdatedBy string    `json:"b"`
	UpdatedAt time.Time `json:"t"`
	// WriterKey is the writer's public signing key, which signed the
	// entry. It travels with the entry because entries outlive their
	// writers: a node joining later checks it against the key pinned for
	// UpdatedBy when it has one.
	WriterKey []byte `json:"pk,omitempty"`
}

// maxDesiredAhead bounds how far ahead of the receiver's wall clock a
// desired entry's version may be. Versions are clocks, so without a bound
// one entry at 2^64-1 would outrank every later write for good (the
// writer's signature proves who wrote it, not that the count is sane).
// An entry beyond the bound is refused; push-pull offers it again, so an
// honest entry from a node whose clock runs ahead is taken once the
// receiver's clock has caught up. Ten minutes is far beyond the skew of
// NTP-synchronised Pis, and a Pi without NTP yet runs behind, not ahead
// (it has no RTC), which the hybrid clock of changeDesired already covers.
const maxDesiredAhead = 10 * time.Minute

// newer reports whether d wins over o: last writer wins, by Version and
// then by UpdatedBy, so every node picks the same winner.
func (d Desired) newer(o Desired) bool {
	if d.Version != o.Version {
		return d.Version > o.Version
	}
	return d.UpdatedBy > o.UpdatedBy
}

// Limits of the desired table.
const (
	// MaxReplicas bounds a desired replica count; anything larger is a typo.
	MaxReplicas = 10000
	// maxDesired bounds the services held, tombstones included, so a
	// misbehaving peer cannot grow the table without limit.
	maxDesired = 4096
)

// ErrTooManyServices is returned when the desired table is full.
var ErrTooManyServices = errors.New("desired state table is full")

// SetDesired records that service should run replicas replicas (0 keeps
// a tombstone) and gossips the change. It returns the stored entry.
func (c *Cluster) SetDesired(service string, replicas int) (Desired, error) {
	return c.changeDesired("set desired", service, func(int) int { return replicas })
}

// AddDesired adds delta (negative lowers it) to service's desired replica
// count, never going below 0, and gossips the change. An unknown service
// starts from 0.
//
// The sum is computed from this node's view: two AddDesired calls made at
// the same moment on two nodes that have not yet heard of each other's
// write do not add up; the last writer wins, and every node converges on
// that one value.
func (c *Cluster) AddDesired(service string, delta int) (Desired, error) {
	return c.changeDesired("add desired", service, func(cur int) int {
		// Clamping delta keeps the sum from overflowing; a sum past
		// MaxReplicas is still refused.
		return max(0, cur+max(-MaxReplicas-1, min(delta, MaxReplicas+1)))
	})
}

func (c *Cluster) changeDesired(op, service string, next func(cur int) int) (Desired, error) {
	if err := checkServiceName(service); err != nil {
		return Desired{}, fmt.Errorf("%s: %w", op, err)
	}
	c.desiredMu.Lock()
	cur, exists := c.desired[service]
	if !exists && len(c.desired) >= maxDesired {
		c.desiredMu.Unlock()
		return Desired{}, fmt.Errorf("%s %s: %w (%d services)", op, service, ErrTooManyServices, maxDesired)
	}
	replicas := next(cur.Replicas)
	if replicas < 0 || replicas > MaxReplicas {
		c.desiredMu.Unlock()
		return Desired{}, fmt.Errorf("%s %s: %d replicas: want 0 to %d", op, service, replicas, MaxReplicas)
	}
	now := time.Now()
	c.desiredClock = max(c.desiredClock+1, uint64(now.UnixNano()))
	d := Desired{Service: service, Replicas: replicas, Version: c.desiredClock, UpdatedBy: c.conf.NodeName, UpdatedAt: now.UTC(), WriterKey: c.pub}
	body, err := json.Marshal(d)
	if err != nil {
		c.desiredMu.Unlock()
		return Desired{}, fmt.Errorf("%s %s: encode: %w", op, service, err)
	}
	signed := seal(c.key, identity.PurposeDesired, body)
	c.desired[service] = d
	c.desiredSealed[service] = signed
	c.desiredMu.Unlock()

	c.queueDesired(service, signed)
	c.logger.Info("desired state changed", "service", service, "replicas", replicas, "was", cur.Replicas, "version", d.Version)
	c.publish(Event{Type: EventDesired, Desired: d, Time: now})
	return d, nil
}

// Desired returns the desired state of every service ever set, tombstones
// (0 replicas) included, sorted by service name.
func (c *Cluster) Desired() []Desired {
	c.desiredMu.Lock()
	out := make([]Desired, 0, len(c.desired))
	for _, d := range c.desired {
		out = append(out, d)
	}
	c.desiredMu.Unlock()
	slices.SortFunc(out, func(a, b Desired) int { return strings.Compare(a.Service, b.Service) })
	return out
}

// DesiredFor returns the desired state of one service; false if it was
// never set.
func (c *Cluster) DesiredFor(service string) (Desired, bool) {
	c.desiredMu.Lock()
	defer c.desiredMu.Unlock()
	d, ok := c.desired[service]
	return d, ok
}

// queueDesired broadcasts a signed entry of service, replacing any queued
// older entry of it. Entries queued before Start go out once gossip runs.
func (c *Cluster) queueDesired(service string, signed []byte) {
	c.broadcasts.QueueBroadcast(&namedBroadcast{key: desiredKey(service), msg: append([]byte{msgDesired}, signed...)})
}

// handleSignedDesired checks a signed entry (signature ‖ JSON, kept as it
// is) received by gossip (relay true: pass it on when it was news) or
// push-pull, and applies it. An entry breaking the naming rules, versioned
// more than maxDesiredAhead ahead of this node's clock, not signed by the
// key it carries, or carrying another key than the one pinned for its
// writer is dropped and counted. Older and duplicate entries are ignored
// before their signature is checked, which also ends their relaying.
func (c *Cluster) handleSignedDesired(signed []byte, relay bool) {
	d, sig, body, err := decodeDesired(signed)
	if err != nil {
		c.dropMalformed(err)
		return
	}
	if err := apitypes.ValidateServiceName(d.Service); err != nil {
		c.dropRejected(d.UpdatedBy, reject(rejectInvalidService, "desired entry by %s: %w", apitypes.Quote(d.UpdatedBy), err))
		return
	}
	if rj := checkNodeName("desired entry writer", d.UpdatedBy); rj != nil {
		c.dropRejected(d.UpdatedBy, rj)
		return
	}
	now := time.Now()
	if limit := uint64(now.Add(maxDesiredAhead).UnixNano()); d.Version > limit {
		c.dropRejected(d.UpdatedBy, reject(rejectClockAhead, "desired entry of %s by %s: version %d is %s past this node's clock, more than the %s allowed",
			d.Service, d.UpdatedBy, d.Version, time.Duration(min(d.Version-uint64(now.UnixNano()), math.MaxInt64)).Round(time.Second), maxDesiredAhead))
		return
	}
	c.desiredMu.Lock()
	cur, exists := c.desired[d.Service]
	c.desiredMu.Unlock()
	if exists && !d.newer(cur) {
		c.desiredMu.Lock()
		c.desiredClock = max(c.desiredClock, d.Version)
		c.desiredMu.Unlock()
		return
	}
	if !identity.Verify(d.WriterKey, identity.PurposeDesired, body, sig) {
		c.dropRejected(d.UpdatedBy, reject(rejectBadSignature, "desired entry of %s by %s: %w", d.Service, d.UpdatedBy, identity.ErrBadSignature))
		return
	}
	c.mu.Lock()
	rj := c.checkPinnedLocked(d.UpdatedBy, d.WriterKey, false, now)
	c.mu.Unlock()
	if rj != nil {
		c.dropRejected(d.UpdatedBy, rj)
		return
	}
	c.handleDesired(d, signed, relay)
}

// handleDesired applies a checked entry (see handleSignedDesired).
func (c *Cluster) handleDesired(d Desired, signed []byte, relay bool) {
	c.desiredMu.Lock()
	// Whatever wins, this node has now seen the version: its next write
	// must outrank it.
	c.desiredClock = max(c.desiredClock, d.Version)
	cur, exists := c.desired[d.Service]
	if exists && !d.newer(cur) {
		c.desiredMu.Unlock()
		return
	}
	if !exists && len(c.desired) >= maxDesired {
		c.desiredMu.Unlock()
		c.logger.Warn("desired state table full; ignoring a service", "service", d.Service, "limit", maxDesired)
		return
	}
	c.desired[d.Service] = d
	c.desiredSealed[d.Service] = signed
	c.desiredMu.Unlock()

	if relay {
		c.queueDesired(d.Service, signed)
	}
	c.logger.Debug("desired state learnt", "service", d.Service, "replicas", d.Replicas, "by", d.UpdatedBy, "version", d.Version)
	c.publish(Event{Type: EventDesired, Desired: d, Time: time.Now()})
}

// desiredState returns the signed table for a push-pull exchange.
func (c *Cluster) desiredState() [][]byte {
	c.desiredMu.Lock()
	defer c.desiredMu.Unlock()
	out := make([][]byte, 0, len(c.desiredSealed))
	for _, signed := range c.desiredSealed {
		out = append(out, signed)
	}
	return out
}

func desiredKey(service string) string { return "d/" + service }

// checkServiceName applies the one service name rule to a local write.
func checkServiceName(s string) error { return apitypes.ValidateServiceName(s) }

// decodeDesired parses the body of a msgDesired (without the type byte):
// signature ‖ JSON. It checks the shape, not the signature.
func decodeDesired(signed []byte) (d Desired, sig, body []byte, err error) {
	if len(signed) > maxRecordSize {
		return d, nil, nil, fmt.Errorf("decode desired state: %d bytes: %w", len(signed), errMalformed)
	}
	if sig, body, err = unseal("desired state", signed); err != nil {
		return d, nil, nil, err
	}
	if err := json.Unmarshal(body, &d); err != nil {
		return d, nil, nil, fmt.Errorf("decode desired state: %w: %w", errMalformed, err)
	}
	if err := checkDesired(d); err != nil {
		return d, nil, nil, fmt.Errorf("decode desired state: %w", err)
	}
	return d, sig, body, nil
}

func checkDesired(d Desired) error {
	if d.Replicas < 0 || d.Replicas > MaxReplicas {
		return fmt.Errorf("desired state of %s: %d replicas: %w", d.Service, d.Replicas, errMalformed)
	}
	if d.Version == 0 || d.UpdatedBy == "" {
		return fmt.Errorf("desired state of %s: no version or writer: %w", d.Service, errMalformed)
	}
	return nil
}

package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
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
}

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
	// maxServiceLen bounds service names, as the API's name rule does.
	maxServiceLen = 63
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
	d := Desired{Service: service, Replicas: replicas, Version: c.desiredClock, UpdatedBy: c.conf.NodeName, UpdatedAt: now.UTC()}
	c.desired[service] = d
	c.desiredMu.Unlock()

	c.queueDesired(d)
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

// queueDesired broadcasts d, replacing any queued older entry of its
// service. Entries queued before Start go out once gossip runs.
func (c *Cluster) queueDesired(d Desired) {
	msg, err := encodeJSON(msgDesired, d)
	if err != nil {
		c.logger.Error("cannot gossip desired state", "service", d.Service, "err", err)
		return
	}
	c.broadcasts.QueueBroadcast(&namedBroadcast{key: desiredKey(d.Service), msg: msg})
}

// handleDesired applies an entry received by gossip (relay true: pass it
// on when it was news) or push-pull. Older and duplicate entries are
// ignored, which also ends their relaying.
func (c *Cluster) handleDesired(d Desired, relay bool) {
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
	c.desiredMu.Unlock()

	if relay {
		c.queueDesired(d)
	}
	c.logger.Debug("desired state learnt", "service", d.Service, "replicas", d.Replicas, "by", d.UpdatedBy, "version", d.Version)
	c.publish(Event{Type: EventDesired, Desired: d, Time: time.Now()})
}

// desiredState returns the table for a push-pull exchange.
func (c *Cluster) desiredState() []Desired {
	c.desiredMu.Lock()
	defer c.desiredMu.Unlock()
	out := make([]Desired, 0, len(c.desired))
	for _, d := range c.desired {
		out = append(out, d)
	}
	return out
}

func desiredKey(service string) string { return "d/" + service }

// checkServiceName is the shape check done here; the API applies the full
// naming rule before calling in.
func checkServiceName(s string) error {
	if s == "" || len(s) > maxServiceLen {
		return fmt.Errorf("service name %q: want 1 to %d characters", s, maxServiceLen)
	}
	return nil
}

// decodeDesired parses the body of a msgDesired (without the type byte).
func decodeDesired(body []byte) (Desired, error) {
	var d Desired
	if len(body) > maxRecordSize {
		return d, fmt.Errorf("decode desired state: %d bytes: %w", len(body), errMalformed)
	}
	if err := json.Unmarshal(body, &d); err != nil {
		return d, fmt.Errorf("decode desired state: %w: %w", errMalformed, err)
	}
	if err := checkDesired(d); err != nil {
		return d, fmt.Errorf("decode desired state: %w", err)
	}
	return d, nil
}

func checkDesired(d Desired) error {
	if err := checkServiceName(d.Service); err != nil {
		return fmt.Errorf("%w: %w", err, errMalformed)
	}
	if d.Replicas < 0 || d.Replicas > MaxReplicas {
		return fmt.Errorf("desired state of %s: %d replicas: %w", d.Service, d.Replicas, errMalformed)
	}
	if d.Version == 0 || d.UpdatedBy == "" || len(d.UpdatedBy) > maxNameLen {
		return fmt.Errorf("desired state of %s: no version or writer: %w", d.Service, errMalformed)
	}
	return nil
}

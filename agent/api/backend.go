package api

import (
	"context"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// GossipStats are the transport counters the agent exposes on /metrics.
type GossipStats struct {
	MessagesSent     uint64
	MessagesReceived uint64
	BytesSent        uint64
	BytesReceived    uint64
	// EventsDropped counts events that subscribers (event streams, hooks)
	// were too slow to take.
	EventsDropped uint64
	// MessagesDropped counts received gossip messages memberlist dropped
	// because its handler queue was full: the agent could not keep up.
	MessagesDropped uint64
	// VerdictsOverruled counts memberlist failure verdicts on peers that
	// this agent set aside because the peer's heartbeat outlived the
	// suspicion; ReadvertisementsAsked counts peers' requests that this
	// agent re-advertise itself because they held it failed.
	VerdictsOverruled     uint64
	ReadvertisementsAsked uint64
	// SilenceVerdicts counts peers this agent failed itself because their
	// heartbeats fell silent and another peer found them silent too.
	SilenceVerdicts uint64
	// WatcherVerdicts counts peers this agent failed on the silence
	// verdict of one of their watchers, in clusters past the fast
	// heartbeat limit.
	WatcherVerdicts uint64
	// MembersReaped counts members removed from the agent's view: failed
	// or left for reap_failed_after or reap_left_after, or force-left.
	MembersReaped uint64
	// Rejected counts gossip the agent refused, by reason: invalid_name,
	// invalid_service, invalid_field, bad_signature, key_conflict,
	// unknown_key, clock_ahead.
	Rejected map[string]uint64
	// HealthScore is the agent's score of its own lateness, 0 (healthy)
	// to 8; above 0 it issues no silence verdicts.
	HealthScore int
	// LateRounds counts heartbeat rounds that ran late, by cause: timer,
	// send, receive.
	LateRounds map[string]uint64
	// VerdictsSuppressed counts silence verdicts held back while
	// degraded.
	VerdictsSuppressed uint64
	// SlipBuckets are the upper bounds of the timer slip histogram, in
	// multiples of the round's slack; SlipCounts the cumulative counts
	// for each; SlipCount and SlipSum the count and sum of all rounds.
	SlipBuckets []float64
	SlipCounts  []uint64
	SlipCount   uint64
	SlipSum     float64
}

// Backend is what the API serves from. The agent implements it on top of
// agent/cluster and agent/metadata; tests implement it with fakes. All methods
// are safe for concurrent use.
type Backend interface {
	// Self returns the answering node.
	Self() apitypes.Node
	// Nodes returns every known member, the answering node included, sorted
	// by name.
	Nodes() []apitypes.Node
	// AddService records service on this node's metadata and gossips it.
	// changed is false when the service was already there. service has
	// already been validated by the API.
	AddService(ctx context.Context, service string) (changed bool, err error)
	// RemoveService is the inverse of AddService.
	RemoveService(ctx context.Context, service string) (changed bool, err error)
	// Subscribe returns a channel of events and a function that cancels the
	// subscription and closes the channel. Slow subscribers lose events
	// rather than block the cluster.
	Subscribe() (<-chan apitypes.Event, func())
	// GossipStats returns the transport counters.
	GossipStats() GossipStats

	// Desired returns every service's desired replica count, sorted by
	// service, tombstones (0 replicas) included.
	Desired() []apitypes.DesiredService
	// DesiredFor returns one service's desired state; false when it was
	// never set.
	DesiredFor(service string) (apitypes.DesiredService, bool)
	// KeyConflicts returns the node names offered with another signing
	// key than the one pinned for them, oldest first.
	KeyConflicts() []apitypes.KeyConflict
	// Rekey pins name to the key it is being offered with (its conflict's
	// offered key). It returns ErrNoKeyConflict (wrapped) when there is no
	// conflict for name.
	Rekey(ctx context.Context, name string) (apitypes.KeyConflict, error)
	// ForceLeave removes a failed or left node from the view now and asks
	// the peers to do the same; it returns the node's last entry. It
	// returns ErrUnknownNode or ErrNodeAlive (wrapped) when the name is
	// not listed, or is alive (or this node itself).
	ForceLeave(ctx context.Context, name string) (apitypes.Node, error)

	// ChangeDesired applies a validated change (exactly one of Replicas and
	// Delta set, Replicas not negative) and gossips the result.
	ChangeDesired(ctx context.Context, service string, change apitypes.DesiredChange) (apitypes.DesiredService, error)
}

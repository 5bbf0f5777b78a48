package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
)

// Desired returns the desired replica count of every service ever set,
// tombstones (0 replicas) included, sorted by service name.
func (b backend) Desired() []apitypes.DesiredService {
	all := b.a.cluster.Desired()
	out := make([]apitypes.DesiredService, len(all))
	for i, d := range all {
		out[i] = toAPIDesired(d)
	}
	return out
}

// DesiredFor returns one service's desired state; false when it was never
// set (the API answers 404).
func (b backend) DesiredFor(service string) (apitypes.DesiredService, bool) {
	d, ok := b.a.cluster.DesiredFor(service)
	if !ok {
		return apitypes.DesiredService{}, false
	}
	return toAPIDesired(d), true
}

// ChangeDesired applies change to service's desired replica count and
// gossips it: exactly one of change.Replicas (an absolute count) and
// change.Delta (added to the current count, never going below 0) must be
// set. The result is what every node converges on unless a later write
// from elsewhere supersedes it.
func (b backend) ChangeDesired(_ context.Context, service string, change apitypes.DesiredChange) (apitypes.DesiredService, error) {
	if err := apitypes.ValidateServiceName(service); err != nil {
		return apitypes.DesiredService{}, fmt.Errorf("change desired: %w", err)
	}
	ch := cluster.DesiredChange{Policy: change.Policy, Rendered: change.Rendered}
	switch {
	case change.Replicas != nil && change.Delta != nil:
		return apitypes.DesiredService{}, errors.New("change desired: give either replicas or delta, not both")
	case change.Replicas != nil:
		n := *change.Replicas
		ch.Next = func(int) int { return n }
	case change.Delta != nil:
		delta := *change.Delta
		ch.Next = func(cur int) int {
			return max(0, cur+max(-cluster.MaxReplicas-1, min(delta, cluster.MaxReplicas+1)))
		}
	case change.Policy == nil && change.Rendered == nil:
		return apitypes.DesiredService{}, errors.New(`change desired: give "replicas" (a count), "delta" (a change to it), "policy" or "rendered"`)
	}
	d, err := b.a.cluster.ChangeDesired("change desired", service, ch)
	if err != nil {
		return apitypes.DesiredService{}, err
	}
	return toAPIDesired(d), nil
}

// toAPIDesired turns a cluster desired entry into the API's model.
func toAPIDesired(d cluster.Desired) apitypes.DesiredService {
	return apitypes.DesiredService{
		Service:   d.Service,
		Replicas:  d.Replicas,
		Version:   d.Version,
		UpdatedBy: d.UpdatedBy,
		UpdatedAt: d.UpdatedAt,
		Policy:    d.Policy,
		Rendered:  d.Rendered,
	}
}

// toAPIEvent turns a cluster event into an API event: desired-state
// changes carry the entry and no node.
func toAPIEvent(ev cluster.Event) apitypes.Event {
	if ev.Type == cluster.EventConflict && ev.Conflict != nil {
		k := toAPIConflict(*ev.Conflict)
		return apitypes.Event{Kind: apitypes.EventConflict, Time: ev.Time, Conflict: &k}
	}
	if ev.Type == cluster.EventDesired {
		d := toAPIDesired(ev.Desired)
		return apitypes.Event{Kind: apitypes.EventDesired, Time: ev.Time, Desired: &d}
	}
	return apitypes.Event{Kind: string(ev.Type), Node: toAPINode(ev.Member), Time: ev.Time, Cause: string(ev.Cause), By: ev.By}
}

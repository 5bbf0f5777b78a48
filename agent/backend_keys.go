package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/rpi-cluster/rpi-cluster/agent/api"
	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
)

func (b backend) KeyConflicts() []apitypes.KeyConflict {
	ks := b.a.cluster.KeyConflicts()
	out := make([]apitypes.KeyConflict, len(ks))
	for i, k := range ks {
		out[i] = toAPIConflict(k)
	}
	return out
}

func (b backend) Rekey(_ context.Context, name string) (apitypes.KeyConflict, error) {
	k, err := b.a.cluster.Rekey(name)
	if errors.Is(err, cluster.ErrNoKeyConflict) {
		return apitypes.KeyConflict{}, fmt.Errorf("%w: %w", api.ErrNoKeyConflict, err)
	}
	if err != nil {
		return apitypes.KeyConflict{}, err
	}
	return toAPIConflict(k), nil
}

func toAPIConflict(k cluster.KeyConflict) apitypes.KeyConflict {
	return apitypes.KeyConflict{
		Node:               k.Name,
		PinnedKey:          identity.EncodePublicKey(k.Pinned),
		PinnedFingerprint:  identity.Fingerprint(k.Pinned),
		OfferedKey:         identity.EncodePublicKey(k.Offered),
		OfferedFingerprint: identity.Fingerprint(k.Offered),
		FirstSeen:          k.FirstSeen,
		LastSeen:           k.LastSeen,
		Count:              k.Count,
	}
}

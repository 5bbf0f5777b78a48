package agent

import (
	"context"
	"errors"

	"github.com/rpi-cluster/rpi-cluster/agent/api"
	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
)

func (b backend) ForceLeave(_ context.Context, name string) (apitypes.Node, error) {
	m, err := b.a.cluster.ForceLeave(name)
	switch {
	case errors.Is(err, cluster.ErrUnknownMember):
		return apitypes.Node{}, apiError{api.ErrUnknownNode, err}
	case errors.Is(err, cluster.ErrMemberAlive):
		return apitypes.Node{}, apiError{api.ErrNodeAlive, err}
	case err != nil:
		return apitypes.Node{}, err
	}
	return toAPINode(m), nil
}

// apiError is a cluster error that also matches the API's sentinel, and
// reads as the cluster's, which already says what went wrong and what to do.
type apiError struct{ sentinel, err error }

func (e apiError) Error() string   { return e.err.Error() }
func (e apiError) Unwrap() []error { return []error{e.sentinel, e.err} }

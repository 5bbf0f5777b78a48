//go:build e2e

package e2e

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
)

// profileTimings are the failure-detection timings the tests derive their
// fault durations from.
type profileTimings struct {
	ProbeInterval, ProbeTimeout, AcceptablePause time.Duration
	SilenceTimeout                               time.Duration
	SuspicionMult, SuspicionMaxTimeoutMult       int
}

// lanProfile returns the timings of the lan profile, the one the image's
// agents run (their config sets no profile).
func lanProfile(t *testing.T) profileTimings {
	t.Helper()
	p, err := cluster.ProfileByName("lan")
	if err != nil {
		t.Fatal(err)
	}
	return profileTimings{
		ProbeInterval: p.ProbeInterval, ProbeTimeout: p.ProbeTimeout, AcceptablePause: p.Phi.AcceptablePause,
		SilenceTimeout: p.SilenceTimeout,
		SuspicionMult:  p.SuspicionMult, SuspicionMaxTimeoutMult: p.SuspicionMaxTimeoutMult,
	}
}

func decodeNodes(s string) ([]apitypes.Node, error) {
	var nodes []apitypes.Node
	err := json.Unmarshal([]byte(s), &nodes)
	return nodes, err
}

package agent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/api"
	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// getHistory reads an agent's GET /v1/history.
func getHistory(a *Agent) (apitypes.History, error) {
	var h apitypes.History
	resp, err := http.Get("http://" + a.HTTPAddr() + "/v1/history")
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return h, fmt.Errorf("GET /v1/history: %s", resp.Status)
	}
	return h, json.NewDecoder(resp.Body).Decode(&h)
}

// Every agent keeps every node's samples from the records it receives, and
// frees a node's history when the node is removed from the view.
func TestHistoryOfLiveCluster(t *testing.T) {
	// Each agent its own history of 20 s in 0.5 s slots.
	short := func() Option { return withHistory(api.NewHistory(20*time.Second, 40)) }
	seed := startAgent(t, 51, nil, short())
	agents := []*Agent{seed, startAgent(t, 52, joinTo(seed), short()), startAgent(t, 53, joinTo(seed), short())}
	waitAlive(t, agents, 3)

	testutil.WaitFor(t, 20*time.Second, func() error {
		h, err := getHistory(agents[1])
		if err != nil {
			return err
		}
		var names []string
		for _, n := range h.Nodes {
			if len(n.TimeMS) < 4 {
				return fmt.Errorf("%s has %d samples in node-52's history, want 4 or more", n.Name, len(n.TimeMS))
			}
			if len(n.CPUPercent) != len(n.TimeMS) || len(n.MemPercent) != len(n.TimeMS) || len(n.Load1) != len(n.TimeMS) || len(n.TempC) != len(n.TimeMS) {
				return fmt.Errorf("%s: lists of different lengths: %+v", n.Name, n)
			}
			if !slices.IsSorted(n.TimeMS) {
				return fmt.Errorf("%s: samples out of order: %v", n.Name, n.TimeMS)
			}
			names = append(names, n.Name)
		}
		if !slices.Equal(names, []string{"node-51", "node-52", "node-53"}) {
			return fmt.Errorf("node-52's history holds %q", names)
		}
		return nil
	})

	// node-53 dies; once it is failed, a force-leave removes it, and its
	// samples go with it.
	agents[2].Shutdown()
	testutil.WaitFor(t, 15*time.Second, func() error {
		for _, m := range seed.Cluster().Members() {
			if m.Name == "node-53" && m.Status == "failed" {
				return nil
			}
		}
		return fmt.Errorf("node-53 not failed yet")
	})
	// Failed first on its silence, it can be force-left once
	// memberlist's probes confirm it (409 until then).
	testutil.WaitFor(t, 15*time.Second, func() error {
		code, body := request(t, "POST", "http://"+seed.HTTPAddr()+"/v1/nodes/node-53/force-leave", "")
		if code != http.StatusOK {
			return fmt.Errorf("force-leave = %d %s", code, body)
		}
		return nil
	})
	testutil.WaitFor(t, 10*time.Second, func() error {
		h, err := getHistory(seed)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(h.Nodes, func(n apitypes.NodeHistory) bool { return n.Name == "node-53" }) {
			return fmt.Errorf("node-53's history still kept after force-leave")
		}
		return nil
	})
}

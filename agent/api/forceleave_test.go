package api

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

func (f *fakeBackend) ForceLeave(_ context.Context, name string) (apitypes.Node, error) {
	f.writes.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	i := slices.IndexFunc(f.nodes, func(n apitypes.Node) bool { return n.Name == name })
	switch {
	case i < 0:
		return apitypes.Node{}, fmt.Errorf("force-leave %s: %w", name, ErrUnknownNode)
	case name == f.self || f.nodes[i].Status == apitypes.StatusAlive:
		return apitypes.Node{}, fmt.Errorf("force-leave %s: %w: stop it first, or wait until it is failed", name, ErrNodeAlive)
	}
	n := f.nodes[i]
	f.nodes = slices.Delete(f.nodes, i, i+1)
	return n, nil
}

func TestForceLeave(t *testing.T) {
	const token = "tok"
	ts, f, _ := testServer(t, token)
	f.mu.Lock()
	f.nodes = append(f.nodes, apitypes.Node{Name: "pi-9", Address: "10.0.0.19", Status: apitypes.StatusFailed})
	f.mu.Unlock()

	// A write: no token, no force-leave.
	call(t, "POST", ts.URL+"/v1/nodes/pi-9/force-leave", "", nil).expect(t, 401, "")
	call(t, "POST", ts.URL+"/v1/nodes/pi-9/force-leave", "wrong", nil).expect(t, 401, "")
	call(t, "GET", ts.URL+"/v1/nodes/pi-9/force-leave", token, nil).expect(t, 405, "")
	if n := f.writes.Load(); n != 0 {
		t.Fatalf("%d force-leaves reached the backend without the token", n)
	}
	bad := call(t, "POST", ts.URL+"/v1/nodes/a%20b/force-leave", token, nil)
	bad.expect(t, 400, "")
	if msg := errorBody(t, bad, "error"); !strings.Contains(msg, "invalid node name") {
		t.Errorf("invalid name: %q", msg)
	}
	call(t, "POST", ts.URL+"/v1/nodes/pi-7/force-leave", token, nil).expect(t, 404, "")
	alive := call(t, "POST", ts.URL+"/v1/nodes/pi-2/force-leave", token, nil)
	alive.expect(t, 409, "")
	if msg := errorBody(t, alive, "error"); !strings.Contains(msg, "stop it first") {
		t.Errorf("force-leave of an alive node: %q, want it to say what to do", msg)
	}

	ok := call(t, "POST", ts.URL+"/v1/nodes/pi-9/force-leave", token, nil)
	ok.expect(t, 200, "")
	var res apitypes.ForceLeaveResult
	if err := json.Unmarshal([]byte(ok.body), &res); err != nil || res.Agent != "pi-1" || res.Node.Name != "pi-9" || res.Node.Status != apitypes.StatusFailed {
		t.Fatalf("force-leave answer %s (%v)", ok.body, err)
	}
	call(t, "GET", ts.URL+"/v1/nodes/pi-9", "", nil).expect(t, 404, "")

	f.mu.Lock()
	f.stats.MembersReaped = 12
	f.mu.Unlock()
	samples, _ := scrape(t, ts.URL+"/metrics")
	checkSamples(t, samples, []wantSample{{"rpi_members_reaped_total", nil, 12}})
}

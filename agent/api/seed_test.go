package api

import (
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// seedNode is a node for the seed-path tests: alive, sampled, phi 0.
func seedNode(name, addr string, services ...string) apitypes.Node {
	return apitypes.Node{
		Name: name, Address: addr, GossipPort: 7946, HTTPPort: 8080,
		Status: apitypes.StatusAlive, Services: services, PhiThreshold: 8,
		Monitoring: apitypes.Monitoring{CPUs: 4, MemTotal: 1 << 30, MemUsed: 1 << 29, Load1: 0.5, Load5: 0.5, Load15: 0.5, SampledAt: time.Unix(1700000000, 0)},
	}
}

// The three read paths the 2015 CLI used agree on which nodes are
// available: alive and suspected below the threshold. A suspect node, or an
// alive one whose phi is over the threshold, is in none of them, so the CLI
// cannot pick it from /nodes/monitoring and reinstall on a node that
// /nodes/workingService did not list.
func TestSeedReadPathsAgreeOnAvailable(t *testing.T) {
	ok := seedNode("pi-1", "10.0.0.11", "web")
	suspect := seedNode("pi-2", "10.0.0.12", "web")
	suspect.Status = apitypes.StatusSuspect
	highPhi := seedNode("pi-3", "10.0.0.13", "web")
	highPhi.Phi = 9.5
	failed := seedNode("pi-4", "10.0.0.14", "web")
	failed.Status = apitypes.StatusFailed
	ts, _, _ := testServer(t, "", ok, suspect, highPhi, failed)

	call(t, "GET", ts.URL+"/nodes/alive", "", nil).expect(t, 200, `{"alivePeers":["10.0.0.11:7946"]}`)
	call(t, "GET", ts.URL+"/nodes/workingService/web", "", nil).expect(t, 200, `{"res":["10.0.0.11"]}`)
	a := call(t, "GET", ts.URL+"/nodes/monitoring", "", nil)
	a.expect(t, 200, "")
	if strings.Count(a.body, `"name"`) != 1 || !strings.Contains(a.body, `"name":"pi-1"`) {
		t.Errorf("/nodes/monitoring lists other nodes than the available pi-1: %s", a.body)
	}
}

// A node that has not published a first monitoring sample is not in
// /nodes/monitoring: countCPUs 0 and totalmem 0 make the original CLI's
// score NaN, which sorts anywhere.
func TestSeedMonitoringLeavesOutUnsampledNodes(t *testing.T) {
	sampled := seedNode("pi-1", "10.0.0.11")
	fresh := seedNode("pi-2", "10.0.0.12")
	fresh.Monitoring = apitypes.Monitoring{}
	ts, _, _ := testServer(t, "", sampled, fresh)

	a := call(t, "GET", ts.URL+"/nodes/monitoring", "", nil)
	a.expect(t, 200, "")
	if strings.Contains(a.body, "pi-2") || strings.Contains(a.body, `"countCPUs":0`) {
		t.Errorf("/nodes/monitoring lists the unsampled pi-2: %s", a.body)
	}
	// It is alive and reachable all the same.
	call(t, "GET", ts.URL+"/nodes/alive", "", nil).expect(t, 200, `{"alivePeers":["10.0.0.11:7946","10.0.0.12:7946"]}`)
}

// remove-service of a service the node does not run answers 404 with the
// seed's {"err"}, not 200 {"service"}.
func TestSeedRemoveAbsentServiceIs404(t *testing.T) {
	ts, f, _ := testServer(t, "", seedNode("pi-1", "10.0.0.11", "web"))
	a := call(t, "PUT", ts.URL+"/meta-data/remove-service/db", "", nil)
	a.expect(t, 404, "")
	if msg := errorBody(t, a, "err"); !strings.Contains(msg, "db") || !strings.Contains(msg, "does not run") {
		t.Errorf("404 message %q should say the node does not run db", msg)
	}
	call(t, "PUT", ts.URL+"/meta-data/remove-service/web", "", nil).expect(t, 200, `{"service":"web"}`)
	if got := f.Self().Services; len(got) != 0 {
		t.Errorf("services after remove = %q", got)
	}
}

package agent

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// seedView is what the 2015 CLI reads from one agent: its three read paths.
type seedView struct {
	alive, monitoring, working []string // IPs, sorted
}

func getJSON(t *testing.T, url string, into any) {
	t.Helper()
	code, body := request(t, "GET", url, "")
	if code != 200 {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	if err := json.Unmarshal(body, into); err != nil {
		t.Fatalf("GET %s: %v in %s", url, err, body)
	}
}

// availableIPs is the agent's /v1/nodes reduced to the IPs of available
// nodes: taken before and after the seed reads, it tells whether the view
// moved while they were read.
func availableIPs(t *testing.T, base string) []string {
	var nodes []apitypes.Node
	getJSON(t, base+"/v1/nodes", &nodes)
	var out []string
	for _, n := range nodes {
		if n.Available() {
			out = append(out, n.Address)
		}
	}
	slices.Sort(out)
	return out
}

// readSeed makes the 2015 CLI's read requests (MIGRATING.md lists them)
// against base.
func readSeed(t *testing.T, base, service string) seedView {
	t.Helper()
	var v seedView
	var alive apitypes.SeedAlive
	getJSON(t, base+"/nodes/alive", &alive)
	for _, p := range alive.AlivePeers {
		host, _, err := net.SplitHostPort(p)
		if err != nil {
			t.Fatalf("/nodes/alive entry %q: %v", p, err)
		}
		v.alive = append(v.alive, host)
	}
	var mon apitypes.SeedMonitoring
	getJSON(t, base+"/nodes/monitoring", &mon)
	for _, m := range mon.Res {
		if m.CountCPUs <= 0 || m.TotalMem == 0 {
			t.Errorf("/nodes/monitoring lists %s with countCPUs %d, totalmem %d: the 2015 score of it is NaN", m.IP, m.CountCPUs, m.TotalMem)
		}
		v.monitoring = append(v.monitoring, m.IP)
	}
	var working apitypes.SeedWorkingService
	getJSON(t, base+"/nodes/workingService/"+service, &working)
	v.working = working.Res
	slices.Sort(v.alive)
	slices.Sort(v.monitoring)
	slices.Sort(v.working)
	return v
}

// The 2015 project's CLI replayed against a 3-agent cluster with one node
// stopped: from the moment it stops until it is failed everywhere, every
// surviving agent gives consistent answers on the three read paths: the
// nodes /nodes/alive lists are the nodes /nodes/monitoring scores, and the
// nodes /nodes/workingService lists run the service and are among them.
// So the old CLI never picks a node the cluster no longer trusts, nor
// reinstalls a service on a node that runs it.
func TestSeed2015CLIReplayWithANodeStopped(t *testing.T) {
	a1 := startAgent(t, 71, nil)
	a2 := startAgent(t, 72, joinTo(a1))
	a3 := startAgent(t, 73, joinTo(a1))
	all := []*Agent{a1, a2, a3}
	waitAlive(t, all, 3)
	base := func(a *Agent) string { return "http://" + a.HTTPAddr() }

	// The CLI's writes: add-service on the node that installed it.
	for _, a := range []*Agent{a1, a3} {
		code, body := request(t, "PUT", base(a)+"/meta-data/add-service/nginx", "")
		if code != 200 || strings.TrimSpace(string(body)) != `{"service":"nginx"}` {
			t.Fatalf("add-service on %s: %d %s", a.Name(), code, body)
		}
	}
	// remove-service of a service the node does not run: 404 {"err"}.
	code, body := request(t, "PUT", base(a2)+"/meta-data/remove-service/nginx", "")
	var e apitypes.SeedError
	if code != 404 || json.Unmarshal(body, &e) != nil || e.Err == "" {
		t.Errorf("remove-service of an absent service: %d %s, want 404 {\"err\"}", code, body)
	}

	ip := func(a *Agent) string { h, _, _ := net.SplitHostPort(a.HTTPAddr()); return h }
	// Wait until every node has sampled and the service has spread.
	testutil.WaitFor(t, 15*time.Second, func() error {
		for _, a := range all {
			v := readSeed(t, base(a), "nginx")
			if len(v.monitoring) != 3 || !slices.Equal(v.working, []string{ip(a1), ip(a3)}) {
				return fmt.Errorf("%s: %+v", a.Name(), v)
			}
		}
		return nil
	})

	a3.Shutdown() // stopped, not left: the others must find out
	rounds, checked := 0, 0
	testutil.WaitFor(t, 30*time.Second, func() error {
		rounds++
		gone := 0
		for _, a := range []*Agent{a1, a2} {
			before := availableIPs(t, base(a))
			v := readSeed(t, base(a), "nginx")
			after := availableIPs(t, base(a))
			if !slices.Equal(before, after) {
				continue // the view moved during the reads: not comparable
			}
			checked++
			if !slices.Equal(v.alive, v.monitoring) {
				t.Fatalf("round %d on %s: /nodes/alive %v but /nodes/monitoring %v", rounds, a.Name(), v.alive, v.monitoring)
			}
			for _, w := range v.working {
				if !slices.Contains(v.alive, w) {
					t.Fatalf("round %d on %s: /nodes/workingService lists %s, not in /nodes/alive %v", rounds, a.Name(), w, v.alive)
				}
			}
			if !slices.Contains(v.alive, ip(a3)) && !slices.Contains(v.working, ip(a3)) {
				gone++
			}
		}
		if gone < 2 {
			return fmt.Errorf("%s still listed after %d rounds", a3.Name(), rounds)
		}
		return nil
	})
	if checked == 0 {
		t.Fatal("no round was read from a view that held still")
	}
	for _, a := range []*Agent{a1, a2} {
		v := readSeed(t, base(a), "nginx")
		if want := []string{ip(a1), ip(a2)}; !slices.Equal(v.alive, want) || !slices.Equal(v.monitoring, want) || !slices.Equal(v.working, []string{ip(a1)}) {
			t.Errorf("%s after %s stopped: %+v, want alive and monitoring %v, nginx on %s", a.Name(), a3.Name(), v, want, ip(a1))
		}
	}
	t.Logf("%d rounds, %d compared", rounds, checked)
	// End once memberlist too holds it failed everywhere: its suspicion
	// timers would otherwise log after the test.
	testutil.WaitFor(t, 30*time.Second, func() error {
		for _, a := range []*Agent{a1, a2} {
			for _, m := range a.Cluster().Members() {
				if m.Name == a3.Name() && m.Status != cluster.StatusFailed {
					return fmt.Errorf("%s holds %s %s", a.Name(), a3.Name(), m.Status)
				}
			}
		}
		return nil
	})
}

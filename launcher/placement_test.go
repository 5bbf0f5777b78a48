package launcher

import (
	"reflect"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

func chosenNames(p *Plan) []string { return nodeNames(p.ChosenNodes()) }

// With equal loads (noise in the third decimal), `rpi-launch 2
// nginx_webserver` then `rpi-launch 1 nginx_load_balancer` on four nodes
// puts the balancer on a node without a web server.
func TestPlacementSpreadsBalancerOffItsBackends(t *testing.T) {
	nodes := []apitypes.Node{
		node("pi-1", "alive", 0.101, 0),
		node("pi-2", "alive", 0.100, 0),
		node("pi-3", "alive", 0.102, 0),
		node("pi-4", "alive", 0.103, 0),
	}
	web := Policy{OnFailure: OnFailureRelaunch}
	p, err := PlanLaunch(nodes, "nginx_webserver", 2, web)
	if err != nil {
		t.Fatal(err)
	}
	webNodes := chosenNames(p)
	nodes = WithService(nodes, webNodes, "nginx_webserver", true)
	lb, err := LoadPolicy("../playbooks", "nginx_load_balancer")
	if err != nil {
		t.Fatal(err)
	}
	p, err = PlanLaunch(nodes, "nginx_load_balancer", 1, lb)
	if err != nil {
		t.Fatal(err)
	}
	got := chosenNames(p)[0]
	for _, w := range webNodes {
		if got == w {
			t.Fatalf("balancer placed on %s, which runs a web server (web servers on %v)", got, webNodes)
		}
	}
}

func TestPlacementOrder(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nodes []apitypes.Node
		pol   Policy
		n     int
		want  []string
	}{{
		name: "equal within tolerance: fewer services first",
		nodes: []apitypes.Node{
			node("pi-1", "alive", 0.10, 0, "a", "b"),
			node("pi-2", "alive", 0.11, 0, "a"),
			node("pi-3", "alive", 0.12, 0),
		},
		n: 3, want: []string{"pi-3", "pi-2", "pi-1"},
	}, {
		name: "a clearly busier node loses even with fewer services",
		nodes: []apitypes.Node{
			node("pi-1", "alive", 0.1, 0, "a", "b"),
			node("pi-2", "alive", 3.0, 0),
		},
		n: 2, want: []string{"pi-1", "pi-2"},
	}, {
		name: "avoid keeps off a node while another is free",
		nodes: []apitypes.Node{
			node("pi-1", "alive", 0.1, 0, "db"),
			node("pi-2", "alive", 2.0, 0),
		},
		pol: Policy{Avoid: []string{"db"}},
		n:   1, want: []string{"pi-2"},
	}, {
		name: "avoid is soft: taken when nothing else is free",
		nodes: []apitypes.Node{
			node("pi-1", "alive", 0.1, 0, "db"),
			node("pi-2", "alive", 2.0, 0),
		},
		pol: Policy{Avoid: []string{"db"}},
		n:   2, want: []string{"pi-2", "pi-1"},
	}, {
		name: "depends_on counts as avoid",
		nodes: []apitypes.Node{
			node("pi-1", "alive", 0.1, 0, "web"),
			node("pi-2", "alive", 1.0, 0),
		},
		pol: Policy{DependsOn: []string{"web"}},
		n:   1, want: []string{"pi-2"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PlanLaunch(tc.nodes, "svc", tc.n, tc.pol)
			if err != nil {
				t.Fatal(err)
			}
			if got := chosenNames(p); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("chosen %v, want %v", got, tc.want)
			}
		})
	}
}

// A node that has not sent a first monitoring sample is not a candidate:
// its score of 0 would make it look like the least busy node.
func TestPlacementSkipsUnsampledNodes(t *testing.T) {
	fresh := node("pi-1", "alive", 0, 0)
	fresh.Monitoring = apitypes.Monitoring{}
	nodes := []apitypes.Node{fresh, node("pi-2", "alive", 2, 0)}
	p, err := PlanLaunch(nodes, "svc", 1, Policy{})
	if err != nil {
		t.Fatal(err)
	}
	if got := chosenNames(p); !reflect.DeepEqual(got, []string{"pi-2"}) {
		t.Errorf("chosen %v, want [pi-2]", got)
	}
	if len(p.Excluded) != 1 || p.Excluded[0].Node.Name != "pi-1" || p.Excluded[0].Reason != "no monitoring sample yet" {
		t.Errorf("excluded %+v, want pi-1 for having no sample", p.Excluded)
	}
}

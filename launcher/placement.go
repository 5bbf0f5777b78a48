package launcher

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit"
)

// Candidate is a node with its busy score.
type Candidate struct {
	Node  apitypes.Node
	Score float64
	// Avoided counts the services of the policy's avoid and depends_on
	// lists the node runs.
	Avoided int
}

// SpreadTolerance is the busy-score difference below which two nodes count
// as equally busy, so that placement spreads by service count instead of
// following noise. The score is about load per CPU plus the memory
// fraction: one node with load 0.25 per CPU more than another is 0.1 busier.
// Equal idle nodes differ in the third decimal.
const SpreadTolerance = 0.1

// busyBand is the score rounded to SpreadTolerance: nodes in one band are
// equally busy.
func busyBand(score float64) int64 { return int64(math.Floor(score / SpreadTolerance)) }

// lessLaunch orders launch candidates: nodes running none of the avoided
// services first, then by busy band, then fewer services, then exact
// score, then name.
func lessLaunch(a, b Candidate) bool {
	if a.Avoided != b.Avoided {
		return a.Avoided < b.Avoided
	}
	if ba, bb := busyBand(a.Score), busyBand(b.Score); ba != bb {
		return ba < bb
	}
	if la, lb := len(a.Node.Services), len(b.Node.Services); la != lb {
		return la < lb
	}
	if a.Score != b.Score {
		return a.Score < b.Score
	}
	return a.Node.Name < b.Node.Name
}

// Exclusion is a node left out of a plan and why.
type Exclusion struct {
	Node   apitypes.Node
	Reason string
}

// Plan is which nodes a launch or removal acts on.
type Plan struct {
	Service string
	// Chosen are the nodes acted on, in order of choice.
	Chosen []Candidate
	// Eligible are all nodes that qualified, Chosen first.
	Eligible []Candidate
	// Excluded are the nodes that did not qualify.
	Excluded []Exclusion
}

// ChosenNodes returns the chosen nodes.
func (p *Plan) ChosenNodes() []apitypes.Node {
	out := make([]apitypes.Node, len(p.Chosen))
	for i, c := range p.Chosen {
		out[i] = c.Node
	}
	return out
}

// InsufficientError says a plan could not find enough nodes.
type InsufficientError struct {
	Service string
	Want    int
	Plan    *Plan
	Remove  bool
}

func (e *InsufficientError) Error() string {
	verb := "launch"
	what := "candidates"
	if e.Remove {
		verb, what = "remove", "nodes run it"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: want %d nodes, only %d %s", verb, e.Service, e.Want, len(e.Plan.Eligible), what)
	if len(e.Plan.Excluded) > 0 && !e.Remove {
		b.WriteString("; excluded: ")
		for i, x := range e.Plan.Excluded {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s (%s)", apitypes.Printable(x.Node.Name), apitypes.Printable(x.Reason))
		}
	}
	return b.String()
}

// PlanLaunch picks n nodes for service among the candidates: alive, not
// already running it, with a first monitoring sample, and with a suspicion
// below the threshold (the policy's, else the one each node reports). It
// spreads: nodes running a service of the policy's avoid or depends_on list
// come last, then the less busy (busy scores within SpreadTolerance are
// equal), then those running fewer services, then by exact score and name.
// Fewer than n candidates is an *InsufficientError carrying the plan.
func PlanLaunch(nodes []apitypes.Node, service string, n int, pol Policy) (*Plan, error) {
	p := &Plan{Service: service}
	avoid := map[string]bool{}
	for _, s := range append(slices.Clone(pol.Avoid), pol.DependsOn...) {
		if s != service {
			avoid[s] = true
		}
	}
	for _, node := range sortedByName(nodes) {
		threshold := pol.PhiThreshold
		if threshold == 0 {
			threshold = node.PhiThreshold
		}
		switch {
		case node.Status != apitypes.StatusAlive:
			p.Excluded = append(p.Excluded, Exclusion{node, "status " + node.Status})
		case slices.Contains(node.Services, service):
			p.Excluded = append(p.Excluded, Exclusion{node, "already runs " + service})
		case strings.EqualFold(node.Name, toolkit.GroupName(service)):
			// As a host of the run's inventory beside the group, Ansible
			// would take --limit NAME for the whole group.
			p.Excluded = append(p.Excluded, Exclusion{node, "named like the service's inventory group"})
		case threshold > 0 && node.Phi >= threshold:
			p.Excluded = append(p.Excluded, Exclusion{node, fmt.Sprintf("phi %.2f >= threshold %.2f", node.Phi, threshold)})
		case !node.Monitoring.Sampled():
			// It just joined: a score of 0 would make it look idle.
			p.Excluded = append(p.Excluded, Exclusion{node, "no monitoring sample yet"})
		default:
			c := Candidate{Node: node, Score: toolkit.BusyScore(node)}
			for _, s := range node.Services {
				if avoid[s] {
					c.Avoided++
				}
			}
			p.Eligible = append(p.Eligible, c)
		}
	}
	sort.SliceStable(p.Eligible, func(i, j int) bool { return lessLaunch(p.Eligible[i], p.Eligible[j]) })
	return p, choose(p, n, false)
}

// PlanRemove picks the n busiest nodes running service (any status: a
// failed node's record is cleaned up too), ties by name.
func PlanRemove(nodes []apitypes.Node, service string, n int) (*Plan, error) {
	p := &Plan{Service: service}
	for _, node := range sortedByName(nodes) {
		if slices.Contains(node.Services, service) {
			p.Eligible = append(p.Eligible, Candidate{Node: node, Score: toolkit.BusyScore(node)})
		} else {
			p.Excluded = append(p.Excluded, Exclusion{node, "does not run " + service})
		}
	}
	sort.SliceStable(p.Eligible, func(i, j int) bool { return p.Eligible[i].Score > p.Eligible[j].Score })
	return p, choose(p, n, true)
}

func choose(p *Plan, n int, remove bool) error {
	if n < 1 {
		return fmt.Errorf("plan %s: node count %d: must be at least 1", p.Service, n)
	}
	if len(p.Eligible) < n {
		return &InsufficientError{Service: p.Service, Want: n, Plan: p, Remove: remove}
	}
	p.Chosen = p.Eligible[:n]
	return nil
}

func sortedByName(nodes []apitypes.Node) []apitypes.Node {
	out := append([]apitypes.Node(nil), nodes...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// WithService returns a copy of nodes where the named nodes run (add) or no
// longer run (!add) service: the cluster as it will be after the change.
func WithService(nodes []apitypes.Node, names []string, service string, add bool) []apitypes.Node {
	out := make([]apitypes.Node, len(nodes))
	for i, n := range nodes {
		n.Services = slices.Clone(n.Services)
		if slices.Contains(names, n.Name) {
			has := slices.Contains(n.Services, service)
			if add && !has {
				n.Services = append(n.Services, service)
			}
			if !add && has {
				n.Services = slices.DeleteFunc(n.Services, func(s string) bool { return s == service })
			}
		}
		out[i] = n
	}
	return out
}

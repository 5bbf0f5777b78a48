package launcher

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// Healthy reports whether node can be counted as running a service under
// pol: it is alive and its suspicion is below the policy's phi_threshold
// (or, when the policy sets none, the threshold the node reports).
func Healthy(node apitypes.Node, pol Policy) bool {
	if node.Status != apitypes.StatusAlive {
		return false
	}
	threshold := pol.PhiThreshold
	if threshold == 0 {
		threshold = node.PhiThreshold
	}
	return threshold <= 0 || node.Phi < threshold
}

// whyDown says why node is not Healthy under pol.
func whyDown(node apitypes.Node, pol Policy) string {
	if node.Status != apitypes.StatusAlive {
		return node.Status
	}
	threshold := pol.PhiThreshold
	if threshold == 0 {
		threshold = node.PhiThreshold
	}
	return fmt.Sprintf("phi %.2f >= %.2f", node.Phi, threshold)
}

// DownNode is a node whose record lists a service but that is not counted
// as running it.
type DownNode struct {
	Name string `json:"name"`
	// Reason is its status, or its suspicion over the threshold.
	Reason string `json:"reason"`
}

// ServiceState is one service's desired replica count against what runs:
// the model behind `rpi-launch status` (table and --json) and reconcile.
type ServiceState struct {
	Service string `json:"service"`
	// Desired is the replica count asked for; HasDesired is false when
	// nothing was ever asked of the service (it was deployed without
	// rpi-launch, or before desired state existed).
	Desired    int  `json:"desired"`
	HasDesired bool `json:"has_desired"`
	// Actual are the healthy nodes whose records list the service.
	Actual []string `json:"actual"`
	// Down are the nodes whose (possibly stale) records list the service
	// but that are failed, left, suspect or too suspected.
	Down []DownNode `json:"down"`
	// OnFailure is the policy's failure behaviour.
	OnFailure string `json:"on_failure"`
	// Policy is an error reading the service's policy, "" when it was read.
	PolicyError string `json:"policy_error,omitempty"`
	// PolicySource is where the policy came from: "cluster" (recorded with
	// the desired state when the service was launched) or "local" (the
	// playbooks folder of this workstation).
	PolicySource string `json:"policy_source"`
	// Rendered maps nodes to the hash of what each was last given, as
	// recorded in the cluster.
	Rendered map[string]string `json:"rendered,omitempty"`
	// Drift are the healthy nodes running the service whose last render
	// differs from what its templates give with the live cluster; set by
	// AddDrift.
	Drift []string `json:"drift"`
	// DriftError says why drift could not be computed (no templates here,
	// a template that does not render).
	DriftError string `json:"drift_error,omitempty"`
}

// Missing is how many replicas are wanted beyond the healthy ones (0 when
// there are enough; negative counts are not reported).
func (s ServiceState) Missing() int { return max(s.Desired-len(s.Actual), 0) }

// ServiceStates compares desired with actual for every service that has a
// desired count or is listed by some node, sorted by service. A service's
// policy is the one recorded in the cluster with its desired state, else
// what policy loads (LoadPolicy over a playbooks folder).
func ServiceStates(nodes []apitypes.Node, desired []apitypes.DesiredService, policy func(service string) (Policy, error)) []ServiceState {
	byName := map[string]*ServiceState{}
	get := func(svc string) *ServiceState {
		s := byName[svc]
		if s == nil {
			s = &ServiceState{Service: svc, Actual: []string{}, Down: []DownNode{}, Drift: []string{}}
			byName[svc] = s
		}
		return s
	}
	entries := map[string]*apitypes.DesiredService{}
	for i, d := range desired {
		s := get(d.Service)
		s.Desired, s.HasDesired = d.Replicas, true
		s.Rendered = d.Rendered
		entries[d.Service] = &desired[i]
	}
	for _, n := range nodes {
		for _, svc := range n.Services {
			get(svc)
		}
	}
	pols := map[string]Policy{}
	for svc, s := range byName {
		pol, source, err := EffectivePolicy(entries[svc], svc, policy)
		s.PolicySource = source
		if err != nil {
			s.PolicyError = err.Error()
			pol = DefaultPolicy()
		}
		s.OnFailure = pol.OnFailure
		pols[svc] = pol
	}
	for _, n := range sortedByName(nodes) {
		for _, svc := range n.Services {
			s := byName[svc]
			if Healthy(n, pols[svc]) {
				if !slices.Contains(s.Actual, n.Name) {
					s.Actual = append(s.Actual, n.Name)
				}
			} else {
				s.Down = append(s.Down, DownNode{Name: n.Name, Reason: whyDown(n, pols[svc])})
			}
		}
	}
	out := make([]ServiceState, 0, len(byName))
	for _, s := range byName {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out
}

// AddDrift fills each state's Drift: expected renders a service's templates
// with the live cluster (Launcher.ExpectedRender); ok false means it has
// none, and nothing can drift.
func AddDrift(states []ServiceState, expected func(service string) (hash string, ok bool, err error)) {
	for i := range states {
		st := &states[i]
		if len(st.Rendered) == 0 {
			continue
		}
		hash, ok, err := expected(st.Service)
		switch {
		case err != nil:
			st.DriftError = err.Error()
		case !ok:
			st.DriftError = "no templates here to compare with; run from the folder holding templates/ or set --templates"
		default:
			st.Drift = Drifted(st.Actual, st.Rendered, hash)
		}
	}
}

// AddCheckedDrift adds to each state's Drift the healthy nodes where check
// (Launcher.CheckNodes: the install playbook in check mode) says the play
// would change something; services without templates are skipped, as in
// AddDrift. Nodes it could not check are named in DriftError.
func AddCheckedDrift(states []ServiceState, hasTemplates func(service string) bool,
	check func(service string, nodes []string) (changed []string, unknown map[string]string, err error)) {
	for i := range states {
		st := &states[i]
		if len(st.Actual) == 0 || !hasTemplates(st.Service) {
			continue
		}
		changed, unknown, err := check(st.Service, st.Actual)
		if err != nil {
			st.DriftError = err.Error()
			continue
		}
		st.Drift = sortedUnique(append(st.Drift, changed...))
		for _, n := range sortedKeysOf(unknown) {
			st.DriftError = strings.TrimPrefix(st.DriftError+"; ", "; ") + "could not check " + n + ": " + unknown[n]
		}
	}
}

// Package launcher places services on the least busy nodes of the cluster,
// renders their templates with the live cluster, runs their Ansible
// playbooks through one runner, and records the result in each node's
// metadata through that node's own agent.
//
// The pieces are separate so reconcile (desired state, issue 6) can reuse
// them: Policy (playbooks/<service>/service.yaml), PlanLaunch / PlanRemove
// (placement, pure), Render (templates), Runner (ansible-playbook) and
// Launcher, which strings them together.
package launcher

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// Failure behaviours a service's policy may name.
const (
	OnFailureRelaunch = "relaunch"
	OnFailureAlert    = "alert"
	OnFailureNone     = "none"
)

// PolicyFile is the name of a service's policy file in its playbook folder.
const PolicyFile = "service.yaml"

// Policy is a service's playbooks/<service>/service.yaml. Unknown keys are
// an error. A service without the file gets DefaultPolicy.
type Policy struct {
	// PhiThreshold is the suspicion level at or above which a node is not
	// trusted with this service. 0 means the threshold each node reports.
	PhiThreshold float64 `yaml:"phi_threshold"`
	// OnFailure is what reconcile does when a node running the service
	// fails: relaunch it elsewhere, alert only, or nothing. Default none.
	OnFailure string `yaml:"on_failure"`
	// DependsOn lists services whose node set this service's templates
	// read. When one of them changes, this service is re-rendered and its
	// install playbook re-applied where it runs.
	DependsOn []string `yaml:"depends_on"`
	// GracePeriod is how long a failure must last before reconcile acts.
	GracePeriod Duration `yaml:"grace_period"`
	// Avoid lists services whose nodes this service is kept off while
	// other candidates are free (anti-affinity, as Swarm's and Nomad's
	// spread). The services in DependsOn are avoided too: a load balancer
	// on one of its own backends loses both when that node fails.
	Avoid []string `yaml:"avoid"`
}

// DefaultPolicy is the policy of a service without service.yaml.
func DefaultPolicy() Policy {
	return Policy{OnFailure: OnFailureNone, GracePeriod: Duration(30 * time.Second)}
}

// Duration is a time.Duration written as "30s" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: duration must be a string like 30s", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: duration %q: use a number with a unit, like 30s or 2m", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Validate names the first bad field.
func (p Policy) Validate() error {
	if p.PhiThreshold < 0 {
		return fmt.Errorf("phi_threshold %v: must be 0 (use the node's) or positive", p.PhiThreshold)
	}
	switch p.OnFailure {
	case OnFailureRelaunch, OnFailureAlert, OnFailureNone:
	default:
		return fmt.Errorf("on_failure %q: must be relaunch, alert or none", p.OnFailure)
	}
	for _, d := range p.DependsOn {
		if err := apitypes.ValidateServiceName(d); err != nil {
			return fmt.Errorf("depends_on: %w", err)
		}
	}
	for _, a := range p.Avoid {
		if err := apitypes.ValidateServiceName(a); err != nil {
			return fmt.Errorf("avoid: %w", err)
		}
	}
	if p.GracePeriod < 0 {
		return fmt.Errorf("grace_period %v: must not be negative", time.Duration(p.GracePeriod))
	}
	return nil
}

// ParsePolicy parses service.yaml content strictly on top of DefaultPolicy.
func ParsePolicy(data []byte) (Policy, error) {
	p := DefaultPolicy()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil && !errors.Is(err, io.EOF) {
		return Policy{}, err
	}
	return p, p.Validate()
}

// LoadPolicy reads playbooksDir/<service>/service.yaml; a missing file gives
// DefaultPolicy.
func LoadPolicy(playbooksDir, service string) (Policy, error) {
	path := filepath.Join(playbooksDir, service, PolicyFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return DefaultPolicy(), nil
	}
	if err != nil {
		return Policy{}, fmt.Errorf("read policy %s: %w", path, err)
	}
	p, err := ParsePolicy(data)
	if err != nil {
		return Policy{}, fmt.Errorf("parse policy %s: %w", path, err)
	}
	return p, nil
}

// Dependents returns the services under playbooksDir whose policy lists
// service in depends_on, sorted, with service itself first when its own
// policy lists it: a service whose templates list its peers (an etcd or
// Consul server list) is re-applied where it runs whenever its own node
// set changes.
func Dependents(playbooksDir, service string) ([]string, error) {
	entries, err := os.ReadDir(playbooksDir)
	if err != nil {
		return nil, fmt.Errorf("list services in %s: %w", playbooksDir, err)
	}
	policies := map[string]Policy{}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		p, err := LoadPolicy(playbooksDir, e.Name())
		if err != nil {
			return nil, err
		}
		policies[e.Name()] = p
	}
	return DependentsIn(policies, service), nil
}

// DependentsIn returns the services among policies whose depends_on lists
// service, ordered as Dependents orders them (service itself first).
func DependentsIn(policies map[string]Policy, service string) []string {
	var out []string
	for svc, p := range policies {
		if slices.Contains(p.DependsOn, service) {
			out = append(out, svc)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if (out[i] == service) != (out[j] == service) {
			return out[i] == service
		}
		return out[i] < out[j]
	})
	return out
}

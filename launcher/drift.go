package launcher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
)

// Where a service's policy came from (ServiceState.PolicySource).
const (
	PolicyFromCluster = "cluster"
	PolicyFromLocal   = "local"
)

// RenderHash is what the cluster records of a render: the hex SHA-256 of
// every file's path and content, in path order, cut to 32 digits.
func RenderHash(files []RenderedFile) string {
	sorted := append([]RenderedFile(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	h := sha256.New()
	for _, f := range sorted {
		fmt.Fprintf(h, "%d:%s\x00%d:", len(f.Path), f.Path, len(f.Content))
		h.Write(f.Content)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// PolicyText reads playbooksDir/<service>/service.yaml as it is, checked
// by ParsePolicy; "" when the service has none.
func PolicyText(playbooksDir, service string) (string, error) {
	path := filepath.Join(playbooksDir, service, PolicyFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read policy %s: %w", path, err)
	}
	if _, err := ParsePolicy(data); err != nil {
		return "", fmt.Errorf("parse policy %s: %w", path, err)
	}
	return string(data), nil
}

// EffectivePolicy is the policy a workstation acts on for a service: the
// one recorded in the cluster with its desired state when there is one (so
// every workstation agrees), else local's (the playbooks folder).
func EffectivePolicy(d *apitypes.DesiredService, service string, local func(string) (Policy, error)) (Policy, string, error) {
	if d != nil && d.Policy != "" {
		p, err := ParsePolicy([]byte(d.Policy))
		if err != nil {
			return Policy{}, PolicyFromCluster, fmt.Errorf("policy of %s recorded in the cluster: %w", service, err)
		}
		return p, PolicyFromCluster, nil
	}
	p, err := local(service)
	return p, PolicyFromLocal, err
}

// ExpectedRender renders service's templates as a re-apply would now, with
// the live view; ok is false when the service has no templates (nothing is
// recorded for it, so it cannot drift).
func (l *Launcher) ExpectedRender(service string, view []apitypes.Node) (hash string, ok bool, err error) {
	files, err := Render(filepath.Join(l.Templates, service), "", dependentData(l.Cluster, view, service))
	if err != nil {
		return "", false, err
	}
	if len(files) == 0 {
		return "", false, nil
	}
	return RenderHash(files), true, nil
}

// Drifted lists the nodes among running whose recorded render differs from
// expected. A node with nothing recorded is not listed: it was deployed
// before renders were recorded, and what it holds is unknown, not wrong.
func Drifted(running []string, recorded map[string]string, expected string) []string {
	var out []string
	for _, n := range running {
		if h, ok := recorded[n]; ok && h != expected {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// recordRendered records in the cluster, with service's desired state, the
// hash of what each node was given ("" forgets a node). It is bookkeeping:
// a failure is printed, not returned, since the deploy itself is done.
func (l *Launcher) recordRendered(ctx context.Context, service string, hashes map[string]string) {
	if len(hashes) == 0 {
		return
	}
	_, err := l.Client.ChangeDesired(ctx, service, apitypes.DesiredChange{Rendered: hashes})
	var se *client.StatusError
	switch {
	case errors.As(err, &se) && se.Code == http.StatusNotFound:
		fmt.Fprintf(l.out(), "warning: agent %s keeps no desired state (upgrade rpi-agent); what %s's nodes were given is not recorded, drift cannot be seen\n", l.Client.BaseURL, service)
	case err != nil:
		nodes := make([]string, 0, len(hashes))
		for n := range hashes {
			nodes = append(nodes, n)
		}
		sort.Strings(nodes)
		fmt.Fprintf(l.out(), "warning: record what %s on %s was given: %v; status will show them as drifted until the next apply\n",
			service, strings.Join(nodes, ", "), err)
	}
}

// hashesFor maps each of names to hash.
func hashesFor(names []string, hash string) map[string]string {
	out := make(map[string]string, len(names))
	for _, n := range names {
		out[n] = hash
	}
	return out
}

// dependents returns the services to re-apply when service's node set
// changes: those whose policy lists it in depends_on, each policy taken as
// EffectivePolicy takes it (the one recorded in the cluster, else the local
// playbooks'), so every workstation re-applies the same ones. A dependent
// known only from the cluster still needs its playbook here; preflight says
// so. An agent without desired state leaves the local policies.
func (l *Launcher) dependents(ctx context.Context, service string) ([]string, error) {
	local := func(s string) (Policy, error) { return LoadPolicy(l.Playbooks, s) }
	policies := map[string]Policy{}
	entries, err := os.ReadDir(l.Playbooks)
	if err != nil {
		return nil, fmt.Errorf("list services in %s: %w", l.Playbooks, err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	byName := map[string]*apitypes.DesiredService{}
	desired, err := l.Client.Desired(ctx)
	var se *client.StatusError
	switch {
	case errors.As(err, &se) && se.Code == http.StatusNotFound:
	case err != nil:
		return nil, fmt.Errorf("read desired state for the policies of %s's dependents: %w", service, err)
	}
	for i := range desired {
		byName[desired[i].Service] = &desired[i]
		names = append(names, desired[i].Service)
	}
	for _, svc := range names {
		if _, done := policies[svc]; done {
			continue
		}
		d := byName[svc]
		if d == nil || d.Policy == "" {
			if _, err := os.Stat(filepath.Join(l.Playbooks, svc)); err != nil {
				continue // neither recorded nor here: nothing depends through it
			}
		}
		p, _, err := EffectivePolicy(d, svc, local)
		if err != nil {
			return nil, err
		}
		policies[svc] = p
	}
	return DependentsIn(policies, service), nil
}

// CheckNodes runs service's install playbook in Ansible's check mode
// (--check: nothing is changed) on the named nodes running it, with the
// render a re-apply would give now, and returns the nodes where the play
// would change something: what is on the node no longer matches, e.g. a
// rendered file was deleted or edited there. Nodes the play could not
// check are returned in unknown with why. The render goes to a temporary
// build directory and the play's output is not shown.
func (l *Launcher) CheckNodes(ctx context.Context, service string, view []apitypes.Node, names []string) (changed []string, unknown map[string]string, err error) {
	book, err := l.playbook(service, InstallPlaybook)
	if err != nil {
		return nil, nil, err
	}
	data := dependentData(l.Cluster, view, service)
	targets := slices.DeleteFunc(slices.Clone(data.Targets), func(n apitypes.Node) bool { return !slices.Contains(names, n.Name) })
	if len(targets) == 0 {
		return nil, nil, nil
	}
	tmp, err := os.MkdirTemp("", "rpi-launch-check-*")
	if err != nil {
		return nil, nil, fmt.Errorf("check %s: %w", service, err)
	}
	defer os.RemoveAll(tmp)
	quiet := *l
	quiet.Out, quiet.BuildDir = nil, tmp
	runner := *l.Runner
	runner.Stdout, runner.Stderr = nil, nil
	quiet.Runner = &runner
	quiet.ExtraArgs = append(slices.Clone(l.ExtraArgs), "--check")
	res, err := quiet.run(ctx, service, book, view, targets, data)
	if err != nil {
		return nil, nil, fmt.Errorf("check %s: %w", service, err)
	}
	unknown = map[string]string{}
	for _, t := range targets {
		switch st, ok := res.result.Hosts[t.Name]; {
		case !res.result.Succeeded(t.Name):
			unknown[t.Name] = hostFailure(res.result, t.Name)
		case ok && st.Changed > 0:
			changed = append(changed, t.Name)
		}
	}
	return changed, unknown, nil
}

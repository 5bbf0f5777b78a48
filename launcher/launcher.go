package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit"
	"github.com/rpi-cluster/rpi-cluster/inventory"
)

// Playbook names inside playbooks/<service>/.
const (
	InstallPlaybook   = "install.yml"
	UninstallPlaybook = "uninstall.yml"
)

// BuildDirVar is the extra-var naming the directory a service's rendered
// templates are in; playbooks copy files from "{{ rpi_build_dir }}/...".
const BuildDirVar = "rpi_build_dir"

// Launcher deploys and removes services. Its fields are set by the caller;
// Client and Runner are required.
type Launcher struct {
	// Client is the agent asked for the cluster view. Writes go to each
	// node's own agent, reached with Client's scheme and token.
	Client *client.Client
	// Cluster is the cluster name given to templates.
	Cluster string
	// Playbooks and Templates are the roots holding <service>/ folders.
	Playbooks, Templates string
	// BuildDir is where <service>/ renders go; default "build".
	BuildDir string
	// Inventory are the connection settings of the run's inventory.
	Inventory inventory.Options
	// Runner runs ansible-playbook.
	Runner *Runner
	// ExtraArgs go to every ansible-playbook run (after "--").
	ExtraArgs []string
	// Out receives the plan and the results; nil discards them.
	Out io.Writer
	// RecordDesired makes Launch and Remove keep the service's desired
	// replica count (/v1/desired) in step with what the user asked for:
	// Launch raises it by n once the play succeeded on at least one chosen
	// node (reconcile converges the rest), Remove lowers it by n before
	// anything is uninstalled (so reconcile never replaces what is being
	// taken away). Dry runs and plans that fail record nothing. reconcile
	// leaves it off: replacing a replica does not ask for one more.
	RecordDesired bool
	// SkipUnreachable makes Launch plan again without chosen nodes that
	// fail preflight's per-host checks (SSH, their agent's token) instead
	// of failing: reconcile sets it, so a node whose agent runs but whose
	// SSH does not cannot block a replacement.
	SkipUnreachable bool
	// SSHPort is the port preflight probes on every host a play targets;
	// 0 means DefaultSSHPort. ReachSSH is the probe; nil means DialSSH.
	SSHPort  int
	ReachSSH func(ctx context.Context, node apitypes.Node, port int) error
	// SettleTimeout bounds the wait, after recording, for the agent this
	// launcher reads from to see the change (records spread by gossip), so
	// that the next command renders from a view that includes it. Default
	// 15 s; on timeout a warning is printed and nothing fails.
	SettleTimeout time.Duration
}

// Outcome is what a launch or removal did.
type Outcome struct {
	Plan *Plan
	// Rendered are the files rendered for the service.
	Rendered []RenderedFile
	// Succeeded are the chosen nodes where the playbook succeeded and the
	// metadata was updated.
	Succeeded []string
	// Failed maps chosen nodes that were not changed to why.
	Failed map[string]string
	// Reapplied are the dependent services re-rendered and re-applied.
	Reapplied []string
}

// PartialError is returned when the playbook or the metadata write did not
// succeed on every chosen node; the Outcome says which did.
type PartialError struct {
	Action  string
	Service string
	Failed  map[string]string
}

func (e *PartialError) Error() string {
	names := make([]string, 0, len(e.Failed))
	for n := range e.Failed {
		names = append(names, n)
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = apitypes.Printable(n) + ": " + apitypes.Printable(e.Failed[n])
	}
	return fmt.Sprintf("%s %s: not done on %d node(s): %s", e.Action, e.Service, len(names), strings.Join(parts, "; "))
}

func (l *Launcher) out() io.Writer {
	if l.Out == nil {
		return io.Discard
	}
	return l.Out
}

func (l *Launcher) buildDir(service string) string {
	root := l.BuildDir
	if root == "" {
		root = "build"
	}
	return filepath.Join(root, service)
}

// playbook returns playbooks/<service>/<name>, or the 2015 project's
// playbooks/<service>/<install|uninstall>_<service>.yml when only that is
// there.
func (l *Launcher) playbook(service, name string) (string, error) {
	p := filepath.Join(l.Playbooks, service, name)
	if _, err := os.Stat(p); err != nil {
		old := filepath.Join(l.Playbooks, service, strings.TrimSuffix(name, ".yml")+"_"+service+".yml")
		if _, oerr := os.Stat(old); oerr == nil {
			return old, nil
		}
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("service %s: no playbook %s (set --playbooks or RPI_PLAYBOOKS to the folder holding %s/%s)", service, p, service, name)
		}
		return "", fmt.Errorf("service %s: %w", service, err)
	}
	return p, nil
}

// Launch places service on the n least busy eligible nodes, renders its
// templates, runs its install playbook on them and records the service on
// the nodes where the play succeeded. Dependent services are then
// re-rendered and re-applied. With dryRun it prints the plan and the
// rendered files and changes nothing.
func (l *Launcher) Launch(ctx context.Context, service string, n int, dryRun bool) (*Outcome, error) {
	if err := apitypes.ValidateServiceName(service); err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	book, err := l.playbook(service, InstallPlaybook)
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	pol, err := l.launchPolicy(ctx, service)
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	nodes, err := l.Client.Nodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("launch %s: list nodes: %w", service, err)
	}
	dependents, err := l.dependents(ctx, service)
	if err != nil {
		return nil, fmt.Errorf("launch %s: %w", service, err)
	}
	var (
		plan        *Plan
		chosen      []apitypes.Node
		names       []string
		after       []apitypes.Node
		unreachable []Exclusion
	)
	for {
		candidates := slices.DeleteFunc(slices.Clone(nodes), func(n apitypes.Node) bool {
			return slices.ContainsFunc(unreachable, func(x Exclusion) bool { return x.Node.Name == n.Name })
		})
		plan, err = PlanLaunch(candidates, service, n, pol)
		var ie *InsufficientError
		if errors.As(err, &ie) {
			ie.Plan.Excluded = append(ie.Plan.Excluded, unreachable...)
			l.printPlan("launch", ie.Plan)
		}
		if err != nil {
			return nil, err
		}
		plan.Excluded = append(plan.Excluded, unreachable...)
		l.printPlan("launch", plan)
		chosen = plan.ChosenNodes()
		names = nodeNames(chosen)
		after = WithService(nodes, names, service, true)
		err = l.preflight(ctx, "launch", service, l.renders(service, after, chosen, dependents), chosen)
		var pe *PreflightError
		if l.SkipUnreachable && errors.As(err, &pe) && len(pe.Hosts) > 0 && len(pe.Hosts) == len(pe.Problems) {
			// Only chosen hosts failed their checks: plan without them.
			for _, c := range chosen {
				if why, ok := pe.Hosts[c.Name]; ok {
					fmt.Fprintf(l.out(), "preflight: leaving out %s: %s\n", apitypes.Printable(c.Name), apitypes.Printable(why))
					unreachable = append(unreachable, Exclusion{c, "preflight: " + why})
				}
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	out, err := l.apply(ctx, applySpec{
		action: "launch", service: service, book: book, plan: plan, dryRun: dryRun,
		invView: after, renderView: after, changed: names, add: true, before: nodes,
	})
	if l.RecordDesired && !dryRun && out != nil && len(out.Succeeded) > 0 {
		if derr := l.changeDesired(ctx, service, n); derr != nil {
			return out, errors.Join(err, derr)
		}
	}
	return out, err
}

// launchPolicy is the policy a launch places by: the local service.yaml
// when the launch records the desired count (a user's launch, which then
// records that policy in the cluster), else the one recorded in the
// cluster (reconcile's relaunch, the same from any workstation).
func (l *Launcher) launchPolicy(ctx context.Context, service string) (Policy, error) {
	if l.RecordDesired {
		return LoadPolicy(l.Playbooks, service)
	}
	local := func(s string) (Policy, error) { return LoadPolicy(l.Playbooks, s) }
	d, err := l.Client.DesiredFor(ctx, service)
	var se *client.StatusError
	switch {
	case errors.As(err, &se) && se.Code == http.StatusNotFound:
		return local(service)
	case err != nil:
		return Policy{}, fmt.Errorf("read %s's recorded policy: %w", service, err)
	}
	p, _, err := EffectivePolicy(&d, service, local)
	return p, err
}

// changeDesired adds delta to service's desired replica count and reports
// the new value. A launch (delta > 0) records the service's policy with it,
// so status and reconcile on any workstation act on the same policy.
func (l *Launcher) changeDesired(ctx context.Context, service string, delta int) error {
	change := apitypes.DesiredChange{Delta: &delta}
	if delta > 0 {
		text, err := PolicyText(l.Playbooks, service)
		if err != nil {
			return fmt.Errorf("desired %s %+d: %w", service, delta, err)
		}
		if text != "" {
			change.Policy = &text
		}
	}
	d, err := l.Client.ChangeDesired(ctx, service, change)
	var se *client.StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		// An agent from before desired state: the deploy stands, reconcile
		// just cannot know about it.
		fmt.Fprintf(l.out(), "warning: agent %s keeps no desired state (upgrade rpi-agent); %s %+d not recorded, reconcile will not act on it\n", l.Client.BaseURL, service, delta)
		return nil
	}
	if err != nil {
		return fmt.Errorf("desired %s %+d: %w (reconcile reads this count; the deploy itself is done)", service, delta, err)
	}
	fmt.Fprintf(l.out(), "desired %s: %d replica(s) (%+d)\n", service, d.Replicas, delta)
	return nil
}

// Remove takes service off the n busiest nodes running it: it runs the
// uninstall playbook on them, removes the service from the metadata of the
// nodes where the play succeeded, and re-applies dependents.
func (l *Launcher) Remove(ctx context.Context, service string, n int, dryRun bool) (*Outcome, error) {
	if err := apitypes.ValidateServiceName(service); err != nil {
		return nil, fmt.Errorf("remove: %w", err)
	}
	book, err := l.playbook(service, UninstallPlaybook)
	if err != nil {
		return nil, fmt.Errorf("remove: %w", err)
	}
	nodes, err := l.Client.Nodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("remove %s: list nodes: %w", service, err)
	}
	plan, err := PlanRemove(nodes, service, n)
	if err != nil {
		return nil, err
	}
	l.printPlan("remove", plan)
	names := nodeNames(plan.ChosenNodes())
	dependents, err := l.dependents(ctx, service)
	if err != nil {
		return nil, fmt.Errorf("remove %s: %w", service, err)
	}
	// Failed and left nodes are cleaned up from their records; the play
	// cannot reach them and is not expected to.
	var reachable []apitypes.Node
	for _, n := range plan.ChosenNodes() {
		if n.Status == apitypes.StatusAlive || n.Status == apitypes.StatusSuspect {
			reachable = append(reachable, n)
		}
	}
	after := WithService(nodes, names, service, false)
	if err := l.preflight(ctx, "remove", service, l.renders(service, after, nil, dependents)[1:], reachable); err != nil {
		return nil, err
	}
	if l.RecordDesired && !dryRun {
		if err := l.changeDesired(ctx, service, -n); err != nil {
			return nil, fmt.Errorf("remove %s: nothing uninstalled: %w", service, err)
		}
	}
	// The uninstall play targets the service group, so the run's inventory
	// still has the chosen nodes in it; templates see the cluster after.
	return l.apply(ctx, applySpec{
		action: "remove", service: service, book: book, plan: plan, dryRun: dryRun,
		invView: nodes, renderView: after, changed: names, add: false, before: nodes,
	})
}

type applySpec struct {
	action, service, book string
	plan                  *Plan
	dryRun                bool
	invView, renderView   []apitypes.Node
	changed               []string
	add                   bool
	before                []apitypes.Node
}

func (l *Launcher) apply(ctx context.Context, s applySpec) (*Outcome, error) {
	out := &Outcome{Plan: s.plan, Failed: map[string]string{}}
	chosen := s.plan.ChosenNodes()
	data := NewTemplateData(l.Cluster, s.renderView, chosen)
	dependents, err := l.dependents(ctx, s.service)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", s.action, s.service, err)
	}
	if s.dryRun {
		files, err := Render(filepath.Join(l.Templates, s.service), "", data)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", s.action, s.service, err)
		}
		out.Rendered = files
		l.printFiles(s.service, files, true)
		for _, d := range dependents {
			if err := l.reapply(ctx, d, s.renderView, true); err != nil {
				return out, err
			}
		}
		fmt.Fprintln(l.out(), "dry run: nothing was run or recorded")
		return out, nil
	}

	res, err := l.run(ctx, s.service, s.book, s.invView, chosen, data)
	if res != nil {
		out.Rendered = res.files
	}
	if err != nil {
		return out, fmt.Errorf("%s %s: %w", s.action, s.service, err)
	}
	for _, node := range chosen {
		if !res.result.Succeeded(node.Name) {
			out.Failed[node.Name] = hostFailure(res.result, node.Name)
			continue
		}
		if err := l.record(ctx, node, s.service, s.add); err != nil {
			out.Failed[node.Name] = err.Error()
			continue
		}
		out.Succeeded = append(out.Succeeded, node.Name)
	}
	if len(res.files) > 0 {
		hash := RenderHash(res.files)
		if !s.add {
			hash = "" // removed: nothing to compare any more
		}
		l.recordRendered(ctx, s.service, hashesFor(out.Succeeded, hash))
	}
	verb := map[bool]string{true: "recorded on", false: "removed from"}[s.add]
	fmt.Fprintf(l.out(), "%s %s: %s %d of %d node(s): %s\n", s.action, s.service, verb, len(out.Succeeded), len(chosen), strings.Join(out.Succeeded, ", "))
	l.awaitView(ctx, s.service, out.Succeeded, s.add)

	if len(out.Succeeded) > 0 {
		view := WithService(s.before, out.Succeeded, s.service, s.add)
		for _, d := range dependents {
			if err := l.reapply(ctx, d, view, false); err != nil {
				return out, err
			}
			out.Reapplied = append(out.Reapplied, d)
		}
	}
	if len(out.Failed) > 0 {
		return out, &PartialError{Action: s.action, Service: s.service, Failed: out.Failed}
	}
	return out, nil
}

// ReapplyDependents re-renders and re-applies every service that depends on
// service (per its policy's depends_on) with the cluster view given, where
// they run. reconcile uses it when a service's node set changed without a
// launch, e.g. a node died and nothing could replace it, so a load balancer
// stops sending to it. It returns the dependents re-applied.
func (l *Launcher) ReapplyDependents(ctx context.Context, service string, view []apitypes.Node) ([]string, error) {
	dependents, err := l.dependents(ctx, service)
	if err != nil {
		return nil, fmt.Errorf("re-apply dependents of %s: %w", service, err)
	}
	var done []string
	for _, d := range dependents {
		if err := l.reapply(ctx, d, view, false); err != nil {
			return done, err
		}
		done = append(done, d)
	}
	return done, nil
}

// reapply re-renders dependent's templates with view and re-runs its
// install playbook on the alive nodes running it.
func (l *Launcher) reapply(ctx context.Context, dependent string, view []apitypes.Node, dryRun bool) error {
	return l.reapplyOn(ctx, dependent, view, nil, dryRun)
}

// reapplyOn is reapply limited to the nodes in only (nil: all of them);
// the templates still see every node running dependent. What each node
// that succeeded was given is recorded.
func (l *Launcher) reapplyOn(ctx context.Context, dependent string, view []apitypes.Node, only []string, dryRun bool) error {
	data := dependentData(l.Cluster, view, dependent)
	targets := data.Targets
	if only != nil {
		targets = slices.DeleteFunc(slices.Clone(targets), func(n apitypes.Node) bool { return !slices.Contains(only, n.Name) })
	}
	if len(targets) == 0 {
		fmt.Fprintf(l.out(), "dependent %s runs on no alive node; nothing to re-apply\n", dependent)
		return nil
	}
	fmt.Fprintf(l.out(), "dependent %s: re-applying on %s\n", dependent, strings.Join(nodeNames(targets), ", "))
	if dryRun {
		files, err := Render(filepath.Join(l.Templates, dependent), "", data)
		if err != nil {
			return fmt.Errorf("re-apply %s: %w", dependent, err)
		}
		l.printFiles(dependent, files, true)
		return nil
	}
	book, err := l.playbook(dependent, InstallPlaybook)
	if err != nil {
		return fmt.Errorf("re-apply %s: %w", dependent, err)
	}
	res, err := l.run(ctx, dependent, book, view, targets, data)
	if err != nil {
		return fmt.Errorf("re-apply %s: %w", dependent, err)
	}
	failed := map[string]string{}
	var given []string
	for _, t := range targets {
		if !res.result.Succeeded(t.Name) {
			failed[t.Name] = hostFailure(res.result, t.Name)
		} else {
			given = append(given, t.Name)
		}
	}
	if len(res.files) > 0 {
		l.recordRendered(ctx, dependent, hashesFor(given, RenderHash(res.files)))
	}
	if len(failed) > 0 {
		return &PartialError{Action: "re-apply", Service: dependent, Failed: failed}
	}
	return nil
}

type runOutcome struct {
	files  []RenderedFile
	result *RunResult
}

// run renders service's templates into its build directory, writes the
// run's inventory from view and runs book limited to targets.
func (l *Launcher) run(ctx context.Context, service, book string, view, targets []apitypes.Node, data TemplateData) (*runOutcome, error) {
	dir, err := filepath.Abs(l.buildDir(service))
	if err != nil {
		return nil, err
	}
	files, err := Render(filepath.Join(l.Templates, service), dir, data)
	if err != nil {
		return nil, err
	}
	l.printFiles(service, files, false)
	tmp, err := os.MkdirTemp("", "rpi-launch-*")
	if err != nil {
		return nil, fmt.Errorf("write run inventory: %w", err)
	}
	defer os.RemoveAll(tmp)
	built := inventory.Build(view, l.Inventory)
	for _, m := range built.LeftOut {
		fmt.Fprintf(l.out(), "warning: %s\n", m)
	}
	for _, t := range targets {
		if _, ok := built.Vars[t.Name]; !ok {
			return &runOutcome{files: files}, fmt.Errorf("refuse to run %s: node %s is not in the run's inventory: %s", book, apitypes.Quote(t.Name), strings.Join(built.LeftOut, "; "))
		}
	}
	inv, err := built.StaticJSON()
	if err != nil {
		return nil, err
	}
	invPath := filepath.Join(tmp, "inventory.json")
	if err := os.WriteFile(invPath, inv, 0o600); err != nil {
		return nil, fmt.Errorf("write run inventory: %w", err)
	}
	res, err := l.Runner.Run(ctx, RunSpec{
		Playbook:  book,
		Inventory: invPath,
		Limit:     nodeNames(targets),
		ExtraVars: map[string]any{BuildDirVar: dir, "rpi_service": service},
		Args:      l.ExtraArgs,
	})
	if err != nil {
		return &runOutcome{files: files}, err
	}
	return &runOutcome{files: files, result: res}, nil
}

// record adds or removes service in node's metadata through node's own
// agent.
func (l *Launcher) record(ctx context.Context, node apitypes.Node, service string, add bool) error {
	c, err := toolkit.NodeClient(l.Client, node)
	if err != nil {
		return err
	}
	if add {
		_, err = c.AddService(ctx, service)
	} else {
		_, err = c.RemoveService(ctx, service)
	}
	if err != nil {
		return fmt.Errorf("playbook succeeded but recording failed: %w", err)
	}
	return nil
}

// awaitView waits until the agent l.Client reads from lists service on every
// node in names (add) or on none of them (remove). Each node's agent wrote
// its own record; the others learn it by gossip, so without this wait the
// next rpi-launch (asking, say, the first configured agent) could render a
// load balancer from a view that misses the new web servers.
func (l *Launcher) awaitView(ctx context.Context, service string, names []string, add bool) {
	if len(names) == 0 {
		return
	}
	timeout := l.SettleTimeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	state := map[bool]string{true: "running", false: "gone"}[add]
	missing := names
	var lastErr error
	for {
		nodes, err := l.Client.ServiceNodes(ctx, service)
		var unreachable *client.UnreachableError
		switch {
		case errors.As(err, &unreachable) && ctx.Err() == nil:
			// The agent is gone (it may be the node that just failed);
			// gossip will not bring it back, so waiting is pointless.
			fmt.Fprintf(l.out(), "warning: cannot confirm that %s sees %s %s on %s: %v; the next command should ask another agent\n",
				l.Client.BaseURL, service, state, strings.Join(names, ", "), err)
			return
		case err != nil:
			if ctx.Err() == nil { // not our own deadline cutting the request
				lastErr = err
			}
		default:
			lastErr = nil
			running := map[string]bool{}
			for _, n := range nodes {
				running[n.Name] = true
			}
			missing = nil
			for _, name := range names {
				if running[name] != add {
					missing = append(missing, name)
				}
			}
			if len(missing) == 0 {
				return
			}
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				fmt.Fprintf(l.out(), "warning: after %v, cannot confirm that %s sees %s %s on %s: %v\n",
					timeout, l.Client.BaseURL, service, state, strings.Join(names, ", "), lastErr)
				return
			}
			fmt.Fprintf(l.out(), "warning: after %v, %s does not yet see %s %s on %s; gossip may be slow, the next command may not see it either\n",
				timeout, l.Client.BaseURL, service, state, strings.Join(missing, ", "))
			return
		case <-tick.C:
		}
	}
}

func hostFailure(r *RunResult, host string) string {
	s, ok := r.Hosts[host]
	if !ok {
		return "not in the play recap (no task ran on it)"
	}
	return fmt.Sprintf("playbook failed (failed=%d unreachable=%d)", s.Failed, s.Unreachable)
}

func (l *Launcher) printPlan(action string, p *Plan) {
	w := l.out()
	fmt.Fprintf(w, "plan: %s %s on %d node(s), %d eligible\n", action, p.Service, len(p.Chosen), len(p.Eligible))
	for i, c := range p.Eligible {
		mark := "eligible"
		if i < len(p.Chosen) {
			mark = "chosen  "
		}
		avoid := ""
		if c.Avoided > 0 {
			avoid = fmt.Sprintf(" runs %d avoided service(s)", c.Avoided)
		}
		fmt.Fprintf(w, "  %s %-20s %-15s busy %.3f phi %.2f services %d%s\n", mark, apitypes.Printable(c.Node.Name), apitypes.Printable(c.Node.Address), c.Score, c.Node.Phi, len(c.Node.Services), avoid)
	}
	for _, x := range p.Excluded {
		fmt.Fprintf(w, "  excluded %-20s %-15s %s\n", apitypes.Printable(x.Node.Name), apitypes.Printable(x.Node.Address), apitypes.Printable(x.Reason))
	}
}

func (l *Launcher) printFiles(service string, files []RenderedFile, content bool) {
	w := l.out()
	if len(files) == 0 {
		return
	}
	fmt.Fprintf(w, "rendered %s: %d file(s)\n", service, len(files))
	for _, f := range files {
		fmt.Fprintf(w, "  %s\n", f.Path)
		if content {
			fmt.Fprintf(w, "--- %s/%s\n%s", service, f.Path, f.Content)
			if len(f.Content) > 0 && f.Content[len(f.Content)-1] != '\n' {
				fmt.Fprintln(w)
			}
		}
	}
}

func nodeNames(nodes []apitypes.Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Name
	}
	return out
}

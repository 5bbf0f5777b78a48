package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit"
)

// Reconcile defaults.
const (
	DefaultReconcileInterval = 10 * time.Second
	DefaultBackoffMin        = 10 * time.Second
	DefaultBackoffMax        = 5 * time.Minute
	// DefaultLaunchSettle is how long a replica reconcile launched counts
	// as running while the agent asked has not yet seen its record (gossip
	// lag), so it is not launched twice.
	DefaultLaunchSettle = 2 * time.Minute
)

// Reconciler keeps each service at its desired replica count
// (/v1/desired), following the service's policy (service.yaml):
//
//   - A node counts as running a service when its record lists it, it is
//     alive and its suspicion is below the policy's phi_threshold. A failed
//     node whose stale record still lists the service does not count.
//   - A node that stops counting is given the policy's grace_period: if it
//     comes back within it nothing happens (a flapping node causes no
//     launches and no re-renders). After it, on_failure decides: relaunch
//     starts the missing replicas on the least busy nodes through
//     Launcher.Launch (the path of `rpi-launch N SERVICE`, without raising
//     the desired count); alert logs one alert line per change and does
//     nothing else; none ignores the service altogether.
//   - When the set of nodes running a service changes (a node died past its
//     grace, a replacement started, a node came back), the services that
//     depend on it are re-rendered and re-applied, even if no replacement
//     was possible, so a load balancer stops sending to a dead backend.
//   - A relaunch that fails (the play failed, or there are not enough
//     candidates) backs the service off exponentially, from BackoffMin to
//     BackoffMax; a success resets it.
//   - The desired count is a floor. When a replaced node comes back the
//     service runs on more nodes than desired; reconcile leaves the extra
//     replica running (it is healthy capacity, and removing one would put
//     a second change on top of a recovery) and logs the surplus once.
//     `rpi-launch --remove N SERVICE` is how replicas are taken away.
//
// A Reconciler is used by one goroutine at a time: Reconcile and Watch must
// not run concurrently.
type Reconciler struct {
	// Launcher launches replacements and re-applies dependents; its Client
	// is the first agent asked. Its RecordDesired is ignored (off).
	Launcher *Launcher
	// Agents are more agent URLs Watch may move to when the event stream of
	// the agent it follows breaks; the alive members it has seen are tried
	// too.
	Agents []string
	// Interval is how often Watch re-checks without events; default
	// DefaultReconcileInterval.
	Interval time.Duration
	// BackoffMin and BackoffMax bound the wait after a failed relaunch;
	// defaults DefaultBackoffMin and DefaultBackoffMax.
	BackoffMin, BackoffMax time.Duration
	// IgnoreGrace treats nodes that are already down as past their grace
	// period: a one-off `rpi-launch reconcile` has no memory of when they
	// went down and is run to act now.
	IgnoreGrace bool
	// ProbeNodes also runs each service's install playbook in check mode
	// on the nodes running it, so a rendered file deleted or edited on a
	// node counts as drift too (rpi-launch reconcile --check).
	ProbeNodes bool
	// Log receives one structured line per decision; nil discards them.
	Log *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	current *client.Client
	members []string

	services map[string]*serviceTrack
}

// serviceTrack is what a Reconciler remembers about one service between
// passes.
type serviceTrack struct {
	// Track is what Decide reads and returns.
	Track
	// pendingNow are the nodes in their grace period in this pass.
	pendingNow []string
	// driftFailures and driftRetryAt back off drift repairs that fail.
	driftFailures int
	driftRetryAt  time.Time
}

// PassResult is what one reconcile pass saw and did.
type PassResult struct {
	States []ServiceState
	// Launched maps services to the nodes a replacement started on.
	Launched map[string][]string
	// Reapplied maps services to the dependents re-applied for them.
	Reapplied map[string][]string
	// Repaired maps services to the nodes re-applied because what they
	// were last given had drifted from what the templates give now.
	Repaired map[string][]string
	// Alerts are the alert lines logged in this pass.
	Alerts []string
	// WakeAt is the earliest time a grace period or back-off ends; zero when
	// nothing is waiting.
	WakeAt time.Time
}

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Reconciler) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Client is the agent the reconciler currently asks.
func (r *Reconciler) Client() *client.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.current == nil {
		r.current = r.Launcher.Client
	}
	return r.current
}

func (r *Reconciler) setClient(c *client.Client) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.current = c
}

func (r *Reconciler) track(svc string) *serviceTrack {
	if r.services == nil {
		r.services = map[string]*serviceTrack{}
	}
	t := r.services[svc]
	if t == nil {
		t = &serviceTrack{}
		r.services[svc] = t
	}
	return t
}

func (r *Reconciler) backoff(failures int) time.Duration {
	lo, hi := r.BackoffMin, r.BackoffMax
	if lo <= 0 {
		lo = DefaultBackoffMin
	}
	if hi <= 0 {
		hi = DefaultBackoffMax
	}
	d := lo
	for i := 1; i < failures && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// Reconcile makes one pass: it reads the cluster view and the desired
// state from the current agent and acts on every service as the type's
// documentation describes. Errors acting on one service are logged and do
// not stop the others; the error returned is for a pass that could not
// read the cluster.
func (r *Reconciler) Reconcile(ctx context.Context) (*PassResult, error) {
	c := r.Client()
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("reconcile: list nodes: %w", err)
	}
	desired, err := c.Desired(ctx)
	if err != nil {
		return nil, fmt.Errorf("reconcile: read desired state: %w", err)
	}
	r.rememberMembers(c, nodes)

	l := *r.Launcher
	l.Client, l.RecordDesired, l.SkipUnreachable = c, false, true
	entries := map[string]*apitypes.DesiredService{}
	for i := range desired {
		entries[desired[i].Service] = &desired[i]
	}
	local := func(svc string) (Policy, error) { return LoadPolicy(l.Playbooks, svc) }
	policies := map[string]Policy{}
	loadPolicy := func(svc string) (Policy, error) {
		p, _, err := EffectivePolicy(entries[svc], svc, local)
		if err == nil {
			policies[svc] = p
		}
		return p, err
	}
	res := &PassResult{
		States:    ServiceStates(nodes, desired, local),
		Launched:  map[string][]string{},
		Reapplied: map[string][]string{},
		Repaired:  map[string][]string{},
	}
	for _, st := range res.States {
		loadPolicy(st.Service)
	}
	// Services known from earlier passes whose every node vanished from the
	// view (and that have no desired count) still need their dependents
	// re-rendered.
	for svc := range r.services {
		if !slices.ContainsFunc(res.States, func(s ServiceState) bool { return s.Service == svc }) {
			if _, err := loadPolicy(svc); err == nil {
				res.States = append(res.States, ServiceState{Service: svc, OnFailure: policies[svc].OnFailure, Actual: []string{}, Down: []DownNode{}})
			}
		}
	}
	sort.Slice(res.States, func(i, j int) bool { return res.States[i].Service < res.States[j].Service })
	for _, st := range res.States {
		if ctx.Err() != nil {
			return res, nil
		}
		if st.PolicyError != "" {
			r.log().Error("service skipped: bad policy", "service", st.Service, "err", st.PolicyError)
			continue
		}
		pol := policies[st.Service]
		if pol.OnFailure == OnFailureNone {
			delete(r.services, st.Service)
			continue
		}
		r.reconcileService(ctx, &l, nodes, st, pol, res)
	}
	// Drift last, and only in a pass that changed nothing: a launch or
	// re-apply above rendered from a view the agent may not show yet, and
	// comparing with it would undo them. The next pass looks again.
	if len(res.Launched) > 0 || len(res.Reapplied) > 0 {
		return res, nil
	}
	for _, st := range res.States {
		if ctx.Err() != nil {
			return res, nil
		}
		pol, ok := policies[st.Service]
		if !ok || st.PolicyError != "" || pol.OnFailure == OnFailureNone {
			continue
		}
		r.repairDrift(ctx, &l, nodes, st, pol, res)
	}
	return res, nil
}

// repairDrift re-applies service where what a node was last given (the
// hash recorded in the cluster) differs from what its templates give now:
// a re-apply that failed, or one made from a view that missed a change.
// It waits while a service it depends on has a node in its grace period,
// so a flapping backend is not dropped from a load balancer early, and a
// repair that fails backs off as a failed relaunch does.
func (r *Reconciler) repairDrift(ctx context.Context, l *Launcher, nodes []apitypes.Node, st ServiceState, pol Policy, res *PassResult) {
	svc := st.Service
	t := r.track(svc)
	log := r.log().With("service", svc)
	for _, dep := range pol.DependsOn {
		if dt := r.services[dep]; dt != nil && len(dt.pendingNow) > 0 {
			return
		}
	}
	// Read the entry again: the passes above record what they applied.
	d, err := l.Client.DesiredFor(ctx, svc)
	if err != nil || (len(d.Rendered) == 0 && !r.ProbeNodes) {
		return
	}
	hash, ok, err := l.ExpectedRender(svc, nodes)
	if err != nil || !ok {
		if err != nil {
			log.Error("cannot compute drift", "err", err)
		}
		return
	}
	drifted := Drifted(st.Actual, d.Rendered, hash)
	if r.ProbeNodes {
		changed, unknown, err := l.CheckNodes(ctx, svc, nodes, st.Actual)
		if err != nil {
			log.Error("cannot check the nodes for drift", "err", err)
		}
		for _, n := range sortedKeysOf(unknown) {
			log.Warn("cannot check node for drift", "node", n, "reason", unknown[n])
		}
		drifted = sortedUnique(append(drifted, changed...))
	}
	if len(drifted) == 0 {
		t.driftFailures, t.driftRetryAt = 0, time.Time{}
		return
	}
	now := r.now()
	if now.Before(t.driftRetryAt) {
		log.Info("drift repair backing off", "nodes", strings.Join(drifted, ","), "retry_at", t.driftRetryAt.Format(time.RFC3339))
		res.wake(t.driftRetryAt)
		return
	}
	log.Warn("drift: re-applying", "nodes", strings.Join(drifted, ","))
	if err := l.reapplyOn(ctx, svc, nodes, drifted, false); err != nil {
		if ctx.Err() != nil {
			return
		}
		t.driftFailures++
		wait := r.backoff(t.driftFailures)
		t.driftRetryAt = now.Add(wait)
		res.wake(t.driftRetryAt)
		log.Error("drift repair failed", "failures", t.driftFailures, "retry_in", wait, "err", err)
		return
	}
	t.driftFailures, t.driftRetryAt = 0, time.Time{}
	res.Repaired[svc] = drifted
}

// reconcileService executes Decide's decision for one service: it logs,
// relaunches, and re-applies dependents with the view the decision names.
func (r *Reconciler) reconcileService(ctx context.Context, l *Launcher, nodes []apitypes.Node, st ServiceState, pol Policy, res *PassResult) {
	svc := st.Service
	t := r.track(svc)
	now := r.now()
	log := r.log().With("service", svc)
	obs := Observation{Now: now, State: st, Policy: pol, IgnoreGrace: r.IgnoreGrace}
	for _, n := range nodes {
		obs.InView = append(obs.InView, n.Name)
		if slices.Contains(n.Services, svc) {
			obs.Listing = append(obs.Listing, n.Name)
		}
	}
	d := Decide(obs, t.Track)
	t.Track, t.pendingNow = d.Next, d.Pending
	if !d.WakeAt.IsZero() {
		res.wake(d.WakeAt)
	}
	for _, name := range sortedKeysOf(d.NewlyDown) {
		log.Info("node down", "node", name, "reason", d.NewlyDown[name], "grace", time.Duration(pol.GracePeriod))
	}
	reapply := d.ReapplyDependents
	switch {
	case d.BackingOff:
		log.Info("relaunch backing off", "missing", d.Missing, "retry_at", t.RetryAt.Format(time.RFC3339))
	case d.Relaunch > 0:
		log.Warn("relaunching", "missing", d.Relaunch, "desired", st.Desired, "running", strings.Join(st.Actual, ","), "down", strings.Join(d.Gone, ","))
		out, err := l.Launch(ctx, svc, d.Relaunch, false)
		if ctx.Err() != nil {
			return
		}
		var started []string
		if out != nil {
			started = out.Succeeded
		}
		if len(started) > 0 {
			res.Launched[svc] = started
			if len(out.Reapplied) > 0 {
				res.Reapplied[svc] = out.Reapplied
			}
		}
		t.Track, reapply = AfterRelaunch(d, t.Track, started, err != nil, now, r.backoff)
		if t.Failures > 0 {
			res.wake(t.RetryAt)
			log.Error("relaunch failed", "started", len(started), "missing", d.Relaunch, "failures", t.Failures, "retry_in", t.RetryAt.Sub(now), "err", err)
		} else {
			log.Info("relaunched", "nodes", strings.Join(started, ","))
		}
	case d.Alert != "":
		res.Alerts = append(res.Alerts, d.Alert)
		log.Warn("alert", "missing", d.Missing, "desired", st.Desired, "running", strings.Join(d.Effective, ","), "down", strings.Join(d.Gone, ","))
	case d.Surplus != "":
		log.Info("more replicas than desired; leaving them running", "desired", st.Desired, "running", strings.Join(d.Effective, ","))
	}

	// Dependents follow the node set, including a death nothing replaced.
	if reapply {
		view := WithService(nodes, d.Gone, svc, false)
		view = WithService(view, d.Settling, svc, true)
		log.Info("node set changed; re-applying dependents", "was", strings.Join(t.Applied, ","), "now", strings.Join(d.Effective, ","))
		deps, err := l.ReapplyDependents(ctx, svc, view)
		if len(deps) > 0 {
			res.Reapplied[svc] = append(res.Reapplied[svc], deps...)
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Error("re-apply dependents failed; retrying next pass", "err", err)
			}
			return
		}
		t.Applied = d.Effective
	}
}

func (p *PassResult) wake(at time.Time) {
	if p.WakeAt.IsZero() || at.Before(p.WakeAt) {
		p.WakeAt = at
	}
}

// rememberMembers keeps the API URLs of the alive members, for failing over.
func (r *Reconciler) rememberMembers(base *client.Client, nodes []apitypes.Node) {
	var urls []string
	for _, n := range nodes {
		if n.Status != apitypes.StatusAlive {
			continue
		}
		if nc, err := toolkit.NodeClient(base, n); err == nil {
			urls = append(urls, nc.BaseURL)
		}
	}
	r.mu.Lock()
	r.members = urls
	r.mu.Unlock()
}

// failoverCandidates lists agents to try after broken: the configured ones
// and the members seen, broken itself last (it may just have restarted).
func (r *Reconciler) failoverCandidates(broken string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, a := range append(slices.Clone(r.Agents), r.members...) {
		u, err := client.NormalizeURL(a)
		if err != nil || u == broken || slices.Contains(out, u) {
			continue
		}
		out = append(out, u)
	}
	return append(out, broken)
}

// Watch reconciles until ctx ends: after every event on the current agent's
// stream (/v1/events) that may change a service's node set or desired
// count, when a grace period or back-off ends, and every Interval. When the
// stream breaks it moves to another agent (the configured ones, then the
// members it has seen) and keeps going. Cancelling ctx is the way to stop
// it; it returns nil then, after its goroutines have ended.
func (r *Reconciler) Watch(ctx context.Context) error {
	interval := r.Interval
	if interval <= 0 {
		interval = DefaultReconcileInterval
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	trigger := make(chan struct{}, 1)
	followDone := make(chan struct{})
	go func() {
		defer close(followDone)
		r.follow(ctx, trigger)
	}()
	defer func() { cancel(); <-followDone }()

	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-trigger:
		case <-timer.C:
		}
		res, err := r.Reconcile(ctx)
		if ctx.Err() != nil {
			return nil
		}
		next := interval
		if err != nil {
			r.log().Warn("reconcile pass failed", "agent", r.Client().BaseURL, "err", err)
		} else if !res.WakeAt.IsZero() {
			if d := res.WakeAt.Sub(r.now()) + 10*time.Millisecond; d < next {
				next = max(d, 10*time.Millisecond)
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// follow reads the current agent's event stream and pokes trigger on
// events that matter; when the stream breaks it moves to another agent.
func (r *Reconciler) follow(ctx context.Context, trigger chan<- struct{}) {
	poke := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	seen := map[string]string{}
	var wait time.Duration
	for ctx.Err() == nil {
		c := r.Client()
		r.log().Info("following events", "agent", c.BaseURL)
		started, events := time.Now(), 0
		err := c.Events(ctx, func(ev apitypes.Event) error {
			events++
			key := ev.Node.Status + "|" + strings.Join(ev.Node.Services, ",")
			if ev.Kind == apitypes.EventUpdate && seen[ev.Node.Name] == key {
				// Records change on every monitoring sample; only a change
				// of status or services matters here.
				return nil
			}
			seen[ev.Node.Name] = key
			r.log().Debug("event", "kind", ev.Kind, "node", ev.Node.Name)
			poke()
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("stream ended")
		}
		r.log().Warn("event stream broke; finding another agent", "agent", c.BaseURL, "err", err)
		poke() // events may have been missed
		// A stream that keeps breaking at once (an agent without events,
		// a proxy cutting it) is retried with a growing pause, not a spin.
		if events > 0 || time.Since(started) > 10*time.Second {
			wait = 0
		} else {
			wait = min(max(2*wait, time.Second), 30*time.Second)
		}
		if !sleepCtx(ctx, wait) {
			return
		}
		next, ferr := client.Find(ctx, client.FindOptions{Agents: r.failoverCandidates(c.BaseURL), Token: c.Token})
		if ctx.Err() != nil {
			return
		}
		if ferr != nil {
			r.log().Error("no agent answered; retrying", "err", ferr)
			wait = min(max(2*wait, time.Second), 30*time.Second)
			if !sleepCtx(ctx, wait) {
				return
			}
			continue
		}
		next.HTTP, next.Gate = c.HTTP, c.Gate
		if next.BaseURL != c.BaseURL {
			r.log().Info("moved to another agent", "from", c.BaseURL, "to", next.BaseURL)
		}
		r.setClient(next)
	}
}

// sleepCtx waits d or until ctx ends; it reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func sortedUnique(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

package launcher

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Track is what reconcile remembers about one service between passes. It
// is plain data: Decide reads one and returns the next.
type Track struct {
	// DownSince is when each node listing the service was first seen not
	// counting (down, or vanished from the view after being rendered).
	DownSince map[string]time.Time
	// Applied is the node set dependents were last rendered with; nil
	// until the first pass, which takes the nodes listing the service (the
	// set rpi-launch last rendered).
	Applied []string
	// Launched are nodes a relaunch recorded the service on that the view
	// did not show yet, with when.
	Launched map[string]time.Time
	// Failures and RetryAt back off relaunches that fail.
	Failures int
	RetryAt  time.Time
	// Noted is the last alert or surplus line logged, to log each once.
	Noted string
}

// Observation is what one pass sees of one service.
type Observation struct {
	Now    time.Time
	State  ServiceState
	Policy Policy
	// Listing are the nodes whose record lists the service (any status);
	// InView are all nodes of the view.
	Listing, InView []string
	// IgnoreGrace treats nodes already down as past their grace period.
	IgnoreGrace bool
}

// Decision is what reconcile should do for one service in this pass.
type Decision struct {
	// NewlyDown are nodes seen not counting for the first time, with why.
	NewlyDown map[string]string
	// Pending are down nodes within their grace period (still counted);
	// Gone are down nodes past it; Settling are replicas launched earlier
	// that the view does not show yet (counted).
	Pending, Gone, Settling []string
	// Effective are the nodes counted as running it: healthy, settling
	// and pending.
	Effective []string
	// Missing is desired minus effective (negative: a surplus).
	Missing int
	// Relaunch is how many replicas to start now (on_failure relaunch).
	Relaunch int
	// BackingOff is set when replicas are missing but the last relaunch
	// failed and its back-off has not ended.
	BackingOff bool
	// Alert is an alert line to log now (on_failure alert), once per
	// change; Surplus is a line to log about extra replicas, once.
	Alert, Surplus string
	// ReapplyDependents is set when the node set changed since dependents
	// were last rendered; the view to render them with is the live one
	// without Gone, with Settling.
	ReapplyDependents bool
	// WakeAt is when a grace period or back-off ends; zero for none.
	WakeAt time.Time
	// Next is the track after this decision, before anything is done.
	Next Track
}

// Decide is reconcile's decision for one service: a pure function of what
// the pass sees and what earlier passes remembered. Executing it (launches,
// re-applies, logs) is Reconciler's job; AfterRelaunch folds a relaunch's
// outcome back into the track.
func Decide(o Observation, prev Track) Decision {
	t := Track{
		DownSince: maps.Clone(prev.DownSince), Applied: slices.Clone(prev.Applied), Launched: maps.Clone(prev.Launched),
		Failures: prev.Failures, RetryAt: prev.RetryAt, Noted: prev.Noted,
	}
	if t.DownSince == nil {
		t.DownSince = map[string]time.Time{}
	}
	if t.Launched == nil {
		t.Launched = map[string]time.Time{}
	}
	d := Decision{NewlyDown: map[string]string{}}
	wake := func(at time.Time) {
		if d.WakeAt.IsZero() || at.Before(d.WakeAt) {
			d.WakeAt = at
		}
	}
	if t.Applied == nil {
		t.Applied = sortedUnique(o.Listing)
	}
	grace := time.Duration(o.Policy.GracePeriod)

	down := map[string]string{}
	for _, n := range o.State.Down {
		down[n.Name] = n.Reason
	}
	for _, name := range t.Applied {
		if !slices.Contains(o.InView, name) {
			down[name] = "not in the cluster view"
		}
	}
	for name := range t.DownSince {
		if _, ok := down[name]; !ok {
			delete(t.DownSince, name) // came back, or no longer lists it
		}
	}
	for _, name := range sortedKeysOf(down) {
		since, ok := t.DownSince[name]
		if !ok {
			since = o.Now
			t.DownSince[name] = since
			d.NewlyDown[name] = down[name]
		}
		if !o.IgnoreGrace && o.Now.Sub(since) < grace {
			d.Pending = append(d.Pending, name)
			wake(since.Add(grace))
		} else {
			d.Gone = append(d.Gone, name)
		}
	}
	for name, at := range t.Launched {
		switch {
		case slices.Contains(o.Listing, name):
			delete(t.Launched, name)
		case o.Now.Sub(at) < DefaultLaunchSettle:
			d.Settling = append(d.Settling, name)
		default:
			delete(t.Launched, name)
		}
	}
	slices.Sort(d.Settling)
	actual := append(slices.Clone(o.State.Actual), d.Settling...)
	d.Effective = sortedUnique(append(actual, d.Pending...))
	d.Missing = o.State.Desired - len(d.Effective)

	switch {
	case d.Missing > 0 && o.Policy.OnFailure == OnFailureRelaunch:
		if o.Now.Before(t.RetryAt) {
			d.BackingOff = true
			wake(t.RetryAt)
		} else {
			d.Relaunch = d.Missing
		}
	case d.Missing > 0 && o.Policy.OnFailure == OnFailureAlert:
		line := fmt.Sprintf("alert: %s runs on %d of %d desired node(s); down: %s", o.State.Service, len(d.Effective), o.State.Desired, strings.Join(d.Gone, ", "))
		if line != t.Noted {
			t.Noted, d.Alert = line, line
		}
	case d.Missing < 0 && o.State.HasDesired:
		line := fmt.Sprintf("surplus %d", -d.Missing)
		if line != t.Noted {
			t.Noted, d.Surplus = line, line
		}
	case d.Missing == 0:
		t.Noted = ""
	}
	d.ReapplyDependents = !slices.Equal(d.Effective, t.Applied)
	d.Next = t
	return d
}

// AfterRelaunch folds a relaunch's outcome into the track: the nodes it
// started on settle, dependents count as rendered with them (Launch
// re-applied them), and a relaunch that started fewer than wanted backs
// off (backoff gives the wait after n failures); a full one resets it.
// It reports whether dependents still need a re-apply.
func AfterRelaunch(d Decision, t Track, started []string, failed bool, now time.Time, backoff func(failures int) time.Duration) (Track, bool) {
	reapply := d.ReapplyDependents
	for _, name := range started {
		t.Launched[name] = now
	}
	if len(started) > 0 {
		t.Applied = sortedUnique(append(slices.Clone(d.Effective), started...))
		reapply = false
	}
	if failed || len(started) < d.Relaunch {
		t.Failures++
		t.RetryAt = now.Add(backoff(t.Failures))
	} else {
		t.Failures, t.RetryAt = 0, time.Time{}
	}
	return t, reapply
}

func sortedKeysOf(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

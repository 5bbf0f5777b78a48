package launcher

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	relaunch := Policy{OnFailure: OnFailureRelaunch, GracePeriod: Duration(30 * time.Second)}
	alert := Policy{OnFailure: OnFailureAlert, GracePeriod: Duration(30 * time.Second)}
	state := func(desired int, actual []string, down ...DownNode) ServiceState {
		return ServiceState{Service: "web", Desired: desired, HasDesired: true, Actual: actual, Down: down}
	}
	view := []string{"pi-1", "pi-2", "pi-3", "pi-4"}
	for _, tc := range []struct {
		name string
		obs  Observation
		prev Track
		// what is checked of the decision
		relaunch, missing int
		pending, gone     []string
		backingOff        bool
		alert             string
		reapply           bool
		wakeAt            time.Time
		noted             string
	}{{
		name: "first pass, all healthy: nothing to do",
		obs:  Observation{Now: t0, State: state(2, []string{"pi-1", "pi-2"}), Policy: relaunch, Listing: []string{"pi-1", "pi-2"}, InView: view},
	}, {
		name:    "a node just failed: within grace it still counts",
		obs:     Observation{Now: t0, State: state(2, []string{"pi-1"}, DownNode{"pi-2", "failed"}), Policy: relaunch, Listing: []string{"pi-1", "pi-2"}, InView: view},
		prev:    Track{Applied: []string{"pi-1", "pi-2"}},
		pending: []string{"pi-2"}, wakeAt: t0.Add(30 * time.Second),
	}, {
		name:     "past grace: relaunch the missing one, re-apply dependents",
		obs:      Observation{Now: t0.Add(31 * time.Second), State: state(2, []string{"pi-1"}, DownNode{"pi-2", "failed"}), Policy: relaunch, Listing: []string{"pi-1", "pi-2"}, InView: view},
		prev:     Track{Applied: []string{"pi-1", "pi-2"}, DownSince: map[string]time.Time{"pi-2": t0}},
		relaunch: 1, missing: 1, gone: []string{"pi-2"}, reapply: true,
	}, {
		name:     "a one-off reconcile ignores grace",
		obs:      Observation{Now: t0, State: state(2, []string{"pi-1"}, DownNode{"pi-2", "failed"}), Policy: relaunch, Listing: []string{"pi-1", "pi-2"}, InView: view, IgnoreGrace: true},
		prev:     Track{Applied: []string{"pi-1", "pi-2"}},
		relaunch: 1, missing: 1, gone: []string{"pi-2"}, reapply: true,
	}, {
		name:    "backing off after a failed relaunch",
		obs:     Observation{Now: t0.Add(time.Minute), State: state(2, []string{"pi-1"}, DownNode{"pi-2", "failed"}), Policy: relaunch, Listing: []string{"pi-1", "pi-2"}, InView: view},
		prev:    Track{Applied: []string{"pi-1"}, DownSince: map[string]time.Time{"pi-2": t0}, Failures: 1, RetryAt: t0.Add(70 * time.Second)},
		missing: 1, gone: []string{"pi-2"}, backingOff: true, wakeAt: t0.Add(70 * time.Second),
	}, {
		name:    "a node that vanished from the view counts as down",
		obs:     Observation{Now: t0.Add(time.Hour), State: state(2, []string{"pi-1"}), Policy: relaunch, Listing: []string{"pi-1"}, InView: []string{"pi-1", "pi-3"}},
		prev:    Track{Applied: []string{"pi-1", "pi-2"}, DownSince: map[string]time.Time{"pi-2": t0}},
		missing: 1, relaunch: 1, gone: []string{"pi-2"}, reapply: true,
	}, {
		name:    "a replica launched earlier but not yet in the view settles",
		obs:     Observation{Now: t0.Add(10 * time.Second), State: state(2, []string{"pi-1"}), Policy: relaunch, Listing: []string{"pi-1"}, InView: view},
		prev:    Track{Applied: []string{"pi-1", "pi-3"}, Launched: map[string]time.Time{"pi-3": t0}},
		missing: 0,
	}, {
		name:    "alert once",
		obs:     Observation{Now: t0.Add(time.Minute), State: state(2, []string{"pi-1"}, DownNode{"pi-2", "failed"}), Policy: alert, Listing: []string{"pi-1", "pi-2"}, InView: view},
		prev:    Track{Applied: []string{"pi-1"}, DownSince: map[string]time.Time{"pi-2": t0}},
		missing: 1, gone: []string{"pi-2"},
		alert: "alert: web runs on 1 of 2 desired node(s); down: pi-2", noted: "alert: web runs on 1 of 2 desired node(s); down: pi-2",
	}, {
		name:    "the same alert is not repeated",
		obs:     Observation{Now: t0.Add(2 * time.Minute), State: state(2, []string{"pi-1"}, DownNode{"pi-2", "failed"}), Policy: alert, Listing: []string{"pi-1", "pi-2"}, InView: view},
		prev:    Track{Applied: []string{"pi-1"}, DownSince: map[string]time.Time{"pi-2": t0}, Noted: "alert: web runs on 1 of 2 desired node(s); down: pi-2"},
		missing: 1, gone: []string{"pi-2"}, noted: "alert: web runs on 1 of 2 desired node(s); down: pi-2",
	}, {
		name:    "a node came back: its grace is forgotten, dependents follow",
		obs:     Observation{Now: t0.Add(time.Minute), State: state(2, []string{"pi-1", "pi-2", "pi-3"}), Policy: relaunch, Listing: []string{"pi-1", "pi-2", "pi-3"}, InView: view},
		prev:    Track{Applied: []string{"pi-1", "pi-3"}, DownSince: map[string]time.Time{"pi-2": t0}},
		missing: -1, reapply: true, noted: "surplus 1",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.obs, tc.prev)
			if d.Relaunch != tc.relaunch || d.Missing != tc.missing || d.BackingOff != tc.backingOff || d.ReapplyDependents != tc.reapply {
				t.Errorf("relaunch %d missing %d backing off %v reapply %v; want %d %d %v %v",
					d.Relaunch, d.Missing, d.BackingOff, d.ReapplyDependents, tc.relaunch, tc.missing, tc.backingOff, tc.reapply)
			}
			if !reflect.DeepEqual(d.Pending, tc.pending) || !reflect.DeepEqual(d.Gone, tc.gone) {
				t.Errorf("pending %v gone %v; want %v %v", d.Pending, d.Gone, tc.pending, tc.gone)
			}
			if d.Alert != tc.alert || !d.WakeAt.Equal(tc.wakeAt) || d.Next.Noted != tc.noted {
				t.Errorf("alert %q wake %v noted %q; want %q %v %q", d.Alert, d.WakeAt, d.Next.Noted, tc.alert, tc.wakeAt, tc.noted)
			}
			for _, n := range append(slices.Clone(d.Pending), d.Gone...) {
				if _, ok := d.Next.DownSince[n]; !ok {
					t.Errorf("%s is down but has no down-since: %v", n, d.Next.DownSince)
				}
			}
		})
	}
}

// Decide does not change the track it is given.
func TestDecideIsPure(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	prev := Track{Applied: []string{"pi-1", "pi-2"}, DownSince: map[string]time.Time{}, Launched: map[string]time.Time{"pi-9": t0}}
	obs := Observation{Now: t0.Add(time.Hour), State: ServiceState{Service: "web", Desired: 2, Actual: []string{"pi-1"}, Down: []DownNode{{"pi-2", "failed"}}},
		Policy: Policy{OnFailure: OnFailureRelaunch}, Listing: []string{"pi-1", "pi-2"}, InView: []string{"pi-1", "pi-2"}}
	Decide(obs, prev)
	if len(prev.DownSince) != 0 || len(prev.Launched) != 1 {
		t.Errorf("Decide changed its input: %+v", prev)
	}
}

func TestAfterRelaunch(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	backoff := func(n int) time.Duration { return time.Duration(n) * 10 * time.Second }
	d := Decision{Relaunch: 2, Effective: []string{"pi-1"}, ReapplyDependents: true}
	fresh := func() Track { return Track{Launched: map[string]time.Time{}, Applied: []string{"pi-1", "pi-2"}} }

	tr, reapply := AfterRelaunch(d, fresh(), []string{"pi-3", "pi-4"}, false, t0, backoff)
	if reapply || tr.Failures != 0 || !reflect.DeepEqual(tr.Applied, []string{"pi-1", "pi-3", "pi-4"}) || len(tr.Launched) != 2 {
		t.Errorf("full relaunch: %+v reapply %v", tr, reapply)
	}
	tr, reapply = AfterRelaunch(d, fresh(), []string{"pi-3"}, true, t0, backoff)
	if reapply || tr.Failures != 1 || !tr.RetryAt.Equal(t0.Add(10*time.Second)) {
		t.Errorf("partial relaunch: %+v reapply %v, want a back-off of 10s", tr, reapply)
	}
	tr, reapply = AfterRelaunch(d, fresh(), nil, true, t0, backoff)
	if !reapply || tr.Failures != 1 || !reflect.DeepEqual(tr.Applied, []string{"pi-1", "pi-2"}) {
		t.Errorf("nothing started: %+v reapply %v, want dependents still re-applied", tr, reapply)
	}
}

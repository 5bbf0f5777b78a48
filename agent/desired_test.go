package agent

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// Desired-state and hook tests run agents on 127.0.8.0/24.

// on moves an agent from startAgent's default range to 127.0.8.<i>.
func on(i int, more ...func(*Config)) func(*Config) {
	return func(c *Config) {
		ip := fmt.Sprintf("127.0.8.%d", i)
		c.Bind = ip + ":0"
		c.HTTP = ip + ":0"
		for _, m := range more {
			m(c)
		}
	}
}

func TestBackendDesiredStateSpreadsAndStreams(t *testing.T) {
	seed := startAgent(t, 1, on(101))
	second := startAgent(t, 2, on(102, joinTo(seed)))
	agents := []*Agent{seed, second}
	waitAlive(t, agents, 2)

	events, cancel := backend{second}.Subscribe()
	defer cancel()

	ctx := context.Background()
	two, delta := 2, -5
	got, err := backend{seed}.ChangeDesired(ctx, "nginx_webserver", apitypes.DesiredChange{Delta: &two})
	if err != nil {
		t.Fatal(err)
	}
	if got.Service != "nginx_webserver" || got.Replicas != 2 || got.UpdatedBy != seed.Name() || got.Version == 0 {
		t.Fatalf("ChangeDesired returned %+v", got)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		d, ok := backend{second}.DesiredFor("nginx_webserver")
		if !ok || !reflect.DeepEqual(d, got) {
			return fmt.Errorf("%s has %+v (ok %v), want %+v", second.Name(), d, ok, got)
		}
		return nil
	})

	// The peer's event stream tells watchers, with the entry and no node.
	deadline := time.After(10 * time.Second)
	for found := false; !found; {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("event stream closed")
			}
			if ev.Kind != apitypes.EventDesired {
				continue
			}
			if ev.Desired == nil || !reflect.DeepEqual(*ev.Desired, got) || ev.Node.Name != "" {
				t.Fatalf("desired event %+v (desired %+v), want %+v and no node", ev, ev.Desired, got)
			}
			found = true
		case <-deadline:
			t.Fatal("no desired event on the peer's stream")
		}
	}

	// Lowering below zero stops at a tombstone that stays listed.
	low, err := backend{second}.ChangeDesired(ctx, "nginx_webserver", apitypes.DesiredChange{Delta: &delta})
	if err != nil || low.Replicas != 0 || low.Version <= got.Version {
		t.Fatalf("lowering: %+v, %v", low, err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		all := backend{seed}.Desired()
		if len(all) != 1 || !reflect.DeepEqual(all[0], low) {
			return fmt.Errorf("%s lists %+v, want [%+v]", seed.Name(), all, low)
		}
		return nil
	})
	if _, ok := (backend{seed}).DesiredFor("never_set"); ok {
		t.Fatal("a service never set must not be found")
	}
}

func TestBackendDesiredRefusesBadChanges(t *testing.T) {
	a := startAgent(t, 1, on(111))
	b := backend{a}
	three, neg := 3, -1
	for _, tc := range []struct {
		service string
		change  apitypes.DesiredChange
		want    string
	}{
		{"Bad/Name", apitypes.DesiredChange{Replicas: &three}, "invalid service name"},
		{"web", apitypes.DesiredChange{}, `give "replicas"`},
		{"web", apitypes.DesiredChange{Replicas: &three, Delta: &three}, "not both"},
		{"web", apitypes.DesiredChange{Replicas: &neg}, "want 0 to"},
	} {
		_, err := b.ChangeDesired(context.Background(), tc.service, tc.change)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %+v: got %v, want an error containing %q", tc.service, tc.change, err, tc.want)
		}
	}
	if all := b.Desired(); len(all) != 0 {
		t.Fatalf("refused changes left entries: %+v", all)
	}
}

package cluster

import (
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// A service's policy and the hashes of what each node was given travel
// with its desired entry: signed by the writer, kept by later count
// changes, and learnt by every node.
func TestDesiredCarriesPolicyAndRenderedHashes(t *testing.T) {
	a := startNode(t, "a", "127.0.8.31")
	b := startNode(t, "b", "127.0.8.32")
	join(t, b, a)
	testutil.WaitFor(t, waitTimeout, allAlive([]*Cluster{a, b}, 2))

	pol := "on_failure: relaunch\ndepends_on: [kvstore]\n"
	if _, err := a.ChangeDesired("launch", "kvstore", DesiredChange{Next: func(int) int { return 3 }, Policy: &pol}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ChangeDesired("record render", "kvstore", DesiredChange{Rendered: map[string]string{"pi-1": "ab12", "pi-2": "cd34"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ChangeDesired("record render", "kvstore", DesiredChange{Rendered: map[string]string{"pi-2": "", "pi-3": "ef56"}}); err != nil {
		t.Fatal(err)
	}
	last, err := a.AddDesired("kvstore", -1)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"pi-1": "ab12", "pi-3": "ef56"}
	if last.Replicas != 2 || last.Policy != pol || !maps.Equal(last.Rendered, want) {
		t.Fatalf("after the count change: %+v, want 2 replicas with the policy and %v", last, want)
	}
	testutil.WaitFor(t, waitTimeout, func() error {
		got, ok := b.DesiredFor("kvstore")
		if !ok || got.Version != last.Version {
			return fmt.Errorf("b has %+v, want version %d", got, last.Version)
		}
		if got.Policy != pol || !maps.Equal(got.Rendered, want) {
			return fmt.Errorf("b has policy %q and rendered %v", got.Policy, got.Rendered)
		}
		return nil
	})
}

func TestDesiredExtrasAreBounded(t *testing.T) {
	a := startNode(t, "a", "127.0.8.33")
	big := strings.Repeat("#", MaxPolicySize+1)
	for name, ch := range map[string]DesiredChange{
		"policy too big": {Policy: &big},
		"bad node name":  {Rendered: map[string]string{"Bad Name": "ab"}},
		"hash not hex":   {Rendered: map[string]string{"pi-1": "xyz"}},
		"hash too long":  {Rendered: map[string]string{"pi-1": strings.Repeat("a", 65)}},
	} {
		if _, err := a.ChangeDesired("test", "svc", ch); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, ok := a.DesiredFor("svc"); ok {
		t.Error("a refused change left an entry")
	}
}

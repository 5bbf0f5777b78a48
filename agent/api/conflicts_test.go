package api

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// fakeKeys is the fake backend's key conflicts and the rekeys it was asked
// for.
type fakeKeys struct {
	conflicts []apitypes.KeyConflict
	rekeyed   []string
}

func (f *fakeBackend) KeyConflicts() []apitypes.KeyConflict {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.keys.conflicts)
}

func (f *fakeBackend) Rekey(_ context.Context, name string) (apitypes.KeyConflict, error) {
	f.writes.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	i := slices.IndexFunc(f.keys.conflicts, func(k apitypes.KeyConflict) bool { return k.Node == name })
	if i < 0 {
		return apitypes.KeyConflict{}, fmt.Errorf("rekey %s: %w", name, ErrNoKeyConflict)
	}
	k := f.keys.conflicts[i]
	f.keys.conflicts = slices.Delete(f.keys.conflicts, i, i+1)
	f.keys.rekeyed = append(f.keys.rekeyed, name)
	return k, nil
}

func testConflict(name string) apitypes.KeyConflict {
	at := time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)
	return apitypes.KeyConflict{Node: name, PinnedKey: "cGlubmVk", PinnedFingerprint: "SHA256:pinned", OfferedKey: "b2ZmZXJlZA==",
		OfferedFingerprint: "SHA256:offered", FirstSeen: at, LastSeen: at, Count: 3}
}

func TestConflictsAndRekey(t *testing.T) {
	const token = "tok"
	ts, f, _ := testServer(t, token)
	call(t, "GET", ts.URL+"/v1/conflicts", "", nil).expect(t, 200, "[]")

	f.mu.Lock()
	f.keys.conflicts = []apitypes.KeyConflict{testConflict("pi-3")}
	f.stats.Rejected = map[string]uint64{"key_conflict": 3, "bad_signature": 1}
	f.mu.Unlock()
	a := call(t, "GET", ts.URL+"/v1/conflicts", "", nil)
	var got []apitypes.KeyConflict
	if err := json.Unmarshal([]byte(a.body), &got); err != nil || len(got) != 1 || got[0] != testConflict("pi-3") {
		t.Fatalf("GET /v1/conflicts = %s (%v)", a.body, err)
	}

	// The page says so, and /metrics counts it.
	if page := call(t, "GET", ts.URL+"/", "", nil); !strings.Contains(page.body, "Key conflict: pi-3") || !strings.Contains(page.body, "rpi-agent rekey pi-3") {
		t.Errorf("the page does not show the conflict:\n%s", page.body)
	}
	samples, err := parseExposition(call(t, "GET", ts.URL+"/metrics", "", nil).body)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		name   string
		labels []string
		value  float64
	}{
		{"rpi_key_conflicts", nil, 1},
		{"rpi_gossip_rejected_total", []string{"reason", "key_conflict"}, 3},
		{"rpi_gossip_rejected_total", []string{"reason", "bad_signature"}, 1},
	} {
		if v, ok := find(samples, w.name, w.labels...); !ok || v != w.value {
			t.Errorf("%s%v = %v (found %v), want %v", w.name, w.labels, v, ok, w.value)
		}
	}

	// Rekeying is a write: no token, no rekey.
	call(t, "POST", ts.URL+"/v1/nodes/pi-3/rekey", "", nil).expect(t, 401, "")
	call(t, "POST", ts.URL+"/v1/nodes/pi-3/rekey", "wrong", nil).expect(t, 401, "")
	call(t, "GET", ts.URL+"/v1/nodes/pi-3/rekey", token, nil).expect(t, 405, "")
	if n := f.writes.Load(); n != 0 {
		t.Fatalf("%d rekeys reached the backend without the token", n)
	}
	bad := call(t, "POST", ts.URL+"/v1/nodes/a%20b/rekey", token, nil)
	bad.expect(t, 400, "")
	if msg := errorBody(t, bad, "error"); !strings.Contains(msg, "invalid node name") {
		t.Errorf("invalid name: %q", msg)
	}
	call(t, "POST", ts.URL+"/v1/nodes/pi-1/rekey", token, nil).expect(t, 400, "")
	none := call(t, "POST", ts.URL+"/v1/nodes/pi-2/rekey", token, nil)
	none.expect(t, 409, "")
	if msg := errorBody(t, none, "error"); !strings.Contains(msg, "no other key") || !strings.Contains(msg, "/v1/conflicts") {
		t.Errorf("rekey without a conflict: %q, want it to say there is no other key and where to look", msg)
	}
	ok := call(t, "POST", ts.URL+"/v1/nodes/pi-3/rekey", token, nil)
	ok.expect(t, 200, "")
	var res apitypes.RekeyResult
	if err := json.Unmarshal([]byte(ok.body), &res); err != nil || res.Agent != "pi-1" || res.Conflict.Node != "pi-3" || res.Conflict.OfferedFingerprint != "SHA256:offered" {
		t.Fatalf("rekey answer %s (%v)", ok.body, err)
	}
	if !slices.Equal(f.keys.rekeyed, []string{"pi-3"}) {
		t.Fatalf("rekeyed %v, want [pi-3]", f.keys.rekeyed)
	}
}

package api

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

func sample(at time.Time, cpu float64) apitypes.Monitoring {
	temp := 40 + cpu/10
	return apitypes.Monitoring{CPUPercent: cpu, MemTotal: 1000, MemUsed: 250, Load1: cpu / 100,
		TempC: &temp, SampledAt: at}
}

// The ring keeps one sample per slot, newest wins, nothing older than the
// window, and never more than its slots however long a node keeps sending.
func TestHistoryRing(t *testing.T) {
	h := NewHistory(time.Minute, 12) // 5 s slots
	t0 := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)

	h.Add("pi-a", sample(t0, 10))
	h.Add("pi-a", sample(t0.Add(2*time.Second), 20))   // same slot: replaces
	h.Add("pi-a", sample(t0.Add(1*time.Second), 99))   // same slot, older: ignored
	h.Add("pi-a", sample(t0.Add(5*time.Second), 30))   // next slot
	h.Add("pi-a", apitypes.Monitoring{CPUPercent: 50}) // no time: ignored
	noTemp := sample(t0.Add(10*time.Second), 40)
	noTemp.TempC = nil
	h.Add("pi-b", noTemp)

	got := h.Snapshot(t0.Add(12 * time.Second))
	if got.WindowS != 60 || got.StepS != 5 || len(got.Nodes) != 2 || got.Nodes[0].Name != "pi-a" || got.Nodes[1].Name != "pi-b" {
		t.Fatalf("snapshot = %+v", got)
	}
	a := got.Nodes[0]
	if !slices.Equal(a.CPUPercent, []float64{20, 30}) || !slices.Equal(a.MemPercent, []float64{25, 25}) ||
		!slices.Equal(a.Load1, []float64{0.2, 0.3}) || !slices.Equal(a.TimeMS, []int64{t0.Add(2 * time.Second).UnixMilli(), t0.Add(5 * time.Second).UnixMilli()}) {
		t.Errorf("pi-a = %+v", a)
	}
	if len(a.TempC) != 2 || a.TempC[0] == nil || *a.TempC[0] != 42 {
		t.Errorf("pi-a temperatures = %v", a.TempC)
	}
	if b := got.Nodes[1]; len(b.TempC) != 1 || b.TempC[0] != nil {
		t.Errorf("pi-b without a sensor: temperatures %v, want [null]", b.TempC)
	}

	// Ten minutes of 1 s samples: the ring holds the last minute, one per slot.
	for i := range 600 {
		h.Add("pi-a", sample(t0.Add(time.Duration(i)*time.Second), float64(i%100)))
	}
	now := t0.Add(599 * time.Second)
	a = h.Snapshot(now).Nodes[0]
	if len(a.TimeMS) != 12 {
		t.Fatalf("after 10 min of samples: %d kept, want 12 (one per slot)", len(a.TimeMS))
	}
	if oldest := time.UnixMilli(a.TimeMS[0]); now.Sub(oldest) >= time.Minute || !slices.IsSorted(a.TimeMS) {
		t.Errorf("kept %v, want the last minute in order", a.TimeMS)
	}
	if n := len(h.nodes["pi-a"]); n != 12 {
		t.Errorf("ring of %d slots, want 12", n)
	}
	// What DefaultHistorySlots cost per node (README, DESIGN: 4.3 kB).
	if size := unsafe.Sizeof(histPoint{}); size != 24 {
		t.Errorf("a slot is %d bytes, want 24", size)
	}
	// Nothing new for longer than the window: the node is listed, empty.
	if a := h.Snapshot(now.Add(2 * time.Minute)).Nodes[0]; len(a.TimeMS) != 0 {
		t.Errorf("samples older than the window shown: %v", a.TimeMS)
	}

	h.Remove("pi-a")
	if got := h.Snapshot(now); len(got.Nodes) != 1 || got.Nodes[0].Name != "pi-b" {
		t.Errorf("after Remove: %+v", got.Nodes)
	}
}

func TestHistoryEndpoints(t *testing.T) {
	h := NewHistory(0, 0)
	ts, _, _ := testServerWith(t, "", func(s *Server) { s.history = h })
	now := time.Now()
	h.Add("pi-1", sample(now.Add(-10*time.Second), 12.5))
	h.Add("pi-1", sample(now.Add(-5*time.Second), 50))

	var all apitypes.History
	getJSON(t, ts.URL+"/v1/history", http.StatusOK, &all)
	if all.WindowS != 900 || all.StepS != 5 || len(all.Nodes) != 1 || len(all.Nodes[0].CPUPercent) != 2 {
		t.Errorf("/v1/history = %+v", all)
	}
	var one apitypes.History
	getJSON(t, ts.URL+"/v1/nodes/pi-1/history", http.StatusOK, &one)
	if len(one.Nodes) != 1 || !slices.Equal(one.Nodes[0].CPUPercent, []float64{12.5, 50}) {
		t.Errorf("/v1/nodes/pi-1/history = %+v", one)
	}
	// A member with no samples yet: listed, with empty lists (not null).
	a := call(t, "GET", ts.URL+"/v1/nodes/pi-3/history", "", nil)
	if a.code != http.StatusOK || !strings.Contains(a.body, `"name":"pi-3","time_ms":[],"cpu_percent":[]`) {
		t.Errorf("member without samples: %d %s", a.code, a.body)
	}
	a = call(t, "GET", ts.URL+"/v1/nodes/pi-9/history", "", nil)
	if a.code != http.StatusNotFound || !strings.Contains(a.body, `node \"pi-9\" not found`) {
		t.Errorf("unknown node: %d %s", a.code, a.body)
	}
}

func getJSON(t *testing.T, url string, code int, v any) {
	t.Helper()
	a := call(t, "GET", url, "", nil)
	if a.code != code {
		t.Fatalf("GET %s = %d %s, want %d", url, a.code, a.body, code)
	}
	if err := json.Unmarshal([]byte(a.body), v); err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, a.body)
	}
}

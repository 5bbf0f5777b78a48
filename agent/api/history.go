package api

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// History defaults: 15 minutes in 180 slots of 5 s, the default
// monitor_interval, so each sample a node gossips finds its own slot.
const (
	DefaultHistoryWindow = 15 * time.Minute
	DefaultHistorySlots  = 180
)

// History keeps every node's recent samples in memory for the page's charts:
// a fixed ring of slots per node (4.3 kB with the defaults), so memory
// grows with the members and not with time. The agent feeds it the records
// it receives anyway and removes a node when the node is reaped. Safe for
// concurrent use.
type History struct {
	step  time.Duration
	slots int

	mu    sync.Mutex
	nodes map[string][]histPoint
}

// histPoint is one slot, 24 bytes: float32 is plenty for a Pi's figures,
// a zero time marks an empty slot and a NaN temperature a node without a
// sensor.
type histPoint struct {
	timeMS                int64 // when the node took the sample, Unix ms
	cpu, mem, load1, temp float32
}

// slotOf is the slot number of a sample time.
func (h *History) slotOf(timeMS int64) int64 { return timeMS * int64(time.Millisecond) / int64(h.step) }

// NewHistory returns a history covering window in slots slots; zero values
// take the defaults. Tests use a short window to see many slots fill fast.
func NewHistory(window time.Duration, slots int) *History {
	if window <= 0 {
		window = DefaultHistoryWindow
	}
	if slots <= 0 {
		slots = DefaultHistorySlots
	}
	step := max(window/time.Duration(slots), time.Millisecond)
	return &History{step: step, slots: slots, nodes: make(map[string][]histPoint)}
}

// Window returns the span the history covers.
func (h *History) Window() time.Duration { return h.step * time.Duration(h.slots) }

// Add records a node's sample in the slot of its time. A later sample in the
// same slot replaces the earlier one; a sample older than what its slot
// holds, or without a time, is ignored.
func (h *History) Add(name string, m apitypes.Monitoring) {
	if m.SampledAt.IsZero() {
		return
	}
	p := histPoint{
		timeMS: m.SampledAt.UnixMilli(),
		cpu:    float32(m.CPUPercent),
		load1:  float32(m.Load1),
		temp:   float32(math.NaN()),
	}
	slot := h.slotOf(p.timeMS)
	if m.MemTotal > 0 {
		p.mem = float32(float64(m.MemUsed) / float64(m.MemTotal) * 100)
	}
	if m.TempC != nil {
		p.temp = float32(*m.TempC)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ring := h.nodes[name]
	if ring == nil {
		ring = make([]histPoint, h.slots)
		h.nodes[name] = ring
	}
	i := int(mod(slot, int64(h.slots)))
	if old := ring[i]; old.timeMS != 0 && old.timeMS > p.timeMS {
		return // the slot holds a later sample, of this slot or a newer one
	}
	ring[i] = p
}

// Remove forgets a node (it was reaped or forced to leave).
func (h *History) Remove(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.nodes, name)
}

// Snapshot returns every node's samples within the window ending at now,
// oldest first, nodes sorted by name.
func (h *History) Snapshot(now time.Time) apitypes.History {
	cur := now.UnixNano() / int64(h.step)
	first := cur - int64(h.slots) + 1
	out := apitypes.History{
		WindowS: h.Window().Seconds(),
		StepS:   h.step.Seconds(),
		Now:     now,
		Nodes:   []apitypes.NodeHistory{},
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for name, ring := range h.nodes {
		n := apitypes.NodeHistory{Name: name, TimeMS: []int64{}, CPUPercent: []float64{},
			MemPercent: []float64{}, Load1: []float64{}, TempC: []*float64{}}
		for s := first; s <= cur; s++ {
			p := ring[mod(s, int64(h.slots))]
			if p.timeMS == 0 || h.slotOf(p.timeMS) != s {
				continue
			}
			n.TimeMS = append(n.TimeMS, p.timeMS)
			n.CPUPercent = append(n.CPUPercent, round(p.cpu, 1))
			n.MemPercent = append(n.MemPercent, round(p.mem, 1))
			n.Load1 = append(n.Load1, round(p.load1, 2))
			var t *float64
			if !math.IsNaN(float64(p.temp)) {
				v := round(p.temp, 1)
				t = &v
			}
			n.TempC = append(n.TempC, t)
		}
		out.Nodes = append(out.Nodes, n)
	}
	slices.SortFunc(out.Nodes, func(a, b apitypes.NodeHistory) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// mod is the non-negative remainder, for slots before 1970 in tests.
func mod(a, b int64) int64 { return ((a % b) + b) % b }

// round drops the float32 noise ("12.300000190734863") from the JSON.
func round(v float32, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(float64(v)*p) / p
}

// getHistory answers GET /v1/history: every node's samples.
func (s *Server) getHistory(w http.ResponseWriter, _ *http.Request) {
	s.writeJSON(w, http.StatusOK, s.history.Snapshot(time.Now()))
}

// getNodeHistory answers GET /v1/nodes/{name}/history with the same body
// as /v1/history, holding that node alone.
func (s *Server) getNodeHistory(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	h := s.history.Snapshot(time.Now())
	i := slices.IndexFunc(h.Nodes, func(n apitypes.NodeHistory) bool { return n.Name == name })
	switch {
	case i >= 0:
		h.Nodes = h.Nodes[i : i+1]
	case slices.ContainsFunc(s.nodes(), func(n apitypes.Node) bool { return n.Name == name }):
		h.Nodes = []apitypes.NodeHistory{{Name: name, TimeMS: []int64{}, CPUPercent: []float64{},
			MemPercent: []float64{}, Load1: []float64{}, TempC: []*float64{}}}
	default:
		s.writeError(w, styleV1, http.StatusNotFound,
			fmt.Sprintf("node %q not found: GET /v1/nodes lists the members this agent knows", name))
		return
	}
	s.writeJSON(w, http.StatusOK, h)
}

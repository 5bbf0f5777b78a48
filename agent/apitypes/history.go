package apitypes

import "time"

// History is the body of GET /v1/history: the recent samples the answering
// agent kept of every node it knows, from the records the nodes gossiped.
// Nothing extra travels for it: each agent keeps what it already receives.
type History struct {
	// WindowS is how far back the history goes (900: 15 minutes), StepS
	// the spacing of its slots; a node keeps at most one sample per slot.
	WindowS float64 `json:"window_s"`
	StepS   float64 `json:"step_s"`
	// Now is the answering agent's clock when it answered, so a client ages
	// the samples against the agent's time rather than its own.
	Now   time.Time     `json:"now"`
	Nodes []NodeHistory `json:"nodes"`
}

// NodeHistory is one node's samples, oldest first, as parallel lists of
// equal length: TimeMS[i] is when the node took sample i (Unix
// milliseconds, the node's clock).
type NodeHistory struct {
	Name       string    `json:"name"`
	TimeMS     []int64   `json:"time_ms"`
	CPUPercent []float64 `json:"cpu_percent"`
	// MemPercent is mem_used / mem_total × 100 (0 when the total is unknown).
	MemPercent []float64 `json:"mem_percent"`
	Load1      []float64 `json:"load1"`
	// TempC holds null where the node has no thermal sensor.
	TempC []*float64 `json:"temp_c"`
}

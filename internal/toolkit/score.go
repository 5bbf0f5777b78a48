package toolkit

import (
	"sort"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// BusyScore is the original project's busy score, lower is better:
//
//	(3·load15/cpus + 2·load5/cpus + load1/cpus + 4·mem_used/mem_total) / 4
//
// A node that reports no CPU count is scored as if it had one CPU, and one
// that reports no memory total contributes no memory term, so a missing
// sample never divides by zero.
func BusyScore(n apitypes.Node) float64 {
	m := n.Monitoring
	cpus := float64(m.CPUs)
	if cpus <= 0 {
		cpus = 1
	}
	mem := 0.0
	if m.MemTotal > 0 {
		mem = float64(m.MemUsed) / float64(m.MemTotal)
	}
	return (3*m.Load15/cpus + 2*m.Load5/cpus + m.Load1/cpus + 4*mem) / 4
}

// SortByBusy sorts nodes least busy first, ties broken by name.
func SortByBusy(nodes []apitypes.Node) {
	sort.SliceStable(nodes, func(i, j int) bool {
		si, sj := BusyScore(nodes[i]), BusyScore(nodes[j])
		if si != sj {
			return si < sj
		}
		return nodes[i].Name < nodes[j].Name
	})
}

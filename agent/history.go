package agent

import (
	"github.com/rpi-cluster/rpi-cluster/agent/api"
	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
)

// withHistory gives the agent a history of another span, so tests fill
// many slots in seconds.
func withHistory(h *api.History) Option { return func(a *Agent) { a.history = h } }

// startHistory subscribes the page's history to the cluster's events. Every
// record a node gossips (its own included) carries its latest sample, so the
// history costs no gossip of its own; a reaped node's ring is freed. It
// runs until Shutdown closes the subscription.
func (a *Agent) startHistory() {
	events, cancel := a.cluster.Subscribe(256)
	a.historyCancel = cancel
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for ev := range events {
			switch ev.Type {
			case cluster.EventReap:
				a.history.Remove(ev.Member.Name)
			case cluster.EventJoin, cluster.EventUpdate, cluster.EventLeave, cluster.EventFail:
				if ev.Member.Name != "" {
					a.history.Add(ev.Member.Name, toAPINode(ev.Member).Monitoring)
				}
			}
		}
	}()
}

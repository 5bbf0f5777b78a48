package cluster

import "github.com/hashicorp/memberlist"

// eventDelegate receives membership changes. memberlist calls it with its
// node lock held, one call at a time: handlers must not call memberlist and
// must not block (events go to subscribers through non-blocking sends).
type eventDelegate struct{ c *Cluster }

var _ memberlist.EventDelegate = (*eventDelegate)(nil)

func (e *eventDelegate) NotifyJoin(n *memberlist.Node)   { e.c.handleNodeJoin(n) }
func (e *eventDelegate) NotifyLeave(n *memberlist.Node)  { e.c.handleNodeLeave(n) }
func (e *eventDelegate) NotifyUpdate(n *memberlist.Node) { e.c.handleNodeUpdate(n) }

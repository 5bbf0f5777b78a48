package cluster

import "github.com/hashicorp/memberlist"

// eventDelegate receives membership changes. memberlist calls it with its
// node lock held, one call at a time: handlers must not call memberlist and
// must not block (events go to subscribers through non-blocking sends).
//
// memberlist's suspicion timers outlive its Shutdown and can still declare
// a node dead afterwards. Calls from a memberlist Readdress replaced (gen
// is not the cluster's mlGen), or made once this node is shut down, are
// dropped: a suspicion of the old address's memberlist must not fail a
// peer, and a stopped cluster logs and publishes nothing.
type eventDelegate struct {
	c   *Cluster
	gen uint64
}

var _ memberlist.EventDelegate = (*eventDelegate)(nil)

func (e *eventDelegate) NotifyJoin(n *memberlist.Node) {
	if e.current() {
		e.c.handleNodeJoin(n)
	}
}

func (e *eventDelegate) NotifyLeave(n *memberlist.Node) {
	if e.current() {
		e.c.handleNodeLeave(n)
	}
}

func (e *eventDelegate) NotifyUpdate(n *memberlist.Node) {
	if e.current() {
		e.c.handleNodeUpdate(n)
	}
}

// current reports whether e belongs to the running memberlist.
func (e *eventDelegate) current() bool {
	return e.gen == e.c.mlGen.Load() && !e.c.isShutdown()
}

// isShutdown reports whether Shutdown has begun.
func (c *Cluster) isShutdown() bool {
	select {
	case <-c.shutdownCh:
		return true
	default:
		return false
	}
}

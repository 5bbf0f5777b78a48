package cluster

import "github.com/hashicorp/memberlist"

// conflictDelegate is told when a node announces a name that another node at
// a different address already holds. memberlist keeps the existing node and
// refuses the other; we record and log the conflict so it is never silent.
// Called with memberlist's node lock held: non-blocking.
type conflictDelegate struct{ c *Cluster }

var _ memberlist.ConflictDelegate = (*conflictDelegate)(nil)

func (d *conflictDelegate) NotifyConflict(existing, other *memberlist.Node) {
	d.c.handleConflict(existing, other)
}

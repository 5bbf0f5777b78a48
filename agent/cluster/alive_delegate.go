package cluster

import "github.com/hashicorp/memberlist"

// aliveDelegate vets every alive message, whether it came by gossip or
// push-pull, so a node of another cluster (or something that is not an
// rpi-cluster agent) never becomes a member. Called with memberlist's node
// lock held: it only decodes the metadata.
type aliveDelegate struct{ c *Cluster }

var _ memberlist.AliveDelegate = (*aliveDelegate)(nil)

func (d *aliveDelegate) NotifyAlive(n *memberlist.Node) error { return d.c.handleAlive(n) }

// mergeDelegate vets the member list of a peer during a join, so joining a
// node of another cluster fails with an error instead of silently doing
// nothing.
type mergeDelegate struct{ c *Cluster }

var _ memberlist.MergeDelegate = (*mergeDelegate)(nil)

func (d *mergeDelegate) NotifyMerge(peers []*memberlist.Node) error { return d.c.handleMerge(peers) }

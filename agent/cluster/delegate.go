package cluster

import "github.com/hashicorp/memberlist"

// delegate feeds memberlist our node metadata, user messages and push-pull
// state. memberlist calls it from its packet, stream and gossip goroutines
// concurrently; every method forwards to a Cluster handler that only takes
// Cluster.mu briefly, never calls back into memberlist and never blocks.
type delegate struct{ c *Cluster }

var _ memberlist.Delegate = (*delegate)(nil)

// NodeMeta returns the static metadata digest (cluster name, HTTP port).
func (d *delegate) NodeMeta(limit int) []byte { return d.c.handleNodeMeta(limit) }

// NotifyMsg receives user messages. buf is reused by memberlist after the
// call returns, so handlers copy what they keep.
func (d *delegate) NotifyMsg(buf []byte) { d.c.handleMsg(buf) }

// GetBroadcasts hands memberlist the queued record, leave and relay messages.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.c.broadcasts.GetBroadcasts(overhead, limit)
}

// LocalState returns every record this node holds for anti-entropy.
func (d *delegate) LocalState(join bool) []byte { return d.c.handleLocalState(join) }

// MergeRemoteState applies a peer's records.
func (d *delegate) MergeRemoteState(buf []byte, join bool) { d.c.handleRemoteState(buf, join) }

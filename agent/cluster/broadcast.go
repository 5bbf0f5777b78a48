package cluster

import "github.com/hashicorp/memberlist"

// namedBroadcast is a queued message that replaces any older queued message
// with the same key: a newer record of a node (key "r/<name>") supersedes
// the older one still waiting in the queue, so the queue holds at most one
// record and one leave intent per node however often records change.
type namedBroadcast struct {
	key string
	msg []byte
}

var _ memberlist.NamedBroadcast = (*namedBroadcast)(nil)

func (b *namedBroadcast) Name() string { return b.key }

func (b *namedBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(memberlist.NamedBroadcast)
	return ok && o.Name() == b.key
}

func (b *namedBroadcast) Message() []byte { return b.msg }

func (b *namedBroadcast) Finished() {}

func recordKey(name string) string { return "r/" + name }
func leaveKey(name string) string  { return "l/" + name }

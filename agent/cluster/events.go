package cluster

// subscription is one Subscribe channel.
type subscription struct {
	ch      chan Event
	dropped uint64
}

// Subscribe returns a channel of events with room for buf of them (minimum
// 1) and a cancel function that closes it. A subscriber that falls behind
// loses events rather than delaying gossip (Stats counts them as
// DroppedEvents); Shutdown closes every channel.
func (c *Cluster) Subscribe(buf int) (<-chan Event, func()) {
	s := &subscription{ch: make(chan Event, max(buf, 1))}
	c.subMu.Lock()
	if c.subsClosed {
		c.subMu.Unlock()
		close(s.ch)
		return s.ch, func() {}
	}
	c.subs[s] = struct{}{}
	c.subMu.Unlock()
	cancel := func() {
		c.subMu.Lock()
		_, ok := c.subs[s]
		delete(c.subs, s)
		c.subMu.Unlock()
		if ok {
			close(s.ch)
		}
	}
	return s.ch, cancel
}

// publish delivers ev to every subscriber without blocking.
func (c *Cluster) publish(ev Event) {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	for s := range c.subs {
		select {
		case s.ch <- ev:
		default:
			c.droppedEvents.Add(1)
			s.dropped++
			if s.dropped == 1 || s.dropped%1000 == 0 {
				c.logger.Warn("event subscriber too slow, dropping events", "dropped", s.dropped)
			}
		}
	}
}

func (c *Cluster) closeSubscribers() {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	c.subsClosed = true
	for s := range c.subs {
		close(s.ch)
		delete(c.subs, s)
	}
}

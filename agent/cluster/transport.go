package cluster

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/rpi-cluster/rpi-cluster/agent/detector"
)

// Stats counts gossip traffic at the transport: every UDP packet and every
// TCP stream memberlist sends or receives, encryption and framing included.
type Stats struct {
	// MessagesSent and MessagesReceived count packets plus streams opened.
	MessagesSent, MessagesReceived uint64
	BytesSent, BytesReceived       uint64
	// MalformedMessages counts user messages and push-pull states that
	// failed to decode or broke a size limit; they are dropped.
	MalformedMessages uint64
	// Introductions counts syncs started because a node memberlist had
	// never reported sent a heartbeat (see introduce.go).
	Introductions uint64
	// DroppedEvents counts events lost by subscribers that fell behind
	// (see Subscribe).
	DroppedEvents uint64
	// Readvertisements counts the times a peer that held this node failed
	// asked it to re-advertise itself (see introduce.go).
	Readvertisements uint64
	// Overrules counts memberlist failure verdicts on peers set aside
	// because a heartbeat showed the peer outlived the suspicion (see
	// agent/detector).
	Overrules uint64
	// SilenceVerdicts counts peers this node failed itself, ahead of
	// memberlist, because their heartbeats fell silent (see agent/detector).
	SilenceVerdicts uint64
	// WatcherVerdicts counts peers this node failed, ahead of memberlist,
	// on the silence verdict of one of their watchers (see agent/detector).
	WatcherVerdicts uint64
	// Refutations counts watchers' verdicts about this node that it
	// answered with a heartbeat to every peer (see agent/detector).
	Refutations uint64
	// HandoffDrops counts received messages memberlist dropped because
	// its handler queue was full (HandoffQueueDepth): gossip, SWIM
	// messages other than pings and acks, heartbeats among them.
	HandoffDrops uint64
	// Reaped counts members removed from the view: failed or left for
	// their reap time, or force-left (see reap.go).
	Reaped uint64
	// Rejected counts gossip refused by validation or signature checks,
	// by reason (RejectReasons): invalid names, services and fields, bad
	// signatures, key conflicts, leave intents with no pinned key to check
	// them, desired entries versioned too far ahead (see validate.go).
	Rejected map[string]uint64
	// Health is this node's measure of its own lateness and the verdicts
	// it held back while degraded (see agent/detector).
	Health detector.HealthStats
}

// CountingTransport wraps a memberlist transport and counts its traffic. It
// is what Cluster uses for Stats and what the benchmarks wrap to measure
// bandwidth. Counters are atomic.Uint64, which Go aligns on 32-bit ARM too.
type CountingTransport struct {
	inner memberlist.NodeAwareTransport

	msgsSent, msgsRecv, bytesSent, bytesRecv atomic.Uint64
	// backlog is the longest, in nanoseconds, a packet waited between
	// its arrival and memberlist taking it, since TakeBacklog last ran.
	backlog atomic.Int64

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn

	stopOnce sync.Once
	stopCh   chan struct{}
	wg       sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*CountingTransport)(nil)

// NewCountingTransport wraps inner and starts forwarding its incoming
// packets and streams; Shutdown stops the forwarding and the inner
// transport.
func NewCountingTransport(inner memberlist.Transport) *CountingTransport {
	na, ok := inner.(memberlist.NodeAwareTransport)
	if !ok {
		na = shim{inner}
	}
	t := &CountingTransport{
		inner:    na,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		stopCh:   make(chan struct{}),
	}
	t.wg.Add(2)
	go t.forwardPackets()
	go t.forwardStreams()
	return t
}

// Stats returns the traffic counted so far.
func (t *CountingTransport) Stats() Stats {
	return Stats{
		MessagesSent:     t.msgsSent.Load(),
		MessagesReceived: t.msgsRecv.Load(),
		BytesSent:        t.bytesSent.Load(),
		BytesReceived:    t.bytesRecv.Load(),
	}
}

func (t *CountingTransport) forwardPackets() {
	defer t.wg.Done()
	in := t.inner.PacketCh()
	for {
		select {
		case p := <-in:
			t.msgsRecv.Add(1)
			t.bytesRecv.Add(uint64(len(p.Buf)))
			select {
			case t.packetCh <- p:
				if !p.Timestamp.IsZero() {
					t.noteBacklog(time.Since(p.Timestamp))
				}
			case <-t.stopCh:
				return
			}
		case <-t.stopCh:
			return
		}
	}
}

// noteBacklog keeps the longest wait of a received packet: a node whose
// receive path falls behind learns it here (see detector.Health).
func (t *CountingTransport) noteBacklog(d time.Duration) {
	for {
		m := t.backlog.Load()
		if int64(d) <= m || t.backlog.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// TakeBacklog returns the longest a received packet waited for memberlist
// since the last call, and starts over.
func (t *CountingTransport) TakeBacklog() time.Duration {
	return time.Duration(t.backlog.Swap(0))
}

func (t *CountingTransport) forwardStreams() {
	defer t.wg.Done()
	in := t.inner.StreamCh()
	for {
		select {
		case c := <-in:
			t.msgsRecv.Add(1)
			select {
			case t.streamCh <- &countingConn{Conn: c, t: t}:
			case <-t.stopCh:
				c.Close()
				return
			}
		case <-t.stopCh:
			return
		}
	}
}

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *CountingTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

// WriteTo implements memberlist.Transport.
func (t *CountingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	ts, err := t.inner.WriteTo(b, addr)
	t.countSent(len(b), err)
	return ts, err
}

// WriteToAddress implements memberlist.NodeAwareTransport.
func (t *CountingTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	ts, err := t.inner.WriteToAddress(b, addr)
	t.countSent(len(b), err)
	return ts, err
}

func (t *CountingTransport) countSent(n int, err error) {
	if err == nil {
		t.msgsSent.Add(1)
		t.bytesSent.Add(uint64(n))
	}
}

// PacketCh implements memberlist.Transport.
func (t *CountingTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// StreamCh implements memberlist.Transport.
func (t *CountingTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// DialTimeout implements memberlist.Transport.
func (t *CountingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.dialed(t.inner.DialTimeout(addr, timeout))
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *CountingTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.dialed(t.inner.DialAddressTimeout(addr, timeout))
}

func (t *CountingTransport) dialed(c net.Conn, err error) (net.Conn, error) {
	if err != nil {
		return nil, err
	}
	t.msgsSent.Add(1)
	return &countingConn{Conn: c, t: t}, nil
}

// Shutdown stops forwarding and shuts the inner transport down. It is safe
// to call more than once.
func (t *CountingTransport) Shutdown() error {
	var err error
	t.stopOnce.Do(func() {
		err = t.inner.Shutdown()
		close(t.stopCh)
		t.wg.Wait()
	})
	return err
}

// countingConn counts the bytes of one stream in both directions.
type countingConn struct {
	net.Conn
	t *CountingTransport
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.t.bytesRecv.Add(uint64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.t.bytesSent.Add(uint64(n))
	return n, err
}

// shim adapts a plain Transport, as memberlist does internally.
type shim struct{ memberlist.Transport }

func (s shim) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return s.WriteTo(b, a.Addr)
}

func (s shim) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return s.DialTimeout(a.Addr, timeout)
}

// MessageKind names a user message or push-pull state by its first byte,
// for tools that split gossip by kind (rpi-bench --split-kinds).
func MessageKind(b byte) string {
	switch b {
	case msgRecord:
		return "record"
	case msgHeartbeat:
		return "heartbeat"
	case msgLeave:
		return "leave"
	case msgState:
		return "state"
	case msgDesired:
		return "desired"
	case msgLeaveDirect:
		return "leave direct"
	case msgLeaveAck:
		return "leave ack"
	case msgReadvertise:
		return "readvertise"
	case msgSilent:
		return "silence report"
	case msgVerdict:
		return "verdict"
	case msgForceLeave:
		return "force leave"
	case msgMove:
		return "move"
	}
	return fmt.Sprintf("type %d", b)
}

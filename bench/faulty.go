package bench

import (
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// errTransportStopped is returned by writes and dials after Shutdown.
var errTransportStopped = errors.New("faulty transport: shut down")

// FaultyTransport wraps a memberlist transport and injects the faults the
// false-positive benchmark needs:
//
//   - Loss: each outgoing UDP packet is dropped with probability Loss, so
//     with one FaultyTransport per node every directed link loses that
//     fraction. TCP streams (push-pull, fallback probes) are not touched:
//     TCP hides loss behind retransmissions.
//   - Freeze: emulates a process starved of CPU. Until the freeze ends,
//     nothing is delivered to memberlist (packets and accepted streams wait,
//     as they would in the kernel's socket buffers) and every send or dial
//     blocks, as the goroutines of a descheduled process would.
//
// All methods are safe for concurrent use.
type FaultyTransport struct {
	inner memberlist.NodeAwareTransport
	loss  float64

	rngMu sync.Mutex
	rng   *rand.Rand

	// frozenUntil is the Unix time in nanoseconds when the current freeze
	// ends; zero or past means not frozen.
	frozenUntil atomic.Int64
	dropped     atomic.Uint64
	// kinds, when set, splits what is sent by message kind.
	kinds atomic.Pointer[KindCounter]

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn

	stopOnce sync.Once
	stopCh   chan struct{}
	// innerDone closes once the inner transport has shut down; until then
	// the forwarders drain it, since its listeners block on delivery and
	// would never finish shutting down otherwise.
	innerDone chan struct{}
	wg        sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*FaultyTransport)(nil)

// NewFaultyTransport wraps inner, dropping outgoing packets with
// probability loss (0 to 1) chosen by a generator seeded with seed.
// Shutdown stops it and inner.
func NewFaultyTransport(inner memberlist.NodeAwareTransport, loss float64, seed uint64) *FaultyTransport {
	t := &FaultyTransport{
		inner:    inner,
		loss:     min(max(loss, 0), 1),
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		stopCh:   make(chan struct{}),

		innerDone: make(chan struct{}),
	}
	t.wg.Add(2)
	go t.forwardPackets()
	go t.forwardStreams()
	return t
}

// Freeze stops all delivery and sending for d from now. A freeze that is
// already running is extended, never shortened.
func (t *FaultyTransport) Freeze(d time.Duration) {
	until := time.Now().Add(d).UnixNano()
	for {
		cur := t.frozenUntil.Load()
		if cur >= until || t.frozenUntil.CompareAndSwap(cur, until) {
			return
		}
	}
}

// CountKinds makes the transport split everything sent from now on by
// message kind into k: packets as they are written (dropped ones too, as
// they count as sent), streams by their first write, dialled and accepted.
func (t *FaultyTransport) CountKinds(k *KindCounter) { t.kinds.Store(k) }

// kindPacket counts one packet sent, if kinds are counted.
func (t *FaultyTransport) kindPacket(b []byte) {
	if k := t.kinds.Load(); k != nil {
		k.Packet(b)
	}
}

// kindConn wraps a stream to count its writes by kind, if kinds are counted.
func (t *FaultyTransport) kindConn(c net.Conn) net.Conn {
	if k := t.kinds.Load(); k != nil && c != nil {
		return &kindConn{Conn: c, k: k}
	}
	return c
}

// kindConn splits a stream's writes by the kinds of its first one.
type kindConn struct {
	net.Conn
	k *KindCounter

	mu     sync.Mutex
	shares *streamShares
}

func (c *kindConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.mu.Lock()
	if c.shares == nil && n > 0 {
		s := c.k.Stream(b[:n])
		c.shares = &s
	}
	if c.shares != nil {
		c.shares.apply(n)
	}
	c.mu.Unlock()
	return n, err
}

// Dropped returns how many outgoing packets were dropped so far.
func (t *FaultyTransport) Dropped() uint64 { return t.dropped.Load() }

// waitThaw blocks while the transport is frozen. It returns false if the
// transport was shut down meanwhile.
func (t *FaultyTransport) waitThaw() bool {
	for {
		d := time.Until(time.Unix(0, t.frozenUntil.Load()))
		if d <= 0 {
			select {
			case <-t.stopCh:
				return false
			default:
				return true
			}
		}
		timer := time.NewTimer(d)
		select {
		case <-timer.C:
		case <-t.stopCh:
			timer.Stop()
			return false
		}
	}
}

func (t *FaultyTransport) drop() bool {
	if t.loss == 0 {
		return false
	}
	t.rngMu.Lock()
	d := t.rng.Float64() < t.loss
	t.rngMu.Unlock()
	if d {
		t.dropped.Add(1)
	}
	return d
}

func (t *FaultyTransport) forwardPackets() {
	defer t.wg.Done()
	defer t.drain()
	in := t.inner.PacketCh()
	for {
		select {
		case p := <-in:
			if !t.waitThaw() {
				return
			}
			select {
			case t.packetCh <- p:
			case <-t.stopCh:
				return
			}
		case <-t.stopCh:
			return
		}
	}
}

// drain discards what the inner transport still delivers until it has
// shut down.
func (t *FaultyTransport) drain() {
	packets, streams := t.inner.PacketCh(), t.inner.StreamCh()
	for {
		select {
		case <-packets:
		case c := <-streams:
			c.Close()
		case <-t.innerDone:
			return
		}
	}
}

func (t *FaultyTransport) forwardStreams() {
	defer t.wg.Done()
	defer t.drain()
	in := t.inner.StreamCh()
	for {
		select {
		case c := <-in:
			if !t.waitThaw() {
				c.Close()
				return
			}
			c = t.kindConn(c)
			select {
			case t.streamCh <- c:
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
func (t *FaultyTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

// WriteTo implements memberlist.Transport. A dropped packet is reported as
// sent, as the network would.
func (t *FaultyTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if !t.waitThaw() {
		return time.Time{}, errTransportStopped
	}
	if t.drop() {
		t.kindPacket(b)
		return time.Now(), nil
	}
	ts, err := t.inner.WriteTo(b, addr)
	if err == nil {
		t.kindPacket(b)
	}
	return ts, err
}

// WriteToAddress implements memberlist.NodeAwareTransport.
func (t *FaultyTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	if !t.waitThaw() {
		return time.Time{}, errTransportStopped
	}
	if t.drop() {
		t.kindPacket(b)
		return time.Now(), nil
	}
	ts, err := t.inner.WriteToAddress(b, addr)
	if err == nil {
		t.kindPacket(b)
	}
	return ts, err
}

// PacketCh implements memberlist.Transport.
func (t *FaultyTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// StreamCh implements memberlist.Transport.
func (t *FaultyTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// DialTimeout implements memberlist.Transport.
func (t *FaultyTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if !t.waitThaw() {
		return nil, errTransportStopped
	}
	c, err := t.inner.DialTimeout(addr, timeout)
	return t.kindConn(c), err
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *FaultyTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if !t.waitThaw() {
		return nil, errTransportStopped
	}
	c, err := t.inner.DialAddressTimeout(addr, timeout)
	return t.kindConn(c), err
}

// Shutdown stops forwarding, releases blocked senders and shuts the inner
// transport down. It is safe to call more than once.
func (t *FaultyTransport) Shutdown() error {
	var err error
	t.stopOnce.Do(func() {
		close(t.stopCh)
		err = t.inner.Shutdown()
		close(t.innerDone)
		t.wg.Wait()
	})
	return err
}

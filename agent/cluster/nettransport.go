package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
)

const (
	// maxPacketSize is the largest UDP payload; each listener reads into
	// one buffer of this size.
	maxPacketSize = 65536
	// udpRecvBufSize is the socket receive buffer asked for, as memberlist
	// does: a burst of gossip waits in the kernel, not on the wire.
	udpRecvBufSize = 2 << 20
)

// NetTransport is memberlist's transport over UDP packets and TCP streams,
// one listener of each on the same address and port. It behaves like
// memberlist.NetTransport except in what it allocates: that one reads every
// packet into a fresh 64 KB buffer, which memberlist holds until it has
// handled the packet, so a node receiving 20-odd packets of 30-200 bytes a
// second allocated over a megabyte a second and collected garbage several
// times a second for it. NetTransport reads into one buffer per listener and
// hands memberlist an exactly sized copy.
type NetTransport struct {
	udp    *net.UDPConn
	tcp    *net.TCPListener
	logger *slog.Logger

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn

	stopping atomic.Bool
	stopCh   chan struct{} // closed by Shutdown: a hand-off nobody takes is dropped
	stopOnce sync.Once
	wg       sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*NetTransport)(nil)

// NewNetTransport listens on addr (an IP; empty or 0.0.0.0 for every
// interface) at port, TCP and UDP; port 0 takes a free port, the same for
// both. Shutdown closes the listeners.
func NewNetTransport(addr string, port int, logger *slog.Logger) (*NetTransport, error) {
	var ip net.IP
	if addr != "" {
		if ip = net.ParseIP(addr); ip == nil {
			return nil, fmt.Errorf("bind address %q is not an IP address", addr)
		}
	}
	if logger == nil {
		logger = discardLogger()
	}
	tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: port})
	if err != nil {
		return nil, err
	}
	port = tcp.Addr().(*net.TCPAddr).Port
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
	if err != nil {
		tcp.Close()
		return nil, err
	}
	if err := setReadBuffer(udp, udpRecvBufSize); err != nil {
		tcp.Close()
		udp.Close()
		return nil, fmt.Errorf("size the UDP receive buffer: %w", err)
	}
	t := &NetTransport{
		udp:      udp,
		tcp:      tcp,
		logger:   logger,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		stopCh:   make(chan struct{}),
	}
	t.wg.Add(2)
	go t.readPackets()
	go t.acceptStreams()
	return t, nil
}

// setReadBuffer asks for size bytes of receive buffer, halving the request
// until the kernel accepts it.
func setReadBuffer(c *net.UDPConn, size int) error {
	var err error
	for ; size > 0; size /= 2 {
		if err = c.SetReadBuffer(size); err == nil {
			return nil
		}
	}
	return err
}

// Port returns the port both listeners are bound to.
func (t *NetTransport) Port() int { return t.tcp.Addr().(*net.TCPAddr).Port }

// FinalAdvertiseAddr implements memberlist.Transport: the given address if
// any (at the bound port when port is 0), else the bound one, else (bound to every interface) the first
// private IPv4 address of the host, as memberlist.NetTransport chooses.
func (t *NetTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		addr := net.ParseIP(ip)
		if addr == nil {
			return nil, 0, fmt.Errorf("advertise address %q is not an IP address", ip)
		}
		if v4 := addr.To4(); v4 != nil {
			addr = v4
		}
		if port == 0 {
			port = t.Port() // an advertise address without a port
		}
		return addr, port, nil
	}
	bound := t.tcp.Addr().(*net.TCPAddr).IP
	if !bound.IsUnspecified() {
		return bound, t.Port(), nil
	}
	private, err := sockaddr.GetPrivateIP()
	if err != nil {
		return nil, 0, fmt.Errorf("find an address to advertise: %w", err)
	}
	if private == "" {
		return nil, 0, errors.New("no private IP address to advertise: give one")
	}
	addr := net.ParseIP(private)
	if addr == nil {
		return nil, 0, fmt.Errorf("private address %q is not an IP address", private)
	}
	return addr, t.Port(), nil
}

// WriteTo implements memberlist.Transport.
func (t *NetTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		// memberlist addresses are IP:port; resolve anything else.
		ua, rerr := net.ResolveUDPAddr("udp", addr)
		if rerr != nil {
			return time.Time{}, rerr
		}
		ap = ua.AddrPort()
	}
	_, err = t.udp.WriteToUDPAddrPort(b, ap)
	return time.Now(), err
}

// WriteToAddress implements memberlist.NodeAwareTransport.
func (t *NetTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

// PacketCh implements memberlist.Transport.
func (t *NetTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout implements memberlist.Transport.
func (t *NetTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", addr)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *NetTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// StreamCh implements memberlist.Transport.
func (t *NetTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown closes the listeners and waits for their goroutines, dropping a
// packet or connection that nobody takes any more (memberlist, or a
// wrapper, may stop reading before it shuts the transport down). It is
// safe to call more than once.
func (t *NetTransport) Shutdown() error {
	t.stopOnce.Do(func() {
		t.stopping.Store(true)
		close(t.stopCh)
		t.tcp.Close()
		t.udp.Close()
		t.wg.Wait()
	})
	return nil
}

// readPackets hands each UDP packet to memberlist in a buffer of its own
// size, read through one buffer big enough for any.
func (t *NetTransport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, maxPacketSize)
	for {
		n, from, err := t.udp.ReadFromUDPAddrPort(buf)
		now := time.Now()
		if err != nil {
			if t.stopping.Load() {
				return
			}
			t.logger.Error("read gossip packet", "err", err)
			continue
		}
		if n == 0 {
			t.logger.Debug("dropped empty gossip packet", "from", from)
			continue
		}
		p := &memberlist.Packet{
			Buf:       append([]byte(nil), buf[:n]...),
			From:      net.UDPAddrFromAddrPort(netip.AddrPortFrom(from.Addr().Unmap(), from.Port())),
			Timestamp: now,
		}
		select {
		case t.packetCh <- p:
		case <-t.stopCh:
			return
		}
	}
}

// acceptStreams hands each TCP connection to memberlist, backing off from 5
// ms to 1 s while accepting fails (out of file descriptors, say).
func (t *NetTransport) acceptStreams() {
	defer t.wg.Done()
	const minDelay, maxDelay = 5 * time.Millisecond, time.Second
	var delay time.Duration
	for {
		conn, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.stopping.Load() {
				return
			}
			delay = min(max(2*delay, minDelay), maxDelay)
			t.logger.Error("accept gossip stream", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		select {
		case t.streamCh <- conn:
		case <-t.stopCh:
			conn.Close()
			return
		}
	}
}

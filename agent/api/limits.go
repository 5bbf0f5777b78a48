package api

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Limits bound what clients on the LAN can hold of the server: time,
// header bytes, connections and event streams. Anyone who can reach the
// port is a client, token or not, so each bound holds for requests that are
// never authorized. Zero fields take DefaultLimits' values.
type Limits struct {
	// ReadHeaderTimeout bounds reading a request's headers. A client on the
	// LAN sends them in one packet.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included. Bodies are
	// at most MaxBodyBytes (64 KiB), well under a second on any LAN; a
	// request that announces a body and never sends it is cut off here.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing an answer to a client that stopped
	// reading. The event stream lifts it and bounds each of its writes
	// instead (streamWriteTimeout).
	WriteTimeout time.Duration
	// IdleTimeout closes a kept-alive connection with no request.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers; nothing legitimate sends
	// more than a few hundred bytes. Beyond it the answer is 431.
	MaxHeaderBytes int

	// ConnsPerClient bounds the connections one client address holds
	// open (one IPv6 /64 counts as one client).
	ConnsPerClient int
	// Conns bounds the connections all clients hold together, each costing
	// a goroutine, buffers and a file descriptor.
	Conns int
	// ConnsReserve is room above Conns for clients holding at most one
	// connection, so that a flood from a few addresses filling Conns does
	// not lock out a health probe or a person's browser.
	ConnsReserve int

	// Streams bounds the open event streams, each holding a goroutine and
	// a buffer of events.
	Streams int
	// StreamsPerClient bounds one client address's share of Streams: a page
	// needs one per tab.
	StreamsPerClient int
}

// DefaultLimits returns the limits the agent serves with, chosen for a
// Raspberry Pi: an open connection costs about 20 KiB, so the most
// connections allowed (Conns + ConnsReserve) cost about 6 MiB, a third of an
// idle agent, however many clients try.
func DefaultLimits() Limits {
	return Limits{
		ReadHeaderTimeout: 3 * time.Second,
		ReadTimeout:       5 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ConnsPerClient:    32,
		Conns:             256,
		ConnsReserve:      64,
		Streams:           64,
		StreamsPerClient:  4,
	}
}

// withDefaults fills zero fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	fill := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	fillD := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	fillD(&l.ReadHeaderTimeout, d.ReadHeaderTimeout)
	fillD(&l.ReadTimeout, d.ReadTimeout)
	fillD(&l.WriteTimeout, d.WriteTimeout)
	fillD(&l.IdleTimeout, d.IdleTimeout)
	fill(&l.MaxHeaderBytes, d.MaxHeaderBytes)
	fill(&l.ConnsPerClient, d.ConnsPerClient)
	fill(&l.Conns, d.Conns)
	fill(&l.ConnsReserve, d.ConnsReserve)
	fill(&l.Streams, d.Streams)
	fill(&l.StreamsPerClient, d.StreamsPerClient)
	return l
}

// HTTPServer returns an http.Server serving Handler with the server's
// timeouts and header limit. Serve it on LimitListener's listener.
func (s *Server) HTTPServer() *http.Server {
	l := s.limits
	return &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
}

// clientKey names the client a remote address belongs to: its IP, or its
// /64 for IPv6, where one host holds a whole prefix.
func clientKey(addr netip.Addr) string {
	addr = addr.Unmap()
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.String()
	}
	return addr.String()
}

// clientOf is clientKey of a net.Addr or a "host:port" string; "" when it
// has no IP (a unix socket in tests).
func clientOf(remote string) string {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return ""
	}
	return clientKey(ap.Addr())
}

// Reasons a connection or a stream is refused, the label of the metrics
// that count them.
const (
	limitPerClient = "per_client"
	limitTotal     = "total"
)

// connCounts is the state of the connection bound, shared by the listener
// and /metrics.
type connCounts struct {
	mu       sync.Mutex
	open     int
	byClient map[string]int

	rejectedPerClient atomic.Uint64
	rejectedTotal     atomic.Uint64
}

// admit counts a new connection from client in, or returns the limit it
// would break.
func (c *connCounts) admit(l Limits, client string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	held := c.byClient[client]
	switch {
	case held >= l.ConnsPerClient:
		c.rejectedPerClient.Add(1)
		return limitPerClient
	case c.open >= l.Conns+l.ConnsReserve, c.open >= l.Conns && held > 1:
		c.rejectedTotal.Add(1)
		return limitTotal
	}
	c.open++
	c.byClient[client] = held + 1
	return ""
}

func (c *connCounts) release(client string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open--
	if c.byClient[client]--; c.byClient[client] <= 0 {
		delete(c.byClient, client)
	}
}

func (c *connCounts) openConns() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open
}

// LimitListener wraps ln so that it holds at most the server's Limits of
// connections. A connection over a limit is answered 503 and closed at
// once, inside Accept: Accept never waits for room, so a client within its
// share is never queued behind a flood.
func (s *Server) LimitListener(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, s: s}
}

type limitListener struct {
	net.Listener
	s *Server
}

func (ln *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		client := clientOf(c.RemoteAddr().String())
		if limit := ln.s.conns.admit(ln.s.limits, client); limit != "" {
			ln.refuse(c, client, limit)
			continue
		}
		return &limitedConn{Conn: c, release: func() { ln.s.conns.release(client) }}, nil
	}
}

// refuseWriteTimeout bounds the refusal written to a connection over the
// limit; a fresh connection's send buffer is empty, so it never waits.
const refuseWriteTimeout = 100 * time.Millisecond

// refuse tells a client over a limit why, in a plain 503 it can read
// before the connection closes, and closes it.
func (ln *limitListener) refuse(c net.Conn, client, limit string) {
	l := ln.s.limits
	msg := fmt.Sprintf("too many connections from %s: at most %d per client; close idle connections and retry", client, l.ConnsPerClient)
	if limit == limitTotal {
		msg = fmt.Sprintf("too many connections: the agent holds at most %d; retry later", l.Conns)
	}
	body := fmt.Sprintf("{\"error\":%q}\n", msg)
	c.SetWriteDeadline(time.Now().Add(refuseWriteTimeout))
	fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"+
		"Retry-After: 5\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	c.Close()
	ln.s.log.Debug("refused connection", "remote", c.RemoteAddr().String(), "limit", limit)
}

// limitedConn gives its slot back on the first Close.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// limitMetrics writes the connection and event-stream figures of /metrics.
func (s *Server) limitMetrics(p *promWriter) {
	p.family("rpi_http_connections_open", "gauge", "Connections the API server holds open.")
	p.sample("rpi_http_connections_open", float64(s.conns.openConns()))
	p.family("rpi_http_connections_rejected_total", "counter", "Connections closed at once because a client or all clients held too many.")
	p.sample("rpi_http_connections_rejected_total", float64(s.conns.rejectedPerClient.Load()), "limit", limitPerClient)
	p.sample("rpi_http_connections_rejected_total", float64(s.conns.rejectedTotal.Load()), "limit", limitTotal)
	p.family("rpi_event_streams_open", "gauge", "Open /v1/events streams.")
	p.sample("rpi_event_streams_open", float64(s.hub.streams()))
	p.family("rpi_event_streams_rejected_total", "counter", "Event streams refused with 503 because a client or all clients held too many.")
	p.sample("rpi_event_streams_rejected_total", float64(s.hub.rejectedPerClient.Load()), "limit", limitPerClient)
	p.sample("rpi_event_streams_rejected_total", float64(s.hub.rejectedTotal.Load()), "limit", limitTotal)
}

// CloseWrite half-closes the connection when the underlying one can, as
// http.Server does after an error answer so the client reads it before the
// connection resets.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

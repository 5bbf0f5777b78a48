package api

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// liveServer serves a fakeBackend with the Server's own http.Server and
// limited listener on 127.0.0.1, as the agent does; configure (when not nil)
// adjusts the Server first.
func liveServer(t *testing.T, l Limits, configure func(*Server)) (string, *fakeBackend, *Server) {
	t.Helper()
	f := newFakeBackend("pi-1", testNodes()...)
	s := NewServer(f, Options{Limits: l})
	if configure != nil {
		configure(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := s.HTTPServer()
	go srv.Serve(s.LimitListener(ln))
	t.Cleanup(func() {
		s.Shutdown()
		srv.Close()
	})
	return "http://" + ln.Addr().String(), f, s
}

// connFrom dials base from source address ip.
func connFrom(t *testing.T, base, ip string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// healthzFrom sends GET /healthz on a new connection from ip.
func healthzFrom(t *testing.T, base, ip string) (int, string, error) {
	t.Helper()
	c := connFrom(t, base, ip)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// waitOpen waits until the server counts n open connections.
func waitOpen(t *testing.T, s *Server, n int) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if got := s.conns.openConns(); got != n {
			return fmt.Errorf("%d connections open, want %d", got, n)
		}
		return nil
	})
}

// The listener refuses a client past its share and everyone past the
// total, at once and with a 503 saying why, while a client holding at most
// one connection still gets in from the reserve.
func TestLimitListenerBoundsConnections(t *testing.T) {
	base, _, s := liveServer(t, Limits{ConnsPerClient: 3, Conns: 4, ConnsReserve: 3}, nil)

	for range 3 {
		connFrom(t, base, "127.0.0.11")
	}
	waitOpen(t, s, 3)
	code, body, err := healthzFrom(t, base, "127.0.0.11")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "too many connections from 127.0.0.11: at most 3 per client") {
		t.Errorf("4th connection of one client: %d %q %v, want 503 naming the per-client limit", code, body, err)
	}

	connFrom(t, base, "127.0.0.12")
	waitOpen(t, s, 4) // the total is reached
	connFrom(t, base, "127.0.0.12")
	waitOpen(t, s, 5) // from the reserve: the client held one
	code, body, err = healthzFrom(t, base, "127.0.0.12")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "too many connections: the agent holds at most 4") {
		t.Errorf("3rd connection of a client past the total: %d %q %v, want 503 naming the total", code, body, err)
	}
	if code, _, err := healthzFrom(t, base, "127.0.0.13"); err != nil || code != http.StatusOK {
		t.Errorf("a new client past the total: %d %v, want it served from the reserve", code, err)
	}

	code, metrics, err := healthzFromPath(t, base, "127.0.0.14", "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	for _, want := range []string{
		`rpi_http_connections_rejected_total{limit="per_client"} 1`,
		`rpi_http_connections_rejected_total{limit="total"} 1`,
		"rpi_http_connections_open 7",
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// healthzFromPath is healthzFrom for any path.
func healthzFromPath(t *testing.T, base, ip, path string) (int, string, error) {
	t.Helper()
	c := connFrom(t, base, ip)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// A connection gives its slot back when it closes, whoever closes it.
func TestLimitListenerReleasesSlots(t *testing.T) {
	base, _, s := liveServer(t, Limits{ConnsPerClient: 2, IdleTimeout: 100 * time.Millisecond}, nil)
	c := connFrom(t, base, "127.0.0.21")
	connFrom(t, base, "127.0.0.21")
	waitOpen(t, s, 2)
	c.Close()
	waitOpen(t, s, 1)
	// A kept-alive connection the server closes when idle.
	code, _, err := healthzFrom(t, base, "127.0.0.21")
	if err != nil || code != 200 {
		t.Fatalf("after a close: %d %v", code, err)
	}
	waitOpen(t, s, 1)
}

// Headers that stall, bodies that never come and oversized headers are all
// cut off by the server's own limits.
func TestHTTPServerTimesOutSlowClients(t *testing.T) {
	const timeout = 200 * time.Millisecond
	base, f, s := liveServer(t, Limits{ReadHeaderTimeout: timeout, ReadTimeout: 2 * timeout, MaxHeaderBytes: 1 << 10}, nil)

	// ended waits for the server to close c and returns what it answered.
	ended := func(c net.Conn) (string, time.Duration) {
		start := time.Now()
		c.SetReadDeadline(start.Add(5 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("connection not closed by the server: %v", err)
		}
		return string(b), time.Since(start)
	}

	c := connFrom(t, base, "127.0.0.31")
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n") // no end of headers
	if _, took := ended(c); took > 5*timeout {
		t.Errorf("stalled headers closed after %v, want about %v", took, timeout)
	}

	c = connFrom(t, base, "127.0.0.31")
	fmt.Fprintf(c, "PUT /v1/services/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
	if answer, took := ended(c); took > 5*timeout || !strings.HasPrefix(answer, "HTTP/1.1 400") {
		t.Errorf("body never sent: closed after %v with %q, want 400 after about %v", took, answer, 2*timeout)
	}
	if n := f.writes.Load(); n != 0 {
		t.Errorf("%d writes reached the backend", n)
	}

	c = connFrom(t, base, "127.0.0.31")
	go fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: %s\r\n\r\n", strings.Repeat("a", 64<<10))
	if answer, _ := ended(c); !strings.HasPrefix(answer, "HTTP/1.1 431") {
		t.Errorf("64 KiB of headers: %q, want 431", answer)
	}
	waitOpen(t, s, 0)

	var got map[string]any
	_, body, err := healthzFrom(t, base, "127.0.0.31")
	if err != nil || json.Unmarshal([]byte(body), &got) != nil || got["status"] == nil {
		t.Errorf("a good request after all that: %q %v", body, err)
	}
}

// A client is an IPv4 address, or an IPv6 /64: one host holds a whole
// prefix and could otherwise open a share of connections per address.
func TestClientOf(t *testing.T) {
	for remote, want := range map[string]string{
		"192.168.1.20:51234":          "192.168.1.20",
		"[::ffff:192.168.1.20]:51234": "192.168.1.20",
		"[2001:db8:1:2:aaaa::1]:8080": "2001:db8:1:2::/64",
		"[2001:db8:1:2:bbbb::ff]:9":   "2001:db8:1:2::/64",
		"[fe80::1%eth0]:8080":         "fe80::/64",
		"@":                           "",
		"not an address":              "",
	} {
		if got := clientOf(remote); got != want {
			t.Errorf("clientOf(%q) = %q, want %q", remote, got, want)
		}
	}
}

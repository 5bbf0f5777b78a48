package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/api"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// dialFrom connects to the agent's API from source address ip.
func dialFrom(t *testing.T, a *Agent, ip string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", a.HTTPAddr())
	if err != nil {
		t.Fatalf("dial %s from %s: %v", a.HTTPAddr(), ip, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// getFrom sends GET path from source address ip on a new connection and
// returns the answer, or the error that ended the connection.
func getFrom(t *testing.T, a *Agent, ip, path string) (*http.Response, error) {
	t.Helper()
	c := dialFrom(t, a, ip)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, a.HTTPAddr()); err != nil {
		return nil, err
	}
	return http.ReadResponse(bufio.NewReader(c), nil)
}

// A request that announces a body and never sends it is cut off once the
// read timeout passes, instead of holding a connection and a goroutine.
func TestHTTPBodyNeverSentTimesOut(t *testing.T) {
	a := startAgent(t, 40, nil)
	c := dialFrom(t, a, "127.0.72.1")
	fmt.Fprintf(c, "PUT /v1/services/slow HTTP/1.1\r\nHost: %s\r\nContent-Length: 1000\r\n\r\n", a.HTTPAddr())
	start := time.Now()
	c.SetReadDeadline(start.Add(api.DefaultLimits().ReadTimeout + 5*time.Second))
	_, err := io.Copy(io.Discard, c)
	if err != nil {
		t.Fatalf("connection still open %v after the headers: %v", time.Since(start).Round(time.Millisecond), err)
	}
}

// Headers past the limit get 431 instead of being buffered.
func TestHTTPHugeHeadersRefused(t *testing.T) {
	a := startAgent(t, 41, nil)
	c := dialFrom(t, a, "127.0.72.2")
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		w := bufio.NewWriter(c)
		fmt.Fprintf(w, "GET /healthz HTTP/1.1\r\nHost: %s\r\n", a.HTTPAddr())
		for i := range 1000 {
			fmt.Fprintf(w, "X-Filler-%d: %s\r\n", i, strings.Repeat("a", 1000))
		}
		w.WriteString("\r\n")
		w.Flush()
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("1 MB of headers: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("1 MB of headers: status %d, want 431", resp.StatusCode)
	}
}

// One client address cannot hold more than its share of connections, and
// another client is served meanwhile.
func TestHTTPConnectionsPerClientBounded(t *testing.T) {
	a := startAgent(t, 42, nil)
	hog := "127.0.72.3"
	limit := api.DefaultLimits().ConnsPerClient
	for range limit {
		dialFrom(t, a, hog)
	}
	// The agent counts a connection once it accepts it: wait for that.
	waitMetric(t, a, "rpi_http_connections_open", float64(limit))
	resp, err := getFrom(t, a, hog, "/healthz")
	if err == nil && resp.StatusCode == http.StatusOK {
		t.Errorf("connection %d from one client was served", limit+1)
	}
	if err == nil && resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("connection %d from one client: status %d, want 503 or a closed connection", limit+1, resp.StatusCode)
	}
	resp, err = getFrom(t, a, "127.0.72.4", "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("another client while one holds %d connections: %v %v", limit, resp, err)
	}
	waitMetric(t, a, `rpi_http_connections_rejected_total{limit="per_client"}`, 1)
}

// One client cannot hold every event-stream slot: past its share, its
// streams are refused with 503 and Retry-After, and others still get one.
func TestHTTPEventStreamsPerClientBounded(t *testing.T) {
	a := startAgent(t, 43, nil)
	hog := "127.0.72.5"
	limit := api.DefaultLimits().StreamsPerClient
	for i := range limit {
		resp, err := getFrom(t, a, hog, "/v1/events")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d: %v %v", i+1, resp, err)
		}
	}
	resp, err := getFrom(t, a, hog, "/v1/events")
	if err != nil {
		t.Fatalf("stream %d: %v", limit+1, err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("stream %d from one client: status %d, Retry-After %q; want 503 with Retry-After", limit+1, resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	resp, err = getFrom(t, a, "127.0.72.6", "/v1/events")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("another client's stream: %v %v", resp, err)
	}
}

// waitMetric waits until the agent's /metrics has sample at want or more.
func waitMetric(t *testing.T, a *Agent, sample string, want float64) {
	t.Helper()
	cl, err := client.New("http://"+a.HTTPAddr(), "")
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		got, err := cl.Metric(context.Background(), sample)
		if err != nil {
			return err
		}
		if got < want {
			return fmt.Errorf("%s = %v, want %v or more", sample, got, want)
		}
		return nil
	})
}

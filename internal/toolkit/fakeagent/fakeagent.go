// Package fakeagent serves canned /v1 JSON from httptest servers, one per
// node, so the workstation tools can be tested with the real client package
// and real HTTP without running agents. All agents share one cluster view; a
// write to a node's own agent changes that node's record in the view at once
// (gossip with zero delay) and is recorded for the test to check.
package fakeagent

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/agent/api"
)

// Write is one service write an agent received.
type Write struct {
	Node    string // the agent that received it
	Method  string // PUT or DELETE
	Service string
}

func (w Write) String() string { return w.Method + " " + w.Node + " " + w.Service }

// Cluster is a set of fake agents sharing one view.
type Cluster struct {
	// Token, when set, is required on writes.
	Token string

	mu      sync.Mutex
	nodes   []api.Node
	servers map[string]*httptest.Server
	writes  []Write
}

// Start starts one agent per node. A node's Address, when set, is the
// loopback address its agent listens on (default 127.0.0.1); its HTTPPort is
// set to the agent's port. Nodes named in down get a record but no agent
// (connections are refused). The servers close when the test ends.
func Start(t testing.TB, nodes []api.Node, down ...string) *Cluster {
	t.Helper()
	c := &Cluster{servers: map[string]*httptest.Server{}}
	for i := range nodes {
		n := &nodes[i]
		if n.Address == "" {
			n.Address = "127.0.0.1"
		}
		if n.Status == "" {
			n.Status = api.StatusAlive
		}
		if slices.Contains(down, n.Name) {
			// A listener opened and closed at once gives a port nobody serves.
			l, err := net.Listen("tcp", net.JoinHostPort(n.Address, "0"))
			if err != nil {
				t.Fatalf("fakeagent: listen: %v", err)
			}
			n.HTTPPort = l.Addr().(*net.TCPAddr).Port
			l.Close()
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(n.Address, "0"))
		if err != nil {
			t.Fatalf("fakeagent: listen on %s: %v", n.Address, err)
		}
		name := n.Name
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c.serve(name, w, r)
		}))
		srv.Listener.Close()
		srv.Listener = l
		srv.Start()
		t.Cleanup(srv.Close)
		n.HTTPPort = l.Addr().(*net.TCPAddr).Port
		c.servers[name] = srv
	}
	c.nodes = append([]api.Node(nil), nodes...)
	return c
}

// URL is the base URL of node's agent.
func (c *Cluster) URL(node string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.Name == node {
			return "http://" + net.JoinHostPort(n.Address, strconv.Itoa(n.HTTPPort))
		}
	}
	panic("fakeagent: no node " + node)
}

// Nodes returns a copy of the current view.
func (c *Cluster) Nodes() []api.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]api.Node, len(c.nodes))
	for i, n := range c.nodes {
		n.Services = append([]string(nil), n.Services...)
		out[i] = n
	}
	return out
}

// Writes returns the service writes received so far, in order.
func (c *Cluster) Writes() []Write {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Write(nil), c.writes...)
}

// Services returns node's services in the current view.
func (c *Cluster) Services(node string) []string {
	for _, n := range c.Nodes() {
		if n.Name == node {
			return n.Services
		}
	}
	return nil
}

func (c *Cluster) serve(self string, w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	path := r.URL.Path
	switch {
	case path == "/healthz":
		w.Write([]byte("ok\n"))
	case path == "/v1/nodes" && r.Method == http.MethodGet:
		out := make([]api.Node, len(c.nodes))
		for i, n := range c.nodes {
			n.Self = n.Name == self
			out[i] = n
		}
		writeJSON(w, http.StatusOK, out)
	case path == "/v1/self" && r.Method == http.MethodGet:
		for _, n := range c.nodes {
			if n.Name == self {
				n.Self = true
				writeJSON(w, http.StatusOK, n)
				return
			}
		}
	case strings.HasPrefix(path, "/v1/services/"):
		svc := strings.TrimPrefix(path, "/v1/services/")
		if err := api.ValidateServiceName(svc); err != nil {
			writeJSON(w, http.StatusBadRequest, api.Error{Error: err.Error()})
			return
		}
		if r.Method == http.MethodGet {
			var out []api.Node
			for _, n := range c.nodes {
				if slices.Contains(n.Services, svc) {
					out = append(out, n)
				}
			}
			writeJSON(w, http.StatusOK, out)
			return
		}
		if r.Method != http.MethodPut && r.Method != http.MethodDelete {
			writeJSON(w, http.StatusMethodNotAllowed, api.Error{Error: "method not allowed"})
			return
		}
		if c.Token != "" && r.Header.Get("Authorization") != "Bearer "+c.Token {
			writeJSON(w, http.StatusUnauthorized, api.Error{Error: "missing or wrong token"})
			return
		}
		c.writes = append(c.writes, Write{Node: self, Method: r.Method, Service: svc})
		for i := range c.nodes {
			n := &c.nodes[i]
			if n.Name != self {
				continue
			}
			had := slices.Contains(n.Services, svc)
			if r.Method == http.MethodPut && !had {
				n.Services = append(n.Services, svc)
			}
			if r.Method == http.MethodDelete && had {
				n.Services = slices.DeleteFunc(n.Services, func(s string) bool { return s == svc })
			}
			n.RecordVersion++
			writeJSON(w, http.StatusOK, api.ServiceResult{Node: self, Service: svc, Changed: had != (r.Method == http.MethodPut), Services: n.Services})
			return
		}
	default:
		writeJSON(w, http.StatusNotFound, api.Error{Error: fmt.Sprintf("no route %s %s", r.Method, path)})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// Package fakeagent serves canned /v1 JSON from httptest servers, one per
// node, so the workstation tools can be tested with the real client package
// and real HTTP without running agents. All agents share one cluster view; a
// write to a node's own agent changes that node's record in the view at once
// (gossip with zero delay) and is recorded for the test to check.
//
// The agents also share one desired state (/v1/desired, last writer wins by
// version) and serve /v1/events: the test injects events with Emit, and a
// desired-state write emits a "desired" event on every stream. Stop takes
// one agent down, ending its streams, so tools can be tested failing over.
package fakeagent

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
)

// Write is one service write an agent received.
type Write struct {
	Node    string // the agent that received it
	Method  string // PUT or DELETE
	Service string
}

func (w Write) String() string { return w.Method + " " + w.Node + " " + w.Service }

// Signed returns n as a node whose owner holds k would report itself: its
// IdentityKey set and a SignedRecord over the record fields a workstation
// checks ({"n","a","k","pk","v"}: name, address, SSH host keys, identity
// key, version), signed for identity.PurposeRecord. Set n.Address first:
// the address is part of what is signed.
func Signed(k *identity.Key, n apitypes.Node) apitypes.Node {
	body, err := json.Marshal(identity.RecordClaims{
		Name: n.Name, Addr: n.Address, SSHHostKeys: n.SSHHostKeys, IdentityKey: k.Public(), Version: n.RecordVersion,
	})
	if err != nil {
		panic("fakeagent: encode record: " + err.Error())
	}
	n.IdentityKey = identity.EncodePublicKey(k.Public())
	n.SignedRecord = &apitypes.SignedRecord{Body: body, Sig: k.Sign(identity.PurposeRecord, body)}
	return n
}

// Cluster is a set of fake agents sharing one view.
type Cluster struct {
	// Token, when set, is required on writes.
	Token string
	// NoDesired makes the agents answer /v1/desired with 404, as agents
	// from before desired state do. Set it before the first request.
	NoDesired bool

	mu      sync.Mutex
	nodes   []apitypes.Node
	servers map[string]*httptest.Server
	writes  []Write
	desired map[string]apitypes.DesiredService
	// subs are the open event streams, per agent.
	subs map[string]map[chan apitypes.Event]struct{}
	// stopped is closed per agent by Stop; done when the test ends.
	stopped map[string]chan struct{}
	done    chan struct{}
}

// Start starts one agent per node. A node's Address, when set, is the
// loopback address its agent listens on (default 127.0.0.1); its HTTPPort is
// set to the agent's port. Nodes named in down get a record but no agent
// (connections are refused). The servers close when the test ends.
func Start(t testing.TB, nodes []apitypes.Node, down ...string) *Cluster {
	t.Helper()
	c := &Cluster{
		servers: map[string]*httptest.Server{},
		desired: map[string]apitypes.DesiredService{},
		subs:    map[string]map[chan apitypes.Event]struct{}{},
		stopped: map[string]chan struct{}{},
		done:    make(chan struct{}),
	}
	for i := range nodes {
		n := &nodes[i]
		if n.Address == "" {
			n.Address = "127.0.0.1"
		}
		if n.Status == "" {
			n.Status = apitypes.StatusAlive
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
		c.stopped[name] = make(chan struct{})
	}
	c.nodes = append([]apitypes.Node(nil), nodes...)
	// Runs before the servers close (cleanups run last-in first-out): open
	// event streams end so Close does not wait for them.
	t.Cleanup(func() { close(c.done) })
	return c
}

// Stop takes node's agent down: its event streams end and new connections
// are refused. Stopping an agent twice is fine.
func (c *Cluster) Stop(node string) {
	c.mu.Lock()
	srv := c.servers[node]
	ch := c.stopped[node]
	if srv == nil {
		c.mu.Unlock()
		return
	}
	delete(c.servers, node)
	close(ch)
	c.mu.Unlock()
	srv.Close()
}

// Update changes node's record in the shared view (bumping its record
// version) and returns the new record; it emits nothing.
func (c *Cluster) Update(node string, fn func(*apitypes.Node)) apitypes.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.nodes {
		if c.nodes[i].Name == node {
			fn(&c.nodes[i])
			c.nodes[i].RecordVersion++
			return c.nodes[i]
		}
	}
	panic("fakeagent: no node " + node)
}

// Emit sends ev on every open event stream of every agent.
func (c *Cluster) Emit(ev apitypes.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.emitLocked(ev)
}

func (c *Cluster) emitLocked(ev apitypes.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	for _, subs := range c.subs {
		for ch := range subs {
			select {
			case ch <- ev:
			default: // a slow reader loses events, as with a real agent
			}
		}
	}
}

// Subscribers returns how many event streams node's agent is serving.
func (c *Cluster) Subscribers(node string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.subs[node])
}

// Desired returns the shared desired state, sorted by service.
func (c *Cluster) Desired() []apitypes.DesiredService {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.desiredLocked()
}

func (c *Cluster) desiredLocked() []apitypes.DesiredService {
	out := make([]apitypes.DesiredService, 0, len(c.desired))
	for _, d := range c.desired {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out
}

// SetDesired sets a service's desired replica count as if some agent had
// received the write; it emits a "desired" event.
func (c *Cluster) SetDesired(service string, replicas int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.changeDesiredLocked("test", service, apitypes.DesiredChange{Replicas: &replicas})
}

func (c *Cluster) changeDesiredLocked(self, service string, ch apitypes.DesiredChange) apitypes.DesiredService {
	d := c.desired[service]
	d.Service = service
	if ch.Replicas != nil {
		d.Replicas = *ch.Replicas
	}
	if ch.Delta != nil {
		d.Replicas += *ch.Delta
	}
	d.Replicas = max(d.Replicas, 0)
	if ch.Policy != nil {
		d.Policy = *ch.Policy
	}
	if len(ch.Rendered) > 0 {
		r := maps.Clone(d.Rendered)
		if r == nil {
			r = map[string]string{}
		}
		for node, h := range ch.Rendered {
			if h == "" {
				delete(r, node)
			} else {
				r[node] = h
			}
		}
		d.Rendered = r
	}
	d.Version++
	d.UpdatedBy = self
	d.UpdatedAt = time.Now()
	c.desired[service] = d
	c.emitLocked(apitypes.Event{Kind: apitypes.EventDesired, Desired: &d})
	return d
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
func (c *Cluster) Nodes() []apitypes.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]apitypes.Node, len(c.nodes))
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
	if r.URL.Path == "/v1/events" && r.Method == http.MethodGet {
		c.serveEvents(self, w, r)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	path := r.URL.Path
	switch {
	case c.NoDesired && strings.HasPrefix(path, "/v1/desired"):
		writeJSON(w, http.StatusNotFound, apitypes.Error{Error: fmt.Sprintf("no such path %q", path)})
	case path == "/v1/desired" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, apitypes.DesiredState{Services: c.desiredLocked()})
	case strings.HasPrefix(path, "/v1/desired/"):
		svc := strings.TrimPrefix(path, "/v1/desired/")
		if err := apitypes.ValidateServiceName(svc); err != nil {
			writeJSON(w, http.StatusBadRequest, apitypes.Error{Error: err.Error()})
			return
		}
		switch r.Method {
		case http.MethodGet:
			d, ok := c.desired[svc]
			if !ok {
				writeJSON(w, http.StatusNotFound, apitypes.Error{Error: "no desired state for " + svc})
				return
			}
			writeJSON(w, http.StatusOK, d)
		case http.MethodPut:
			if c.Token != "" && r.Header.Get("Authorization") != "Bearer "+c.Token {
				writeJSON(w, http.StatusUnauthorized, apitypes.Error{Error: "missing or wrong token"})
				return
			}
			var ch apitypes.DesiredChange
			if err := json.NewDecoder(r.Body).Decode(&ch); err != nil || (ch.Replicas != nil && ch.Delta != nil) ||
				(ch.Replicas == nil && ch.Delta == nil && ch.Policy == nil && ch.Rendered == nil) {
				writeJSON(w, http.StatusBadRequest, apitypes.Error{Error: "body must set at most one of replicas and delta, and something to change"})
				return
			}
			writeJSON(w, http.StatusOK, c.changeDesiredLocked(self, svc, ch))
		default:
			writeJSON(w, http.StatusMethodNotAllowed, apitypes.Error{Error: "method not allowed"})
		}
	case path == "/healthz":
		w.Write([]byte("ok\n"))
	case path == "/v1/nodes" && r.Method == http.MethodGet:
		out := make([]apitypes.Node, len(c.nodes))
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
		if err := apitypes.ValidateServiceName(svc); err != nil {
			writeJSON(w, http.StatusBadRequest, apitypes.Error{Error: err.Error()})
			return
		}
		if r.Method == http.MethodGet {
			var out []apitypes.Node
			for _, n := range c.nodes {
				if slices.Contains(n.Services, svc) {
					out = append(out, n)
				}
			}
			writeJSON(w, http.StatusOK, out)
			return
		}
		if r.Method != http.MethodPut && r.Method != http.MethodDelete {
			writeJSON(w, http.StatusMethodNotAllowed, apitypes.Error{Error: "method not allowed"})
			return
		}
		if c.Token != "" && r.Header.Get("Authorization") != "Bearer "+c.Token {
			writeJSON(w, http.StatusUnauthorized, apitypes.Error{Error: "missing or wrong token"})
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
			writeJSON(w, http.StatusOK, apitypes.ServiceResult{Node: self, Service: svc, Changed: had != (r.Method == http.MethodPut), Services: n.Services})
			return
		}
	default:
		writeJSON(w, http.StatusNotFound, apitypes.Error{Error: fmt.Sprintf("no route %s %s", r.Method, path)})
	}
}

// serveEvents streams events as server-sent events until the client goes,
// the agent is stopped or the test ends.
func (c *Cluster) serveEvents(self string, w http.ResponseWriter, r *http.Request) {
	ch := make(chan apitypes.Event, 64)
	c.mu.Lock()
	stopped := c.stopped[self]
	if c.subs[self] == nil {
		c.subs[self] = map[chan apitypes.Event]struct{}{}
	}
	c.subs[self][ch] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.subs[self], ch)
		c.mu.Unlock()
	}()
	fl, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": connected\n\n")
	if fl != nil {
		fl.Flush()
	}
	for {
		select {
		case ev := <-ch:
			data, _ := json.Marshal(ev)
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.Kind, data)
			if fl != nil {
				fl.Flush()
			}
		case <-r.Context().Done():
			return
		case <-stopped:
			return
		case <-c.done:
			return
		}
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

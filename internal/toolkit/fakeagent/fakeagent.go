// Package fakeagent runs the agent's real API handlers (agent/api.Server)
// over an in-memory backend, one httptest server per node, so the
// workstation tools are tested with the real client, real HTTP and the
// agent's own routes, status codes and bodies, without running agents. All
// agents share one cluster view; a write to a node's own agent changes that
// node's record in the view at once (gossip with zero delay) and is
// recorded for the test to check.
//
// The agents also share one desired state (/v1/desired, last writer wins)
// and serve /v1/events: the test injects events with Emit, and a
// desired-state write emits a "desired" event on every stream. Stop takes
// one agent down, ending its streams, so tools can be tested failing over.
package fakeagent

import (
	"context"
	"encoding/json"
	"errors"
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

	"github.com/rpi-cluster/rpi-cluster/agent/api"
	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
)

// Write is one service write an agent accepted (past the token check and
// the name rules) and applied.
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
	apis    map[string]*api.Server
	writes  []Write
	desired map[string]apitypes.DesiredService
	// subs are the backends' event subscriptions (one per agent whose
	// event hub runs); streams counts the open /v1/events requests.
	subs    map[chan apitypes.Event]struct{}
	streams map[string]int
	// resumeIDs holds the Last-Event-ID of every /v1/events request, per
	// agent; held holds an interrupted agent's new streams until resumed.
	resumeIDs map[string][]string
	held      map[string]chan struct{}
}

// Start starts one agent per node. A node's Address, when set, is the
// loopback address its agent listens on (default 127.0.0.1); its HTTPPort is
// set to the agent's port. Nodes named in down get a record but no agent
// (connections are refused). The servers close when the test ends.
func Start(t testing.TB, nodes []apitypes.Node, down ...string) *Cluster {
	t.Helper()
	c := &Cluster{
		servers: map[string]*httptest.Server{},
		apis:    map[string]*api.Server{},
		desired: map[string]apitypes.DesiredService{},
		subs:    map[chan apitypes.Event]struct{}{},
		streams: map[string]int{},

		resumeIDs: map[string][]string{},
		held:      map[string]chan struct{}{},
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
		a := api.NewServer(backend{c: c, self: name}, api.Options{Version: "fakeagent"})
		h := a.Handler()
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c.serve(name, a, h, w, r)
		}))
		srv.Listener.Close()
		srv.Listener = l
		srv.Start()
		t.Cleanup(srv.Close)
		// Runs before Close (cleanups run last-in first-out): open event
		// streams end so Close does not wait for them.
		t.Cleanup(a.Shutdown)
		n.HTTPPort = l.Addr().(*net.TCPAddr).Port
		c.servers[name] = srv
		c.apis[name] = a
	}
	c.nodes = append([]apitypes.Node(nil), nodes...)
	return c
}

// serve is one agent's handler: the test's Token and NoDesired, then the
// real API.
func (c *Cluster) serve(self string, a *api.Server, h http.Handler, w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	token, noDesired := c.Token, c.NoDesired
	c.mu.Unlock()
	a.SetToken(token)
	if noDesired && strings.HasPrefix(r.URL.Path, "/v1/desired") {
		// An agent from before desired state: the real server's answer to
		// a path it does not know.
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(apitypes.Error{Error: fmt.Sprintf("no such path %q", r.URL.Path)})
		return
	}
	if r.URL.Path == "/v1/events" {
		c.mu.Lock()
		c.resumeIDs[self] = append(c.resumeIDs[self], r.Header.Get("Last-Event-ID"))
		hold := c.held[self]
		c.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		c.mu.Lock()
		c.streams[self]++
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			c.streams[self]--
			c.mu.Unlock()
		}()
	}
	h.ServeHTTP(w, r)
}

// Stop takes node's agent down: its event streams end and new connections
// are refused. Stopping an agent twice is fine.
func (c *Cluster) Stop(node string) {
	c.mu.Lock()
	srv, a := c.servers[node], c.apis[node]
	if srv == nil {
		c.mu.Unlock()
		return
	}
	delete(c.servers, node)
	delete(c.apis, node)
	c.mu.Unlock()
	a.Shutdown()
	srv.Close()
}

// Interrupt cuts every open connection to node's agent, as a network blip
// does, and holds the event streams asked for from then on until resume is
// called. The agent itself stays up: events emitted in between reach it
// while no stream is open, and it keeps them for streams that resume.
func (c *Cluster) Interrupt(node string) (resume func()) {
	c.mu.Lock()
	srv := c.servers[node]
	if srv == nil {
		c.mu.Unlock()
		panic("fakeagent: no running agent " + node)
	}
	hold := make(chan struct{})
	c.held[node] = hold
	c.mu.Unlock()
	srv.CloseClientConnections()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			delete(c.held, node)
			c.mu.Unlock()
			close(hold)
		})
	}
}

// ResumeIDs returns the Last-Event-ID header of every /v1/events request
// node's agent received, in order ("" for a new stream).
func (c *Cluster) ResumeIDs(node string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.resumeIDs[node])
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
	for ch := range c.subs {
		select {
		case ch <- ev:
		default: // a slow reader loses events, as with a real agent
		}
	}
}

// Subscribers returns how many event streams node's agent is serving.
func (c *Cluster) Subscribers(node string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams[node]
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

// backend is one agent's view of the shared cluster: the api.Backend the
// real handlers run over.
type backend struct {
	c    *Cluster
	self string
}

func (b backend) Self() apitypes.Node {
	for _, n := range b.c.Nodes() {
		if n.Name == b.self {
			return n
		}
	}
	return apitypes.Node{Name: b.self}
}

func (b backend) Nodes() []apitypes.Node { return b.c.Nodes() }

func (b backend) AddService(_ context.Context, service string) (bool, error) {
	return b.change(http.MethodPut, service)
}

func (b backend) RemoveService(_ context.Context, service string) (bool, error) {
	return b.change(http.MethodDelete, service)
}

// change records a service write on the agent's own node.
func (b backend) change(method, service string) (bool, error) {
	c := b.c
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, Write{Node: b.self, Method: method, Service: service})
	for i := range c.nodes {
		n := &c.nodes[i]
		if n.Name != b.self {
			continue
		}
		had := slices.Contains(n.Services, service)
		switch {
		case method == http.MethodPut && !had:
			n.Services = append(slices.Clone(n.Services), service)
		case method == http.MethodDelete && had:
			n.Services = slices.DeleteFunc(slices.Clone(n.Services), func(s string) bool { return s == service })
		default:
			return false, nil
		}
		n.RecordVersion++
		return true, nil
	}
	return false, fmt.Errorf("fakeagent: no node %s", b.self)
}

func (b backend) Subscribe() (<-chan apitypes.Event, func()) {
	ch := make(chan apitypes.Event, 64)
	b.c.mu.Lock()
	b.c.subs[ch] = struct{}{}
	b.c.mu.Unlock()
	return ch, func() {
		b.c.mu.Lock()
		delete(b.c.subs, ch)
		b.c.mu.Unlock()
	}
}

func (b backend) GossipStats() api.GossipStats { return api.GossipStats{} }

func (b backend) Desired() []apitypes.DesiredService { return b.c.Desired() }

func (b backend) DesiredFor(service string) (apitypes.DesiredService, bool) {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	d, ok := b.c.desired[service]
	return d, ok
}

func (b backend) ChangeDesired(_ context.Context, service string, ch apitypes.DesiredChange) (apitypes.DesiredService, error) {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	return b.c.changeDesiredLocked(b.self, service, ch), nil
}

func (b backend) KeyConflicts() []apitypes.KeyConflict { return nil }

func (b backend) Rekey(context.Context, string) (apitypes.KeyConflict, error) {
	return apitypes.KeyConflict{}, errors.New("fakeagent: no key conflicts")
}

func (b backend) ForceLeave(context.Context, string) (apitypes.Node, error) {
	return apitypes.Node{}, errors.New("fakeagent: force-leave is not simulated")
}

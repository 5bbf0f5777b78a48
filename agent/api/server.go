package api

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxBodyBytes bounds a request body when Options.MaxBodyBytes is 0.
const DefaultMaxBodyBytes = 64 << 10

// Defaults for the event stream.
const (
	// defaultKeepalive is how often an idle event stream gets a ":keepalive"
	// comment, so proxies and NAT tables do not drop it and dead clients are
	// noticed by a failed write.
	defaultKeepalive = 15 * time.Second
	// streamWriteTimeout bounds one write to an event stream so a client
	// that stops reading cannot pin the handler.
	streamWriteTimeout = 10 * time.Second
)

// Options configure a Server.
type Options struct {
	// Token, when not empty, is required as "Authorization: Bearer <token>"
	// on every write (PUT and DELETE). SetToken changes it later.
	Token string
	// PlainGossip says the agent gossips without an encryption key, so
	// /healthz and the page warn that anyone on the LAN can join.
	PlainGossip bool
	// Version is the agent version reported on /metrics.
	Version string
	// Logger receives request and error logs; nil discards them.
	Logger *slog.Logger
	// MaxBodyBytes bounds request bodies; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Limits bound time, headers, connections and event streams; zero
	// fields take DefaultLimits' values.
	Limits Limits
}

// Server is the agent's HTTP interface over a Backend. Create it with
// NewServer, serve HTTPServer on LimitListener, and call Shutdown before
// http.Server.Shutdown so open event streams end.
type Server struct {
	b Backend
	// token is the API token, nil or empty when writes need none; SetToken
	// swaps it while requests run.
	token       atomic.Pointer[[]byte]
	plainGossip bool
	version     string
	log         *slog.Logger
	maxBody     int64
	mux         *http.ServeMux

	keepalive  time.Duration
	limits     Limits
	conns      connCounts
	hub        *eventHub
	shutdownMu sync.Mutex
	shutdown   bool
	shutdownCh chan struct{}
}

// NewServer returns a Server answering from b. It starts nothing.
func NewServer(b Backend, o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	s := &Server{
		b:           b,
		plainGossip: o.PlainGossip,
		version:     o.Version,
		log:         o.Logger,
		maxBody:     o.MaxBodyBytes,
		mux:         http.NewServeMux(),
		keepalive:   defaultKeepalive,
		limits:      o.Limits.withDefaults(),
		conns:       connCounts{byClient: make(map[string]int)},
		shutdownCh:  make(chan struct{}),
	}
	s.hub = newEventHub(s)
	s.SetToken(o.Token)
	s.routes()
	return s
}

// SetToken replaces the token writes need; "" lets anyone write. Requests
// already past the check finish; the next ones see the new token. Safe to
// call while the server runs.
func (s *Server) SetToken(token string) {
	b := []byte(token)
	s.token.Store(&b)
}

// Handler returns the root handler serving every route.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Shutdown ends every open event stream and refuses new ones. Call it before
// http.Server.Shutdown, which otherwise waits for streams that never end. It
// is safe to call more than once.
func (s *Server) Shutdown() {
	s.shutdownMu.Lock()
	defer s.shutdownMu.Unlock()
	if s.shutdown {
		return
	}
	s.shutdown = true
	close(s.shutdownCh)
}

// errorStyle says which error body a route answers with.
type errorStyle int

const (
	styleV1   errorStyle = iota // {"error": "..."}
	styleSeed                   // {"err": "..."}, as the original project
)

// route is one path with a handler per method. Dispatching methods here
// rather than in the mux lets 405 answers be JSON with an Allow header.
type route struct {
	style   errorStyle
	methods map[string]http.HandlerFunc
}

func (s *Server) routes() {
	s.handle("/meta-data/add-service/{service...}", styleSeed, "PUT", s.seedAddService)
	s.handle("/meta-data/remove-service/{service...}", styleSeed, "PUT", s.seedRemoveService)
	s.handle("/nodes/alive", styleSeed, "GET", s.seedAlive)
	s.handle("/nodes/monitoring", styleSeed, "GET", s.seedMonitoring)
	s.handle("/nodes/workingService/{service...}", styleSeed, "GET", s.seedWorkingService)

	s.handle("/v1/nodes", styleV1, "GET", s.getNodes)
	s.handle("/v1/nodes/{name}", styleV1, "GET", s.getNode)
	s.handle("/v1/self", styleV1, "GET", s.getSelf)
	s.handle("/v1/services/{service...}", styleV1,
		"GET", s.getServiceNodes, "PUT", s.putService, "DELETE", s.deleteService)
	s.handle("/v1/desired", styleV1, "GET", s.getDesired)
	s.handle("/v1/desired/{service...}", styleV1, "GET", s.getDesiredFor, "PUT", s.putDesired)
	s.handle("/v1/events", styleV1, "GET", s.events)
	s.handle("/v1/conflicts", styleV1, "GET", s.getConflicts)
	s.handle("/v1/nodes/{name}/rekey", styleV1, "POST", s.postRekey)
	s.handle("/healthz", styleV1, "GET", s.healthz)
	s.handle("/metrics", styleV1, "GET", s.metrics)

	s.handle("/{$}", styleV1, "GET", s.page)
	s.handle("/assets/{file}", styleV1, "GET", s.asset)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, styleV1, http.StatusNotFound,
			fmt.Sprintf("no such path %q: the API is under /v1 (nodes, self, services, desired, events, conflicts), plus /healthz, /metrics and the page at /", r.URL.Path))
	})
}

// handle registers pattern with method/handler pairs. Handlers registered
// for GET also answer HEAD, except the event stream.
func (s *Server) handle(pattern string, style errorStyle, pairs ...any) {
	rt := route{style: style, methods: make(map[string]http.HandlerFunc)}
	for i := 0; i < len(pairs); i += 2 {
		rt.methods[pairs[i].(string)] = pairs[i+1].(func(http.ResponseWriter, *http.Request))
	}
	if h, ok := rt.methods[http.MethodGet]; ok && pattern != "/v1/events" {
		rt.methods[http.MethodHead] = h
	}
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		h, ok := rt.methods[r.Method]
		if !ok {
			allowed := make([]string, 0, len(rt.methods))
			for m := range rt.methods {
				allowed = append(allowed, m)
			}
			slices.Sort(allowed)
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			s.writeError(w, rt.style, http.StatusMethodNotAllowed,
				fmt.Sprintf("method %s not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allowed, " or ")))
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead { // every write needs the token
			if !s.authorize(w, r, rt.style) || !s.readBody(w, r, rt.style) {
				return
			}
		}
		h(w, r)
	})
}

// serveHTTP sets the headers every answer carries, bounds the body, rejects
// paths with dot segments (so "/meta-data/add-service/../etc" is an error,
// not a redirect to another endpoint) and routes.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	h := rec.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	r.Body = http.MaxBytesReader(rec, r.Body, s.maxBody)

	if hasDotSegment(r.URL.Path) {
		style := styleV1
		if strings.HasPrefix(r.URL.Path, "/meta-data/") || strings.HasPrefix(r.URL.Path, "/nodes/") {
			style = styleSeed
		}
		s.writeError(rec, style, http.StatusBadRequest,
			fmt.Sprintf("invalid path %q: '.' and '..' segments are not allowed (service names cannot contain '/')", r.URL.Path))
	} else {
		s.mux.ServeHTTP(rec, r)
	}
	s.log.Debug("http request", "method", r.Method, "path", r.URL.Path, "status", rec.status,
		"remote", r.RemoteAddr, "duration", time.Since(start))
}

func hasDotSegment(p string) bool {
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// authorize checks the bearer token of a write. It answers 401 and returns
// false when a token is configured and the request does not carry it.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, style errorStyle) bool {
	token := *s.token.Load()
	if len(token) == 0 {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if ok && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), token) == 1 {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="rpi-cluster"`)
	msg := "missing API token: send \"Authorization: Bearer <token>\" (rpi tools read --token, RPI_TOKEN or the workstation config)"
	if ok {
		msg = "wrong API token: check --token, RPI_TOKEN or the workstation config against the agent's api_token"
	}
	s.log.Warn("rejected unauthorized write", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
	s.writeError(w, style, http.StatusUnauthorized, msg)
	return false
}

// readBody consumes a write's body, which the API does not use, so that an
// oversized one is refused with 413 before anything changes.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, style errorStyle) bool {
	if r.ContentLength > s.maxBody {
		s.writeError(w, style, http.StatusRequestEntityTooLarge,
			fmt.Sprintf("request body of %d bytes is too large: at most %d bytes allowed", r.ContentLength, s.maxBody))
		return false
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.writeError(w, style, http.StatusRequestEntityTooLarge,
				fmt.Sprintf("request body is too large: at most %d bytes allowed", s.maxBody))
			return false
		}
		s.writeError(w, style, http.StatusBadRequest, fmt.Sprintf("read request body: %v", err))
		return false
	}
	// The handler reads the (bounded) body again from memory.
	r.Body = io.NopCloser(bytes.NewReader(body))
	return true
}

// writeJSON answers v as JSON with status code.
func (s *Server) writeJSON(w http.ResponseWriter, code int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		s.log.Error("encode response", "err", err)
		code = http.StatusInternalServerError
		data = []byte(`{"error":"encode response failed"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(append(data, '\n'))
}

// writeError answers msg in the route family's error shape.
func (s *Server) writeError(w http.ResponseWriter, style errorStyle, code int, msg string) {
	if style == styleSeed {
		s.writeJSON(w, code, apitypes.SeedError{Err: msg})
		return
	}
	s.writeJSON(w, code, apitypes.Error{Error: msg})
}

// statusRecorder remembers the status code for the request log. Unwrap lets
// http.ResponseController reach the underlying writer's Flush and deadlines.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(p)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// cleanNode makes a node safe to encode and stable to parse: nil lists
// become empty ones (so clients see [] rather than null) and non-finite
// floats, which JSON cannot carry, become finite (+Inf phi, "certainly
// failed", is sent as the largest float).
func cleanNode(n apitypes.Node) apitypes.Node {
	if n.Services == nil {
		n.Services = []string{}
	}
	if n.SSHHostKeys == nil {
		n.SSHHostKeys = []string{}
	}
	n.Phi = finite(n.Phi)
	n.PhiThreshold = finite(n.PhiThreshold)
	m := &n.Monitoring
	m.CPUPercent = finite(m.CPUPercent)
	m.Load1, m.Load5, m.Load15 = finite(m.Load1), finite(m.Load5), finite(m.Load15)
	m.DiskUsedPercent = finite(m.DiskUsedPercent)
	if m.TempC != nil {
		t := finite(*m.TempC)
		m.TempC = &t
	}
	return n
}

func finite(f float64) float64 {
	switch {
	case math.IsNaN(f):
		return 0
	case math.IsInf(f, 1):
		return math.MaxFloat64
	case math.IsInf(f, -1):
		return -math.MaxFloat64
	}
	return f
}

// nodes returns every member, cleaned, with Self set on the answering node.
func (s *Server) nodes() []apitypes.Node {
	self := s.b.Self().Name
	nodes := s.b.Nodes()
	out := make([]apitypes.Node, len(nodes))
	for i, n := range nodes {
		out[i] = cleanNode(n)
		out[i].Self = n.Self || n.Name == self
	}
	return out
}

// self returns the answering node, cleaned.
func (s *Server) self() apitypes.Node {
	n := cleanNode(s.b.Self())
	n.Self = true
	return n
}

package api

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

const (
	// eventRing is how many recent events the server keeps for streams
	// that reconnect with Last-Event-ID; at a Pi cluster's few updates a
	// second that is a minute or more.
	eventRing = 256
	// streamBuffer is how far one stream may fall behind before it is
	// closed; its client reconnects and resumes from the ring.
	streamBuffer = 64
	// streamRetry is the reconnection delay the stream asks EventSource
	// for (the SSE "retry:" field).
	streamRetry = 3 * time.Second
	// streamRetryAfter is the Retry-After of a refused stream, in seconds.
	streamRetryAfter = "10"
)

// events streams membership and record changes as server-sent events:
//
//	id: <epoch>-<seq>
//	event: <kind>
//	data: <Event as JSON>
//
// with a ":keepalive" comment when idle. A client reconnecting with
// Last-Event-ID (the header EventSource sends, or the last_event_id query
// parameter for a new EventSource) gets the events it missed, or a "reset"
// event when they are no longer kept: it should then reload GET /v1/nodes.
// The stream ends when the client goes, falls behind, the backend closes
// the subscription, or the Server shuts down.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.shutdownCh:
		s.writeError(w, styleV1, http.StatusServiceUnavailable, "agent is shutting down")
		return
	default:
	}
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = r.URL.Query().Get("last_event_id")
	}
	client := clientOf(r.RemoteAddr)
	sub, err := s.hub.open(client, last)
	if err != nil {
		w.Header().Set("Retry-After", streamRetryAfter)
		s.writeError(w, styleV1, http.StatusServiceUnavailable, err.Error())
		return
	}
	defer s.hub.close(sub)

	rc := http.NewResponseController(w)

	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // tell reverse proxies not to buffer
	w.WriteHeader(http.StatusOK)

	// write sends one chunk and flushes it. The stream outlives the
	// server's WriteTimeout: each write moves the deadline instead, so a
	// client that stopped reading cannot hold the handler forever. (The
	// server's read deadline is already lifted while it waits for the
	// client to go.)
	write := func(p []byte) error {
		if err := rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		if _, err := w.Write(p); err != nil {
			return err
		}
		return rc.Flush()
	}
	// The retry hint tells EventSource how soon to reconnect; sending it at
	// once also gets the headers to the client before the first event.
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "retry: %d\n", streamRetry.Milliseconds())
	buf.Write(sub.first)
	for _, f := range sub.replay {
		buf.Write(f.data)
	}
	if err := write(buf.Bytes()); err != nil {
		return
	}
	sub.replay = nil

	keepalive := time.NewTicker(s.keepalive)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.shutdownCh:
			return
		case <-keepalive.C:
			if err := write([]byte(":keepalive\n\n")); err != nil {
				s.log.Debug("event stream closed", "remote", r.RemoteAddr, "err", err)
				return
			}
		case f, ok := <-sub.ch:
			if !ok {
				s.log.Debug("event stream ended: it fell behind or the cluster stopped", "remote", r.RemoteAddr)
				return
			}
			if err := write(f.data); err != nil {
				s.log.Debug("event stream closed", "remote", r.RemoteAddr, "err", err)
				return
			}
			keepalive.Reset(s.keepalive)
		}
	}
}

// frame is one event, numbered and encoded once for every stream.
type frame struct {
	seq  uint64
	data []byte
}

// subscriber is one open stream's place in the hub.
type subscriber struct {
	client string
	// ch carries live events; the hub closes it when the stream falls
	// behind by streamBuffer events or the hub stops.
	ch chan frame
	// first is what the stream starts with: the current id (so a client
	// that saw no event yet can resume) or a reset event.
	first []byte
	// replay holds the missed events of a resumed stream, oldest first.
	replay []frame
}

// eventHub holds the server's one subscription to the backend: it numbers
// events, keeps the last eventRing of them and fans them out to the open
// streams, within the stream limits. It starts with the first stream and
// stops at Shutdown.
type eventHub struct {
	s *Server

	mu       sync.Mutex
	running  bool
	epoch    string // tells this run's ids from another's
	seq      uint64 // id of the newest event
	ring     []frame
	subs     map[*subscriber]struct{}
	byClient map[string]int

	rejectedPerClient atomic.Uint64
	rejectedTotal     atomic.Uint64
}

func newEventHub(s *Server) *eventHub {
	return &eventHub{s: s, subs: make(map[*subscriber]struct{}), byClient: make(map[string]int)}
}

// open registers a stream for client resuming after id last ("" for a new
// stream), or says which limit refuses it.
func (h *eventHub) open(client, last string) (*subscriber, error) {
	l := h.s.limits
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case len(h.subs) >= l.Streams:
		h.rejectedTotal.Add(1)
		return nil, fmt.Errorf("too many open event streams (at most %d): close some or poll GET /v1/nodes instead", l.Streams)
	case h.byClient[client] >= l.StreamsPerClient:
		h.rejectedPerClient.Add(1)
		return nil, fmt.Errorf("too many event streams from %s (at most %d per client): close other pages or poll GET /v1/nodes instead", client, l.StreamsPerClient)
	}
	if !h.running {
		h.start()
	}
	sub := &subscriber{client: client, ch: make(chan frame, streamBuffer)}
	h.subs[sub] = struct{}{}
	h.byClient[client]++

	cur := h.id(h.seq)
	switch missed, ok := h.since(last); {
	case last == "":
		sub.first = []byte("id: " + cur + "\n: connected\n\n")
	case !ok:
		data, _ := json.Marshal(resetEvent{Kind: apitypes.EventReset,
			Reason: fmt.Sprintf("events after %q are no longer kept: reload GET /v1/nodes", last)})
		sub.first = fmt.Appendf(nil, "id: %s\nevent: %s\ndata: %s\n\n", cur, apitypes.EventReset, data)
	default:
		sub.first = []byte(": resumed\n\n")
		sub.replay = missed
	}
	return sub, nil
}

// resetEvent is the data of a "reset" event.
type resetEvent struct {
	Kind   string `json:"kind"`
	Reason string `json:"reason"`
}

// since returns the kept events after id last; false when last is not an
// id of this run or the events after it are no longer all kept.
func (h *eventHub) since(last string) ([]frame, bool) {
	epoch, n, ok := strings.Cut(last, "-")
	if !ok || epoch != h.epoch {
		return nil, false
	}
	seq, err := strconv.ParseUint(n, 10, 64)
	if err != nil || seq > h.seq || h.seq-seq > uint64(len(h.ring)) {
		return nil, false
	}
	missed := make([]frame, 0, h.seq-seq)
	for _, f := range h.ring {
		if f.seq > seq {
			missed = append(missed, f)
		}
	}
	return missed, true
}

func (h *eventHub) id(seq uint64) string { return h.epoch + "-" + strconv.FormatUint(seq, 10) }

// close unregisters a stream.
func (h *eventHub) close(sub *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, sub)
	if h.byClient[sub.client]--; h.byClient[sub.client] <= 0 {
		delete(h.byClient, sub.client)
	}
}

// streams returns the number of open streams.
func (h *eventHub) streams() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// start subscribes to the backend under a new epoch: events of an earlier
// subscription may have been missed in between. Called with mu held.
func (h *eventHub) start() {
	var b [4]byte
	rand.Read(b[:])
	h.epoch, h.seq, h.ring = hex.EncodeToString(b[:]), 0, nil
	h.running = true
	events, cancel := h.s.b.Subscribe()
	go h.run(events, cancel)
}

// run numbers and fans out events until the subscription closes or the
// server shuts down, then ends every stream.
func (h *eventHub) run(events <-chan apitypes.Event, cancel func()) {
	defer func() {
		cancel()
		h.mu.Lock()
		defer h.mu.Unlock()
		h.running = false
		for sub := range h.subs {
			close(sub.ch)
			delete(h.subs, sub)
		}
	}()
	for {
		select {
		case <-h.s.shutdownCh:
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			h.publish(ev)
		}
	}
}

func (h *eventHub) publish(ev apitypes.Event) {
	ev.Node = cleanNode(ev.Node)
	data, err := json.Marshal(ev)
	if err != nil {
		h.s.log.Error("encode event", "kind", ev.Kind, "node", ev.Node.Name, "err", err)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	// JSON from encoding/json never contains a raw newline.
	f := frame{seq: h.seq, data: fmt.Appendf(nil, "id: %s\nevent: %s\ndata: %s\n\n", h.id(h.seq), sseField(ev.Kind), data)}
	if len(h.ring) == eventRing {
		copy(h.ring, h.ring[1:])
		h.ring = h.ring[:eventRing-1]
	}
	h.ring = append(h.ring, f)
	for sub := range h.subs {
		select {
		case sub.ch <- f:
		default:
			// Fallen behind: end the stream (its handler sees the closed
			// channel); the client resumes from the ring.
			close(sub.ch)
			delete(h.subs, sub)
		}
	}
}

// sseField strips line breaks, which would end an SSE field early.
func sseField(v string) string {
	return string(bytes.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return -1
		}
		return r
	}, []byte(v)))
}

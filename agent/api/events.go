package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"time"
)

// events streams membership and record changes as server-sent events:
//
//	event: <kind>
//	data: <Event as JSON>
//
// with a ":keepalive" comment when idle. The stream ends when the client
// goes, the backend closes the subscription, or the Server shuts down.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.shutdownCh:
		s.writeError(w, styleV1, http.StatusServiceUnavailable, "agent is shutting down")
		return
	default:
	}
	select {
	case s.streams <- struct{}{}:
		defer func() { <-s.streams }()
	default:
		w.Header().Set("Retry-After", "30")
		s.writeError(w, styleV1, http.StatusServiceUnavailable,
			"too many open event streams: close some or poll GET /v1/nodes instead")
		return
	}

	rc := http.NewResponseController(w)
	events, cancel := s.b.Subscribe()
	defer cancel()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // tell reverse proxies not to buffer
	w.WriteHeader(http.StatusOK)

	// write sends one chunk and flushes it, bounded by a write deadline so a
	// client that stopped reading cannot hold the handler forever.
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
	if err := write([]byte("retry: 3000\n: connected\n\n")); err != nil {
		return
	}

	keepalive := time.NewTicker(s.keepalive)
	defer keepalive.Stop()
	var buf bytes.Buffer
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
		case ev, ok := <-events:
			if !ok {
				return
			}
			ev.Node = cleanNode(ev.Node)
			data, err := json.Marshal(ev)
			if err != nil {
				s.log.Error("encode event", "kind", ev.Kind, "node", ev.Node.Name, "err", err)
				continue
			}
			buf.Reset()
			buf.WriteString("event: ")
			buf.WriteString(sseField(ev.Kind))
			buf.WriteString("\ndata: ")
			buf.Write(data) // JSON from encoding/json never contains a raw newline
			buf.WriteString("\n\n")
			if err := write(buf.Bytes()); err != nil {
				s.log.Debug("event stream closed", "remote", r.RemoteAddr, "err", err)
				return
			}
			keepalive.Reset(s.keepalive)
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

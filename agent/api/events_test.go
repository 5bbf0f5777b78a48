package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// sseEvent is one parsed server-sent event, or a comment.
type sseEvent struct {
	id, kind, data, comment string
}

// readSSE parses a text/event-stream into out until the stream ends; it
// closes out and reports how the stream ended on done. Like EventSource, it
// dispatches only events with data, and each carries the last id seen
// (comments too).
func readSSE(r io.Reader, out chan<- sseEvent, done chan<- error) {
	defer close(out)
	sc := bufio.NewScanner(r)
	var ev sseEvent
	var lastID string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.data != "" {
				ev.id = lastID
				out <- ev
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
			out <- sseEvent{comment: line[1:], id: lastID}
		case strings.HasPrefix(line, "id: "):
			lastID = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			ev.kind = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		}
	}
	done <- sc.Err()
}

func openStream(t *testing.T, ctx context.Context, u string) (chan sseEvent, chan error) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", u+"/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Fatalf("GET /v1/events = %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := make(chan sseEvent, 16)
	done := make(chan error, 1)
	go readSSE(resp.Body, events, done)
	return events, done
}

// next returns the next event that is not a comment.
func next(t *testing.T, events <-chan sseEvent) sseEvent {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("event stream ended")
			}
			if ev.comment == "" {
				return ev
			}
		case <-timeout:
			t.Fatal("no event within 5s")
		}
	}
}

func TestEventsStreamAndShutdown(t *testing.T) {
	ts, f, s := testServer(t, "")
	events, done := openStream(t, context.Background(), ts.URL)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := f.subscribers(); n != 1 {
			return fmt.Errorf("%d subscribers, want 1", n)
		}
		return nil
	})

	node := testNodes()[2]
	node.Phi = 9.5
	node.Status = apitypes.StatusFailed
	when := time.Date(2025, 5, 1, 12, 0, 5, 0, time.UTC)
	f.publish(apitypes.Event{Kind: apitypes.EventFail, Node: node, Time: when})
	f.publish(apitypes.Event{Kind: apitypes.EventJoin, Node: testNodes()[3], Time: when})

	ev := next(t, events)
	if ev.kind != "fail" {
		t.Errorf("event kind %q, want fail", ev.kind)
	}
	var got apitypes.Event
	if err := json.Unmarshal([]byte(ev.data), &got); err != nil {
		t.Fatalf("event data %q: %v", ev.data, err)
	}
	if got.Kind != apitypes.EventFail || got.Node.Name != "pi-3" || got.Node.Phi != 9.5 || !got.Time.Equal(when) {
		t.Errorf("event = %+v", got)
	}
	if ev := next(t, events); ev.kind != "join" || !strings.Contains(ev.data, `"name":"pi-4"`) {
		t.Errorf("second event = %+v", ev)
	}

	s.Shutdown()
	s.Shutdown() // idempotent
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("stream ended with %v, want a clean end", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("event stream still open after Shutdown")
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := f.subscribers(); n != 0 {
			return fmt.Errorf("%d subscriptions still open after Shutdown", n)
		}
		return nil
	})
	a := call(t, "GET", ts.URL+"/v1/events", "", nil)
	a.expect(t, 503, "")
	errorBody(t, a, "error")
}

// An http.Server with an open stream shuts down promptly once the API's
// Shutdown has run first, as the agent does.
func TestEventsDoNotBlockHTTPShutdown(t *testing.T) {
	f := newFakeBackend("pi-1", testNodes()...)
	s := NewServer(f, Options{})
	ts := httptest.NewServer(s.Handler())
	_, done := openStream(t, context.Background(), ts.URL)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if f.subscribers() != 1 {
			return errors.New("stream not subscribed yet")
		}
		return nil
	})
	s.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.Config.Shutdown(ctx); err != nil {
		t.Fatalf("http.Server.Shutdown: %v", err)
	}
	<-done
	ts.Close()
}

func TestEventsKeepaliveAndClientGone(t *testing.T) {
	ts, _, s := testServerWith(t, "", func(s *Server) { s.keepalive = 20 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	events, _ := openStream(t, ctx, ts.URL)

	testutil.WaitFor(t, 5*time.Second, func() error {
		select {
		case ev := <-events:
			if ev.comment == "keepalive" {
				return nil
			}
			return fmt.Errorf("got %+v, still waiting for a keepalive", ev)
		default:
			return errors.New("no keepalive yet")
		}
	})

	// The client goes away: the server notices and ends the stream.
	cancel()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := s.hub.streams(); n != 0 {
			return fmt.Errorf("%d streams still open after the client left", n)
		}
		return nil
	})
}

func TestEventsStreamLimit(t *testing.T) {
	ts, _, s := testServerWith(t, "", func(s *Server) { s.limits.Streams = 2 })
	openStream(t, context.Background(), ts.URL)
	openStream(t, context.Background(), ts.URL)
	if n := s.hub.streams(); n != 2 {
		t.Fatalf("%d streams open, want 2", n)
	}
	a := call(t, "GET", ts.URL+"/v1/events", "", nil)
	a.expect(t, 503, "")
	if a.header.Get("Retry-After") == "" {
		t.Error("no Retry-After on a refused stream")
	}
}

// openStreamWith opens /v1/events with a Last-Event-ID header (when not "")
// and query (when not "").
func openStreamWith(t *testing.T, u, lastID, query string) chan sseEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", u+"/v1/events"+query, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 {
		t.Fatalf("GET /v1/events = %d", resp.StatusCode)
	}
	events := make(chan sseEvent, 64)
	go readSSE(resp.Body, events, make(chan error, 1))
	return events
}

// comment returns the next comment, skipping events.
func comment(t *testing.T, events <-chan sseEvent) sseEvent {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("event stream ended")
			}
			if ev.comment != "" {
				return ev
			}
		case <-timeout:
			t.Fatal("no comment within 5s")
		}
	}
}

// Every event has an id; a client reconnecting with the last id it saw (as
// EventSource does, or in the query as the page does for a new
// EventSource) gets what it missed, then live events.
func TestEventsResumeFromLastEventID(t *testing.T) {
	ts, f, _ := testServerWith(t, "", func(s *Server) { s.limits.StreamsPerClient = 10 })
	events := openStreamWith(t, ts.URL, "", "")
	hello := comment(t, events)
	if hello.comment != " connected" || hello.id == "" {
		t.Fatalf("stream opened with %+v, want the current id before the first event", hello)
	}
	nodes := testNodes()
	for i := range 3 {
		f.publish(apitypes.Event{Kind: apitypes.EventUpdate, Node: nodes[i], Time: time.Now()})
	}
	var seen []sseEvent
	for range 3 {
		seen = append(seen, next(t, events))
	}
	ids := map[string]bool{hello.id: true}
	for _, ev := range seen {
		if ev.id == "" || ids[ev.id] {
			t.Fatalf("events %+v: every event needs an id of its own", seen)
		}
		ids[ev.id] = true
	}

	// Resume after the first event: the second and third come again, then
	// a new one.
	for _, how := range []struct{ header, query string }{
		{seen[0].id, ""},
		{"", "?last_event_id=" + url.QueryEscape(seen[0].id)},
		{seen[0].id, "?last_event_id=" + url.QueryEscape(hello.id)}, // the header wins
	} {
		resumed := openStreamWith(t, ts.URL, how.header, how.query)
		for _, want := range seen[1:] {
			if got := next(t, resumed); got != want {
				t.Errorf("resumed (%+v): got %+v, want %+v", how, got, want)
			}
		}
	}
	// A client that saw no event yet resumes from the hello's id.
	resumed := openStreamWith(t, ts.URL, hello.id, "")
	for _, want := range seen {
		if got := next(t, resumed); got != want {
			t.Errorf("resumed from the hello: got %+v, want %+v", got, want)
		}
	}
	f.publish(apitypes.Event{Kind: apitypes.EventJoin, Node: nodes[3], Time: time.Now()})
	if got := next(t, resumed); got.kind != "join" || got.id == seen[2].id {
		t.Errorf("after the replay: %+v, want the live join", got)
	}
}

// A client whose missed events are no longer kept, or whose id is from
// another run of the agent, gets a reset event and goes on live.
func TestEventsResetWhenMissedEventsAreGone(t *testing.T) {
	ts, f, s := testServerWith(t, "", func(s *Server) { s.limits.StreamsPerClient = 10 })
	events := openStreamWith(t, ts.URL, "", "")
	first := comment(t, events).id
	for range eventRing + 1 {
		s.hub.publish(apitypes.Event{Kind: apitypes.EventUpdate, Node: testNodes()[0], Time: time.Now()})
	}
	epoch, _, _ := strings.Cut(first, "-")
	for i, last := range []string{first, "0123abcd-1", epoch + "-999999", "garbage"} {
		resumed := openStreamWith(t, ts.URL, last, "")
		ev := next(t, resumed)
		if ev.kind != apitypes.EventReset || !strings.Contains(ev.data, "reload GET /v1/nodes") || ev.id != epoch+"-"+fmt.Sprint(eventRing+1+i) {
			t.Errorf("resuming after %q: %+v, want a reset carrying the current id", last, ev)
		}
		f.publish(apitypes.Event{Kind: apitypes.EventFail, Node: testNodes()[1], Time: time.Now()})
		if ev := next(t, resumed); ev.kind != "fail" {
			t.Errorf("after the reset: %+v, want the live event", ev)
		}
	}
}

// A stream that falls behind is ended rather than allowed to hold events
// without bound; its client resumes from the ring without a gap.
func TestEventsSlowStreamEndsAndResumes(t *testing.T) {
	f := newFakeBackend("pi-1", testNodes()...)
	s := NewServer(f, Options{})
	t.Cleanup(s.Shutdown)
	sub, err := s.hub.open("10.0.0.9", "")
	if err != nil {
		t.Fatal(err)
	}
	first := strings.TrimPrefix(strings.SplitN(string(sub.first), "\n", 2)[0], "id: ")
	for range streamBuffer + 1 {
		s.hub.publish(apitypes.Event{Kind: apitypes.EventUpdate, Node: testNodes()[0]})
	}
	n := 0
	for range sub.ch {
		n++
	}
	if n != streamBuffer {
		t.Errorf("the slow stream got %d events before it ended, want %d", n, streamBuffer)
	}
	s.hub.close(sub)
	again, err := s.hub.open("10.0.0.9", first)
	if err != nil {
		t.Fatal(err)
	}
	defer s.hub.close(again)
	if len(again.replay) != streamBuffer+1 {
		t.Errorf("resumed with %d events, want all %d", len(again.replay), streamBuffer+1)
	}
}

// The stream outlives the server's read and write timeouts, which bound
// every other request.
func TestEventsOutliveServerTimeouts(t *testing.T) {
	const timeout = 100 * time.Millisecond
	base, f, _ := liveServer(t, Limits{ReadHeaderTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout}, func(s *Server) {
		s.keepalive = 20 * time.Millisecond
	})
	events := openStreamWith(t, base, "", "")
	// 30 comments, keepalives 20 ms apart: the stream has lived 5 timeouts.
	start := time.Now()
	for range 30 {
		comment(t, events)
	}
	if el := time.Since(start); el < 5*timeout {
		t.Fatalf("30 comments in %v", el)
	}
	f.publish(apitypes.Event{Kind: apitypes.EventJoin, Node: testNodes()[1], Time: time.Now()})
	if ev := next(t, events); ev.kind != "join" {
		t.Errorf("after the timeouts: %+v", ev)
	}
}

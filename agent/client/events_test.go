package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit/fakeagent"
)

// follower runs Client.Follow in the background and records what it gets.
type follower struct {
	mu     sync.Mutex
	events []string // kind and node of each event, "join pi-2"
	done   chan error
}

func follow(t *testing.T, c *client.Client) *follower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{done: make(chan error, 1)}
	opened := make(chan struct{})
	go func() {
		f.done <- c.Follow(ctx, func() { close(opened) }, func(ev apitypes.Event) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.events = append(f.events, ev.Kind+" "+ev.Node.Name)
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-f.done:
			if err != nil {
				t.Errorf("Follow returned %v after its context was cancelled, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Follow still running 5s after its context was cancelled")
		}
	})
	select {
	case <-opened:
	case err := <-f.done:
		t.Fatalf("Follow returned before the stream opened: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("event stream not opened within 5s")
	}
	return f
}

// waitEvents waits until the follower got exactly want, in order, and
// fails early if Follow returned.
func (f *follower) waitEvents(t *testing.T, want ...string) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, func() error {
		select {
		case err := <-f.done:
			f.done <- err
			t.Fatalf("Follow returned %v; events so far %q, want %q", err, f.got(), want)
		default:
		}
		if got := f.got(); !slices.Equal(got, want) {
			return fmt.Errorf("events %q, want %q", got, want)
		}
		return nil
	})
}

func (f *follower) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.events)
}

func TestFollowResumesAfterADrop(t *testing.T) {
	c := fakeagent.Start(t, []apitypes.Node{{Name: "pi-1"}, {Name: "pi-2"}, {Name: "pi-3"}})
	f := follow(t, &client.Client{BaseURL: c.URL("pi-1")})

	c.Emit(apitypes.Event{Kind: apitypes.EventJoin, Node: apitypes.Node{Name: "pi-2"}})
	f.waitEvents(t, "join pi-2")

	// The connection drops; while the client is away the agent publishes
	// two more events, which no stream is open to carry.
	resume := c.Interrupt("pi-1")
	c.Emit(apitypes.Event{Kind: apitypes.EventFail, Node: apitypes.Node{Name: "pi-3"}})
	c.Emit(apitypes.Event{Kind: apitypes.EventJoin, Node: apitypes.Node{Name: "pi-3"}})
	testutil.WaitFor(t, 5*time.Second, func() error {
		if ids := c.ResumeIDs("pi-1"); len(ids) < 2 {
			return fmt.Errorf("the client has not reconnected (requests with Last-Event-ID %q)", ids)
		}
		return nil
	})
	resume()
	f.waitEvents(t, "join pi-2", "fail pi-3", "join pi-3")

	ids := c.ResumeIDs("pi-1")
	if len(ids) != 2 || ids[0] != "" || ids[1] == "" {
		t.Errorf("Last-Event-ID of the event stream requests = %q, want none on the first and the last event's id on the second", ids)
	}

	// Resumed streams carry on as before.
	c.Emit(apitypes.Event{Kind: apitypes.EventLeave, Node: apitypes.Node{Name: "pi-2"}})
	f.waitEvents(t, "join pi-2", "fail pi-3", "join pi-3", "leave pi-2")
}

// startFollow runs Follow in the background until it returns, and waits
// for its stream to open.
func startFollow(t *testing.T, c *client.Client, fn func(apitypes.Event) error) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	opened := make(chan struct{})
	go func() { done <- c.Follow(context.Background(), func() { close(opened) }, fn) }()
	select {
	case <-opened:
	case err := <-done:
		t.Fatalf("Follow returned before the stream opened: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("event stream not opened within 5s")
	}
	return done
}

func TestFollowReturnsWhenTheAgentIsGone(t *testing.T) {
	c := fakeagent.Start(t, []apitypes.Node{{Name: "pi-1"}})
	done := startFollow(t, &client.Client{BaseURL: c.URL("pi-1")}, func(apitypes.Event) error { return nil })
	c.Stop("pi-1")
	select {
	case err := <-done:
		var unreachable *client.UnreachableError
		var status *client.StatusError
		if !errors.As(err, &unreachable) && !errors.As(err, &status) {
			t.Errorf("Follow returned %v, want the agent unreachable or refusing the stream", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Follow still running 5s after its agent stopped")
	}
}

func TestFollowReturnsTheCallbacksError(t *testing.T) {
	c := fakeagent.Start(t, []apitypes.Node{{Name: "pi-1"}})
	stop := errors.New("enough")
	done := startFollow(t, &client.Client{BaseURL: c.URL("pi-1")}, func(apitypes.Event) error { return stop })
	c.Emit(apitypes.Event{Kind: apitypes.EventJoin, Node: apitypes.Node{Name: "pi-1"}})
	select {
	case err := <-done:
		if !errors.Is(err, stop) {
			t.Errorf("Follow returned %v, want the callback's error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Follow did not return the callback's error within 5s")
	}
}

// A stream that keeps breaking at once (here a proxy that cuts every
// stream after its first block) is resumed a bounded number of times, then
// left to the caller.
func TestFollowGivesUpOnAStreamThatKeepsBreaking(t *testing.T) {
	var mu sync.Mutex
	var resumeIDs []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		resumeIDs = append(resumeIDs, r.Header.Get("Last-Event-ID"))
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "retry: 3000\nid: run-7\n: connected\n\n")
	}))
	defer srv.Close()
	done := startFollow(t, &client.Client{BaseURL: srv.URL}, func(apitypes.Event) error { return nil })
	select {
	case err := <-done:
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("Follow returned %v, want the broken stream's unexpected EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Follow still resuming after 5s")
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"", "run-7", "run-7"}; !slices.Equal(resumeIDs, want) {
		t.Errorf("Last-Event-ID of the requests = %q, want %q", resumeIDs, want)
	}
}

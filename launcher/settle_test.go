package launcher

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
)

// laggingAgent answers /v1/services/web with pi-2 only from its lag-th
// request on, as an agent does that learns a record by gossip.
func laggingAgent(t *testing.T, lag int64) (*client.Client, *atomic.Int64) {
	var calls atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nodes := []apitypes.Node{}
		if calls.Add(1) >= lag {
			nodes = append(nodes, apitypes.Node{Name: "pi-2", Status: apitypes.StatusAlive, Services: []string{"web"}})
		}
		json.NewEncoder(w).Encode(nodes)
	}))
	t.Cleanup(ts.Close)
	c, _ := client.New(ts.URL, "")
	return c, &calls
}

func TestAwaitViewWaitsForGossip(t *testing.T) {
	c, calls := laggingAgent(t, 4)
	var out bytes.Buffer
	l := &Launcher{Client: c, Out: &out, SettleTimeout: 10 * time.Second}
	l.awaitView(context.Background(), "web", []string{"pi-2"}, true)
	if n := calls.Load(); n != 4 {
		t.Fatalf("asked the agent %d times, want 4 (until it saw pi-2)", n)
	}
	if out.Len() != 0 {
		t.Fatalf("unexpected warning: %s", out.String())
	}
}

func TestAwaitViewWarnsAtDeadline(t *testing.T) {
	c, _ := laggingAgent(t, 1<<30)
	var out bytes.Buffer
	l := &Launcher{Client: c, Out: &out, SettleTimeout: 300 * time.Millisecond}
	l.awaitView(context.Background(), "web", []string{"pi-2"}, true)
	if !strings.Contains(out.String(), "does not yet see web running on pi-2") {
		t.Fatalf("want a warning naming the missing node, got %q", out.String())
	}
}

func TestAwaitViewGivesUpOnUnreachableAgent(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	url := ts.URL
	ts.Close() // nothing listens there any more
	c, _ := client.New(url, "")
	var out bytes.Buffer
	l := &Launcher{Client: c, Out: &out, SettleTimeout: time.Hour}
	done := make(chan struct{})
	go func() {
		l.awaitView(context.Background(), "web", []string{"pi-2"}, true)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("awaitView kept waiting on an agent that cannot be reached")
	}
	if !strings.Contains(out.String(), "cannot confirm that "+url+" sees web running on pi-2") {
		t.Fatalf("want a warning naming the agent and the node, got %q", out.String())
	}
}

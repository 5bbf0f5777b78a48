package api

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/internal/browser"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// A refused stream (503) makes EventSource give up for good; the page opens
// a new one with back-off, and once a slot frees it is live again and
// follows events.
func TestStatusPageReconnectsAfterRefusedStream(t *testing.T) {
	needBrowser(t)
	ts, f, s := testServerWith(t, "", func(s *Server) { s.limits.StreamsPerClient = 1 }, testNodes()[:3]...)
	// This test holds the only stream 127.0.0.1 may open.
	hold, release := context.WithCancel(context.Background())
	defer release()
	openStream(t, hold, ts.URL)

	ctx, p := browser.OpenPage(t, ts.URL+"/", browser.Options{})
	if err := p.WaitFor(ctx, `document.getElementById('live').dataset.state === 'reconnecting' &&
		document.getElementById('updated').textContent.startsWith('updated')`); err != nil {
		t.Fatalf("page with its stream refused: %v", err)
	}
	testutil.WaitFor(t, 20*time.Second, func() error {
		if n := s.hub.rejectedPerClient.Load(); n < 3 {
			return fmt.Errorf("the page's stream was refused %d times: it should keep trying", n)
		}
		return nil
	})

	release()
	if err := p.WaitFor(ctx, pageReady); err != nil {
		t.Fatalf("page not live once a stream slot freed: %v", err)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if s.hub.streams() != 1 {
			return errors.New("the page's stream is not open")
		}
		return nil
	})
	f.update("pi-3", func(n *apitypes.Node) { n.Status, n.Phi = apitypes.StatusFailed, 11.5 })
	f.publish(apitypes.Event{Kind: apitypes.EventFail, Node: f.Nodes()[2], Time: time.Now()})
	if err := p.WaitFor(ctx, `[...document.querySelectorAll('#rows tr')].some(tr =>
		tr.querySelector('.node-name').textContent === 'pi-3' &&
		tr.querySelector('.badge').textContent === 'failed')`); err != nil {
		t.Fatal(err)
	}
	if ex := p.Exceptions(); len(ex) > 0 {
		t.Errorf("page threw: %q", ex)
	}
}

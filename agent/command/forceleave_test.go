package command

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

const forceLeaveToken = "fl-token"

// startForceLeaveAgent starts an in-process agent named fl-i on
// 127.0.73.i, joined to join ("" for none).
func startForceLeaveAgent(t *testing.T, i int, join string) *agent.Agent {
	return startAgent(t, fmt.Sprintf("fl-%d", i), fmt.Sprintf("127.0.73.%d", i), t.TempDir(), forceLeaveToken, join)
}

// force-leave through the real API and the CLI: refused without the token
// (with a hint saying how to give it), refused for a live node, and with
// the token a killed node is gone from both agents.
func TestForceLeaveCommand(t *testing.T) {
	a := startForceLeaveAgent(t, 1, "")
	b := startForceLeaveAgent(t, 2, gossipAddr(a))
	c := startForceLeaveAgent(t, 3, gossipAddr(a))
	url := "http://" + a.HTTPAddr()
	ctx := context.Background()
	status := func(ag *agent.Agent, name string) string {
		m, ok := ag.Cluster().Member(name)
		if !ok {
			return "unlisted"
		}
		return m.Status
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		for _, ag := range []*agent.Agent{a, b} {
			if s := status(ag, "fl-3"); s != cluster.StatusAlive {
				return fmt.Errorf("%s sees fl-3 %s", ag.Name(), s)
			}
		}
		return nil
	})
	c.Shutdown()
	testutil.WaitFor(t, 10*time.Second, func() error {
		for _, ag := range []*agent.Agent{a, b} {
			if s := status(ag, "fl-3"); s != cluster.StatusFailed {
				return fmt.Errorf("%s sees fl-3 %s", ag.Name(), s)
			}
		}
		return nil
	})

	// The API: a write, so 401 without the token.
	var se *client.StatusError
	anon, _ := client.New(url, "")
	if _, err := anon.ForceLeave(ctx, "fl-3"); !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
		t.Fatalf("force-leave without the token: %v, want 401", err)
	}
	// The CLI turns that into a hint.
	out, err := runWrite(t, "force-leave", url, "", "fl-3")
	if err == nil || !strings.Contains(err.Error(), "needs the API token") || !strings.Contains(err.Error(), "RPI_TOKEN") {
		t.Fatalf("force-leave without the token: %q, %v; want a refusal naming --token and RPI_TOKEN", out, err)
	}
	// A live node is refused, and says what to do.
	if _, err := runWrite(t, "force-leave", url, forceLeaveToken, "fl-2"); err == nil || !strings.Contains(err.Error(), "stop it first") {
		t.Fatalf("force-leave of the live fl-2: %v", err)
	}
	if _, err := runWrite(t, "force-leave", url, forceLeaveToken, "fl-9"); err == nil || !strings.Contains(err.Error(), "does not list") {
		t.Fatalf("force-leave of the unknown fl-9: %v", err)
	}
	if s := status(a, "fl-3"); s != cluster.StatusFailed {
		t.Fatalf("refused force-leaves changed fl-3 to %s", s)
	}

	// fl-3 was failed first on its silence; force-leave is refused, and
	// says so, until memberlist's probes confirm it.
	testutil.WaitFor(t, 10*time.Second, func() error {
		out, err = runWrite(t, "force-leave", url, forceLeaveToken, "fl-3")
		if err != nil && strings.Contains(err.Error(), "not yet confirmed by memberlist") {
			return err
		}
		return nil
	})
	if err != nil || !strings.Contains(out, "fl-1: removed fl-3 (failed at 127.0.73.3)") {
		t.Fatalf("force-leave with the token: %q, %v", out, err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		for _, ag := range []*agent.Agent{a, b} {
			if s := status(ag, "fl-3"); s != "unlisted" {
				return fmt.Errorf("%s still lists fl-3 as %s", ag.Name(), s)
			}
		}
		return nil
	})
	authed, _ := client.New(url, forceLeaveToken)
	if _, err := authed.Node(ctx, "fl-3"); !errors.As(err, &se) || se.Code != http.StatusNotFound {
		t.Fatalf("GET /v1/nodes/fl-3 after force-leave: %v, want 404", err)
	}
}

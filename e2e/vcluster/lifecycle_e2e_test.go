//go:build e2e

package vcluster

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// TestBareLifecycle exercises the harness without an agent: the cached
// base, the import, systemd booting, the network, fixed addresses, exec, netem, partitions,
// disconnect/reconnect and cleanup by label.
func TestBareLifecycle(t *testing.T) {
	ctx := context.Background()
	root, err := RepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	p, err := Prepare(ctx, PrepareOptions{RepoRoot: root, Bare: true, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Create(ctx, Options{Image: p.Image, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Down(context.Background()); err != nil {
			t.Errorf("down: %v", err)
		}
		left, _ := c.d.ListByLabel(context.Background(), "container", LabelRun+"="+c.RunID)
		if len(left) > 0 {
			t.Errorf("containers left after down: %v", left)
		}
	})
	nodes, err := c.AddNodes(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	a, b := nodes[0], nodes[1]
	for _, n := range nodes {
		testutil.WaitFor(t, time.Minute, func() error { return c.Booted(ctx, n) })
	}
	ping := func(from, to *Node) error {
		_, err := c.Exec(ctx, from, "ping", "-c1", "-W1", to.IP.String())
		return err
	}
	testutil.WaitFor(t, 30*time.Second, func() error { return ping(a, b) })

	out, err := c.Exec(ctx, a, "ip", "-4", "-o", "addr", "show", "eth0")
	if err != nil || !strings.Contains(out, a.IP.String()+"/") {
		t.Fatalf("node 1 address: %q, %v; want %s", out, err, a.IP)
	}
	how, err := c.PacketLoss(ctx, a, 30)
	if err != nil {
		t.Fatal(err)
	}
	out, _ = c.Exec(ctx, a, "ping", "-q", "-c", "200", "-i", "0.005", "-W", "1", b.IP.String())
	loss := lossPercent(out)
	t.Logf("30%% loss with %s: ping measured %v%%", how, loss)
	if loss < 5 || loss > 70 {
		t.Fatalf("packet loss with %s: ping measured %v%%, want about 30%%:\n%s", how, loss, out)
	}
	if _, err := c.PacketLoss(ctx, a, 0); err != nil {
		t.Fatal(err)
	}
	out, _ = c.Exec(ctx, a, "ping", "-q", "-c", "50", "-i", "0.005", "-W", "1", b.IP.String())
	if loss := lossPercent(out); loss != 0 {
		t.Fatalf("packet loss after clearing: %v%%:\n%s", loss, out)
	}

	if err := c.Partition(ctx, []*Node{a}, []*Node{b}); err != nil {
		t.Fatal(err)
	}
	if ping(a, b) == nil {
		t.Fatal("ping crossed the partition")
	}
	if err := c.Heal(ctx, []*Node{a}, []*Node{b}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error { return ping(a, b) })

	if err := c.Disconnect(ctx, b); err != nil {
		t.Fatal(err)
	}
	if ping(a, b) == nil {
		t.Fatal("ping reached a disconnected node")
	}
	if err := c.Reconnect(ctx, b); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error { return ping(a, b) })

	// The stop signal (SIGRTMIN+3) makes systemd halt, well before
	// docker's stop timeout would have killed it.
	start := time.Now()
	if err := c.Stop(ctx, b); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("stop took %v: systemd did not halt on the stop signal", took)
	}
}

// lossPercent reads "N% packet loss" from ping's summary; -1 if absent.
func lossPercent(out string) float64 {
	for _, f := range strings.Split(out, ",") {
		f = strings.TrimSpace(f)
		if v, ok := strings.CutSuffix(f, "% packet loss"); ok {
			if p, err := strconv.ParseFloat(v, 64); err == nil {
				return p
			}
		}
	}
	return -1
}

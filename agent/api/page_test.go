package api

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/internal/browser"
)

// The server-side page (what a browser without JavaScript shows) tells a
// node that left from one that failed, ages their last values, and shows
// disk, uptime and whole service names.
func TestPageStatusesAndStaleValues(t *testing.T) {
	nodes := testNodes()[:3]
	now := time.Now()
	nodes[0].Monitoring.DiskUsedPercent, nodes[0].Monitoring.UptimeS = 41.6, 3*86400+4*3600+60
	nodes[0].Services = []string{"nginx_load_balancer_frontend_with_a_long_name"}
	nodes[1].Status, nodes[1].Phi, nodes[1].Monitoring.SampledAt = apitypes.StatusLeft, 30, now.Add(-12*time.Second)
	nodes[2].Status, nodes[2].Phi, nodes[2].Monitoring.SampledAt = apitypes.StatusFailed, 30, now.Add(-3*time.Minute)
	ts, _, _ := testServer(t, "", nodes...)
	body := call(t, "GET", ts.URL+"/", "", nil).body

	rows := strings.Split(body, `<tr class="node `)[1:]
	if len(rows) != 3 {
		t.Fatalf("%d rows", len(rows))
	}
	for _, c := range []struct {
		row       string
		want, not []string
	}{
		{rows[0], []string{`<td data-label="Disk" class="num disk">42 %</td>`, `<span class="uptime">up 3 d 4 h</span>`,
			`<span class="svc">nginx_load_balancer_frontend_with_a_long_name</span>`}, []string{`class="age"`}},
		{rows[1], []string{`left stale`, `<span class="phi-text">left cleanly</span>`, `<span class="age">values from 12 s ago</span>`},
			[]string{"<meter"}},
		{rows[2], []string{`failed stale`, `<meter`, `<span class="phi-text">30.00 / 8</span>`, `<span class="age">values from 3 min ago</span>`}, nil},
	} {
		for _, w := range c.want {
			if !strings.Contains(c.row, w) {
				t.Errorf("row lacks %s:\n%s", w, c.row)
			}
		}
		for _, n := range c.not {
			if strings.Contains(c.row, n) {
				t.Errorf("row has %s:\n%s", n, c.row)
			}
		}
	}
}

func TestFormatAgeAndUptime(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second: "0 s ago", 12 * time.Second: "12 s ago", 89 * time.Second: "89 s ago",
		3 * time.Minute: "3 min ago", 2 * time.Hour: "2 h ago", 72 * time.Hour: "3 d ago",
	} {
		if got := formatAge(d); got != want {
			t.Errorf("formatAge(%v) = %q, want %q", d, got, want)
		}
	}
	for s, want := range map[uint64]string{0: "", 59: "0 min", 7 * 60: "7 min", 2*3600 + 5*60: "2 h 5 min", 3*86400 + 4*3600: "3 d 4 h"} {
		if got := formatUptime(s); got != want {
			t.Errorf("formatUptime(%d) = %q, want %q", s, got, want)
		}
	}
}

// The page asks for /v1/history at most once per history slot, however
// many update events arrive: each answer is a few kB per node.
func TestPageFetchesHistoryOncePerSlot(t *testing.T) {
	needBrowser(t)
	f := newFakeBackend("pi-1", testNodes()[:3]...)
	s := NewServer(f, Options{Version: "v1.2.3"}) // 5 s slots
	var historyGets atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/history" {
			historyGets.Add(1)
		}
		s.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		s.Shutdown()
		ts.Close()
	})
	ctx, p := browser.OpenPage(t, ts.URL+"/", browser.Options{})
	if err := p.WaitFor(ctx, pageReady); err != nil {
		t.Fatal(err)
	}
	// Two seconds of updates, one every 100 ms: without the limit the page
	// would fetch after each coalesced batch, about eight times.
	var updates int
	for start := time.Now(); time.Since(start) < 2*time.Second; updates++ {
		f.update("pi-2", func(n *apitypes.Node) { n.Monitoring.CPUPercent = float64(updates) })
		f.publish(apitypes.Event{Kind: apitypes.EventUpdate, Node: f.Nodes()[1], Time: time.Now()})
		if err := p.WaitFor(ctx, fmt.Sprintf(`[...document.querySelectorAll('#rows tr')].some(tr =>
			tr.querySelector('.node-name').textContent === 'pi-2' && tr.querySelector('.cpu .val').textContent === '%d %%')`, updates)); err != nil {
			t.Fatal(err)
		}
	}
	if n := historyGets.Load(); n != 1 {
		t.Errorf("%d updates drawn with %d fetches of /v1/history; want 1 (one per 5 s slot)", updates, n)
	}
}

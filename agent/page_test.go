package agent

import (
	"context"
	"encoding/base64"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/api"
	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
	"github.com/rpi-cluster/rpi-cluster/internal/atomicfile"
	"github.com/rpi-cluster/rpi-cluster/internal/browser"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// fakeSysfs is a sysfs with a Pi's model and one thermal zone, whose
// temperature the test sets.
type fakeSysfs struct{ root string }

func newFakeSysfs(t *testing.T, model string) fakeSysfs {
	t.Helper()
	root := t.TempDir()
	zone := filepath.Join(root, "class", "thermal", "thermal_zone0")
	dt := filepath.Join(root, "firmware", "devicetree", "base")
	for _, d := range []string{zone, dt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(zone, "type"), []byte("cpu-thermal\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dt, "model"), []byte(model+"\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := fakeSysfs{root}
	f.setTemp(t, 45)
	return f
}

func (f fakeSysfs) setTemp(t *testing.T, c float64) {
	t.Helper()
	milli := strconv.Itoa(int(c*1000)) + "\n"
	// Atomically: the agent reads it meanwhile.
	if err := atomicfile.WriteFile(filepath.Join(f.root, "class", "thermal", "thermal_zone0", "temp"), []byte(milli), 0o644); err != nil {
		t.Fatal(err)
	}
}

func withSysfs(f fakeSysfs) Option { return func(a *Agent) { a.sysfsRoot = f.root } }

// TestStatusPageHistory opens the page of a live five-agent cluster (three
// alive, one left, one failed) at desktop and phone widths and checks what
// people open it for: every node's charts, a left node told apart from a
// failed one, stale values aged, whole service names, disk and uptime,
// sorting and filtering, the desktop's width used and no sideways scroll on
// a phone. With RPI_PAGE_SCREENSHOTS=DIR it saves page-1280.png and
// page-390.png there (docs/ holds the committed ones).
func TestStatusPageHistory(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the browser test in -short mode")
	}
	if _, err := browser.Find(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	const longService = "nginx_load_balancer_frontend"
	models := []string{"Raspberry Pi 4 Model B Rev 1.4", "Raspberry Pi 3 Model B Plus Rev 1.3",
		"Raspberry Pi 5 Model B Rev 1.0", "Raspberry Pi Zero 2 W Rev 1.0", "Raspberry Pi 4 Model B Rev 1.5"}
	// A cluster set up as rpi-image does (key and token), so the page
	// shows no open-to-the-LAN banner.
	const token = "page-test-token"
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	var sysfs []fakeSysfs
	var agents []*Agent
	for i, model := range models {
		fs := newFakeSysfs(t, model)
		sysfs = append(sysfs, fs)
		agents = append(agents, startAgent(t, 61+i, func(c *Config) {
			c.APIToken, c.Encrypt = token, key
			if i > 0 {
				joinTo(agents[0])(c)
			}
			// 30 s in 0.5 s slots: the charts fill in seconds.
		}, withSysfs(fs), withHistory(api.NewHistory(30*time.Second, 60))))
	}
	waitAlive(t, agents, 5)
	for _, svc := range []string{longService, "prometheus_node_exporter"} {
		if code, body := request(t, "PUT", "http://"+agents[0].HTTPAddr()+"/v1/services/"+svc, token); code != 200 {
			t.Fatalf("add %s: %d %s", svc, code, body)
		}
	}
	if code, body := request(t, "PUT", "http://"+agents[1].HTTPAddr()+"/v1/services/"+longService, token); code != 200 {
		t.Fatalf("add %s: %d %s", longService, code, body)
	}

	// Let every node gossip most of a window of samples, temperatures moving.
	start := time.Now()
	testutil.WaitFor(t, 60*time.Second, func() error {
		el := time.Since(start).Seconds()
		for i, fs := range sysfs {
			fs.setTemp(t, 48+float64(i)*3+4*math.Sin(el/2+float64(i)))
		}
		h, err := getHistory(agents[0])
		if err != nil {
			return err
		}
		for _, n := range h.Nodes {
			if len(n.TimeMS) < 50 {
				return fmt.Errorf("%s: %d samples", n.Name, len(n.TimeMS))
			}
		}
		if len(h.Nodes) != 5 {
			return fmt.Errorf("%d nodes in the history", len(h.Nodes))
		}
		return nil
	})
	// node-64 leaves cleanly; node-65 dies.
	if err := agents[3].Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	agents[3].Shutdown()
	agents[4].Shutdown()
	testutil.WaitFor(t, 15*time.Second, func() error {
		st := map[string]string{}
		for _, m := range agents[0].Cluster().Members() {
			st[m.Name] = m.Status
		}
		if st["node-64"] != cluster.StatusLeft || st["node-65"] != cluster.StatusFailed {
			return fmt.Errorf("statuses %v, want node-64 left and node-65 failed", st)
		}
		return nil
	})

	url := "http://" + agents[0].HTTPAddr() + "/"
	shots := os.Getenv("RPI_PAGE_SCREENSHOTS")
	ready := `document.getElementById('live').dataset.state === 'live' &&
		document.querySelectorAll('#rows tr.node').length === 5 &&
		[...document.querySelectorAll('#rows tr.node.alive')].length === 3 &&
		[...document.querySelectorAll('#rows tr.node.alive .spark.cpu')].every(s => Number(s.dataset.points) >= 10) &&
		[...document.querySelectorAll('#rows tr.node.alive .spark.temp')].length === 3`

	t.Run("desktop", func(t *testing.T) {
		ctx, p := browser.OpenPage(t, url, browser.Options{Width: 1280, Height: 760})
		if err := p.WaitFor(ctx, ready); err != nil {
			t.Fatal(err)
		}
		checkPage(ctx, t, p, longService)

		// The table uses the width of the screen, without a sideways scroll.
		var width struct{ Table, View, Scroll, Client float64 }
		evalJSON(ctx, t, p, `({Table: document.querySelector('table.nodes').getBoundingClientRect().width,
			View: document.documentElement.clientWidth,
			Scroll: document.querySelector('.table-wrap').scrollWidth,
			Client: document.querySelector('.table-wrap').clientWidth})`, &width)
		if width.Table < 0.9*width.View || width.Scroll > width.Client {
			t.Errorf("at 1280 px the table is %.0f px of %.0f, scrolling %.0f in %.0f: want the width used, no scroll",
				width.Table, width.View, width.Scroll, width.Client)
		}

		// Sorting: by CPU, then by status (failed first), by clicking headers.
		eval(ctx, t, p, `document.querySelector('th[data-sort="cpu"] button').click()`)
		var cpus []float64
		evalJSON(ctx, t, p, `[...document.querySelectorAll('#rows tr.node')].map(tr => parseFloat(tr.querySelector('.cpu .val').textContent))`, &cpus)
		for i := 1; i < len(cpus); i++ {
			if cpus[i] < cpus[i-1] {
				t.Errorf("sorted by CPU: %v", cpus)
				break
			}
		}
		eval(ctx, t, p, `document.querySelector('th[data-sort="status"] button').click()`)
		if got := names(ctx, t, p); got[0] != "node-65" || got[4] != "node-64" {
			t.Errorf("sorted by status: %q, want the failed node-65 first and the left node-64 last", got)
		}
		var sortAttr string
		evalJSON(ctx, t, p, `document.querySelector('th[data-sort="status"]').getAttribute('aria-sort')`, &sortAttr)
		if sortAttr != "ascending" {
			t.Errorf("status header aria-sort = %q", sortAttr)
		}

		// Filtering by status and by service, and back.
		eval(ctx, t, p, `(() => { const s = document.getElementById('f-status'); s.value = 'alive'; s.dispatchEvent(new Event('change')); })()`)
		if got := strings.Join(names(ctx, t, p), " "); got != "node-61 node-62 node-63" {
			t.Errorf("alive filter shows %q", got)
		}
		eval(ctx, t, p, `(() => { const s = document.getElementById('f-service'); s.value = 'prometheus_node_exporter'; s.dispatchEvent(new Event('change')); })()`)
		if got := strings.Join(names(ctx, t, p), " "); got != "node-61" {
			t.Errorf("alive + prometheus_node_exporter filter shows %q", got)
		}
		var shown string
		evalJSON(ctx, t, p, `document.getElementById('shown').textContent`, &shown)
		if shown != "showing 1 of 5" {
			t.Errorf("filter count = %q", shown)
		}
		eval(ctx, t, p, `(() => { for (const id of ['f-status', 'f-service']) { const s = document.getElementById(id); s.value = ''; s.dispatchEvent(new Event('change')); } document.querySelector('th[data-sort="name"] button').click(); })()`)
		if got := strings.Join(names(ctx, t, p), " "); got != "node-61 node-62 node-63 node-64 node-65" {
			t.Errorf("unfiltered, by name: %q", got)
		}
		if shots != "" {
			if err := p.Screenshot(ctx, filepath.Join(shots, "page-1280.png")); err != nil {
				t.Error(err)
			}
		}
		if ex := p.Exceptions(); len(ex) > 0 {
			t.Errorf("page threw: %q", ex)
		}
	})

	t.Run("phone", func(t *testing.T) {
		ctx, p := browser.OpenPage(t, url, browser.Options{Width: 390, Height: 2700, Mobile: true})
		if err := p.WaitFor(ctx, ready); err != nil {
			t.Fatal(err)
		}
		checkPage(ctx, t, p, longService)
		var layout struct {
			Cards         bool
			Scroll, View  float64
			Chart         float64
			SortPickShown bool
		}
		evalJSON(ctx, t, p, `({Cards: getComputedStyle(document.querySelector('.nodes thead')).display === 'none' &&
				getComputedStyle(document.querySelector('.nodes tr.node')).display === 'block',
			Scroll: document.documentElement.scrollWidth, View: document.documentElement.clientWidth,
			Chart: document.querySelector('tr.node.alive .spark.cpu').getBoundingClientRect().width,
			SortPickShown: document.getElementById('f-sort').getBoundingClientRect().width > 0})`, &layout)
		if !layout.Cards || layout.Scroll > layout.View || layout.Chart < 60 || !layout.SortPickShown {
			t.Errorf("phone layout %+v: want cards, no sideways scroll, charts shown, a sort menu", layout)
		}
		if shots != "" {
			if err := p.Screenshot(ctx, filepath.Join(shots, "page-390.png")); err != nil {
				t.Error(err)
			}
		}
		if ex := p.Exceptions(); len(ex) > 0 {
			t.Errorf("page threw: %q", ex)
		}
	})
}

// checkPage checks what both widths show: left and failed told apart,
// stale values aged, whole service names, disk and uptime.
func checkPage(ctx context.Context, t *testing.T, p *browser.Page, longService string) {
	t.Helper()
	type rowView struct {
		Name, Status, Phi, Age, Disk, Uptime string
		Meter                                bool
		Services                             []string
		Clipped                              bool
	}
	var rows []rowView
	evalJSON(ctx, t, p, `[...document.querySelectorAll('#rows tr.node')].map(tr => ({
		Name: tr.querySelector('.node-name').textContent,
		Status: tr.querySelector('.badge').textContent,
		Phi: tr.querySelector('.phi-text').textContent,
		Meter: !!tr.querySelector('.phi-wrap meter'),
		Age: tr.querySelector('.age') ? tr.querySelector('.age').textContent : '',
		Disk: tr.querySelector('.disk .val').textContent,
		Uptime: tr.querySelector('.uptime') ? tr.querySelector('.uptime').textContent : '',
		Services: [...tr.querySelectorAll('.svc')].map(s => s.textContent),
		Clipped: [...tr.querySelectorAll('.svc')].some(s => s.scrollWidth > s.clientWidth + 1 || s.getBoundingClientRect().right > tr.getBoundingClientRect().right + 1)}))`, &rows)
	byName := map[string]rowView{}
	for _, r := range rows {
		byName[r.Name] = r
	}
	left, failed := byName["node-64"], byName["node-65"]
	if left.Status != "left" || left.Meter || left.Phi != "left cleanly" {
		t.Errorf("left node shown as %+v: want no suspicion bar, \"left cleanly\"", left)
	}
	if failed.Status != "failed" || !failed.Meter {
		t.Errorf("failed node shown as %+v: want its suspicion bar", failed)
	}
	for _, r := range []rowView{left, failed} {
		if !strings.HasPrefix(r.Age, "values from ") || !strings.HasSuffix(r.Age, " s ago") {
			t.Errorf("%s (%s): age %q, want \"values from N s ago\"", r.Name, r.Status, r.Age)
		}
	}
	for _, n := range []string{"node-61", "node-62", "node-63"} {
		r := byName[n]
		if r.Age != "" {
			t.Errorf("alive %s shows an age %q", n, r.Age)
		}
		if !strings.HasSuffix(r.Disk, " %") || !strings.HasPrefix(r.Uptime, "up ") {
			t.Errorf("%s: disk %q, uptime %q: want both shown", n, r.Disk, r.Uptime)
		}
	}
	if s := byName["node-61"].Services; len(s) != 2 || s[0] != longService || byName["node-61"].Clipped {
		t.Errorf("node-61 services %q (clipped: %v): want %s whole", s, byName["node-61"].Clipped, longService)
	}
}

func names(ctx context.Context, t *testing.T, p *browser.Page) []string {
	t.Helper()
	var n []string
	evalJSON(ctx, t, p, `[...document.querySelectorAll('#rows tr.node .node-name')].map(e => e.textContent)`, &n)
	return n
}

func eval(ctx context.Context, t *testing.T, p *browser.Page, expr string) {
	t.Helper()
	if err := p.Eval(ctx, expr, nil); err != nil {
		t.Fatal(err)
	}
}

// evalJSON evaluates expr and decodes its value into out.
func evalJSON(ctx context.Context, t *testing.T, p *browser.Page, expr string, out any) {
	t.Helper()
	if err := p.Eval(ctx, expr, out); err != nil {
		t.Fatal(err)
	}
}

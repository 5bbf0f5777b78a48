package api

import (
	"context"
	"encoding/json"
	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"html"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/browser"
)

// pageReady is true once the page's script has rendered /v1/nodes and its
// event stream is connected.
const pageReady = `document.getElementById('live').dataset.state === 'live' &&
	document.getElementById('updated').textContent.startsWith('updated')`

func needBrowser(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping the browser test in -short mode")
	}
	if _, err := browser.Find(); err != nil {
		t.Skipf("skipping: %v", err)
	}
}

var rowRE = regexp.MustCompile(`(?s)<tr class="node [^"]*">.*?<span class="node-name">(.*?)</span>.*?<span class="badge [a-z]+">(.*?)</span>.*?<span class="phi-text">(.*?)</span>.*?</tr>`)

func TestStatusPageInBrowser(t *testing.T) {
	needBrowser(t)
	nodes := testNodes()[:3]
	nodes[1].Name = `<img src=x onerror=alert(1)>` // gossiped input: must stay text
	ts, _, _ := testServer(t, "", nodes...)

	dom, err := browser.DumpDOM(context.Background(), ts.URL+"/", browser.Options{WaitFor: pageReady})
	if err != nil {
		t.Fatal(err)
	}
	rows := rowRE.FindAllStringSubmatch(dom, -1)
	type row struct{ name, status, phi string }
	var got []row
	for _, r := range rows {
		got = append(got, row{html.UnescapeString(r[1]), r[2], r[3]})
	}
	want := []row{
		{"<img src=x onerror=alert(1)>", "alive", "0.84 / 8"},
		{"pi-1", "alive", "0.00 / 8"},
		{"pi-3", "suspect", "6.10 / 8"},
	}
	if len(got) != len(want) {
		t.Fatalf("page shows %d rows %q, want %d\n%s", len(got), got, len(want), dom)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("row %d = %q, want %q", i, got[i], want[i])
		}
	}
	if strings.Contains(dom, "<img src=x") || strings.Contains(dom, "<img src=\"x\"") {
		t.Errorf("gossiped node name was inserted as HTML")
	}
	if !strings.Contains(dom, `<span class="node-name">&lt;img src=x onerror=alert(1)&gt;</span>`) {
		t.Errorf("gossiped node name not shown as text")
	}
	if !strings.Contains(dom, `<div class="notice alone" id="alone" hidden="">`) {
		t.Errorf("alone notice shown for a 3-node cluster")
	}
}

// The page follows the event stream: a node that fails shows as failed
// without a reload, and on a phone the table becomes cards.
func TestStatusPageLiveUpdatesOnPhone(t *testing.T) {
	needBrowser(t)
	ts, f, _ := testServer(t, "", testNodes()[:3]...)
	ctx, p := browser.OpenPage(t, ts.URL+"/", browser.Options{Width: 390, Height: 844, Mobile: true})
	if err := p.WaitFor(ctx, pageReady); err != nil {
		t.Fatal(err)
	}
	var cards bool
	if err := p.Eval(ctx, `getComputedStyle(document.querySelector('.nodes thead')).display === 'none' &&
		getComputedStyle(document.querySelector('.nodes tr.node')).display === 'block'`, &cards); err != nil || !cards {
		t.Errorf("phone layout is not cards (%v)", err)
	}

	f.update("pi-3", func(n *apitypes.Node) { n.Status, n.Phi = apitypes.StatusFailed, 11.5 })
	node := f.Nodes()[2]
	f.publish(apitypes.Event{Kind: apitypes.EventFail, Node: node, Time: time.Now()})
	if err := p.WaitFor(ctx, `[...document.querySelectorAll('#rows tr')].some(tr =>
		tr.querySelector('.node-name').textContent === 'pi-3' &&
		tr.querySelector('.badge').textContent === 'failed' &&
		tr.querySelector('.phi-text').textContent === '11.50 / 8')`); err != nil {
		t.Fatal(err)
	}
	var counts string
	if err := p.Eval(ctx, `[...document.querySelectorAll('#counts li')].map(li => li.textContent).join(', ')`, &counts); err != nil {
		t.Fatal(err)
	}
	if counts != "3 nodes, 2 alive, 0 suspect, 1 failed, 0 left" {
		t.Errorf("counts = %q", counts)
	}
	if ex := p.Exceptions(); len(ex) > 0 {
		exs, _ := json.Marshal(ex)
		t.Errorf("page threw: %s", exs)
	}
}

// The page's banner follows /healthz: setting a token while the page is
// open removes the open-writes warning without a reload.
func TestStatusPageWarningsFollowToken(t *testing.T) {
	needBrowser(t)
	ts, f, s := testServer(t, "", testNodes()[:3]...)
	ctx, p := browser.OpenPage(t, ts.URL+"/", browser.Options{})
	if err := p.WaitFor(ctx, pageReady+` && document.querySelectorAll('#warnings .notice.insecure').length === 1 &&
		document.querySelector('#warnings .notice').textContent.includes('api_token')`); err != nil {
		t.Fatalf("no open-writes banner: %v", err)
	}
	s.SetToken("t0ken")
	f.publish(apitypes.Event{Kind: apitypes.EventUpdate, Node: f.Nodes()[0], Time: time.Now()})
	if err := p.WaitFor(ctx, `document.querySelectorAll('#warnings .notice').length === 0`); err != nil {
		t.Fatalf("banner still shown once a token is set: %v", err)
	}
	if ex := p.Exceptions(); len(ex) > 0 {
		t.Errorf("page threw: %q", ex)
	}
}

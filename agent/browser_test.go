package agent

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/internal/browser"
)

// TestStatusPageOfLiveCluster loads the status page of a live three-agent
// cluster in headless Chromium and checks that the page's script shows every
// node with its status and suspicion.
func TestStatusPageOfLiveCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the browser test in -short mode")
	}
	if _, err := browser.Find(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	seed := startAgent(t, 31, nil)
	agents := []*Agent{seed, startAgent(t, 32, joinTo(seed)), startAgent(t, 33, joinTo(seed))}
	waitAlive(t, agents, 3)

	ctx, p := browser.OpenPage(t, "http://"+agents[1].HTTPAddr()+"/", browser.Options{})
	// Wait for the script (not the server-side render) to have drawn three
	// rows with a status badge and a phi/threshold reading each.
	const rowsJS = `[...document.querySelectorAll('#rows tr.node')].map(tr => ({
		name: tr.querySelector('.node-name').textContent,
		status: tr.querySelector('.badge').textContent,
		phi: tr.querySelector('.phi-text').textContent}))`
	if err := p.WaitFor(ctx, `document.getElementById('live').dataset.state === 'live' && `+rowsJS+`.length === 3`); err != nil {
		t.Fatal(err)
	}
	var rows []struct{ Name, Status, Phi string }
	var raw string
	if err := p.Eval(ctx, `JSON.stringify(`+rowsJS+`)`, &raw); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(raw), &rows); err != nil {
		t.Fatal(err)
	}
	for i, r := range rows {
		want := fmt.Sprintf("node-%d", 31+i)
		if r.Name != want || r.Status != "alive" {
			t.Errorf("row %d = %+v, want %s alive", i, r, want)
		}
		var phi, threshold float64
		if _, err := fmt.Sscanf(r.Phi, "%f / %f", &phi, &threshold); err != nil || threshold <= 0 || phi >= threshold {
			t.Errorf("row %d suspicion %q: want \"phi / threshold\" with phi below the threshold", i, r.Phi)
		}
	}
	if ex := p.Exceptions(); len(ex) > 0 {
		t.Errorf("page threw: %v", ex)
	}
}

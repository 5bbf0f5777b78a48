package api

import (
	"encoding/json"
	"fmt"
	"mime"
	"strings"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// TestPrometheusSD checks GET /v1/sd/prometheus against Prometheus' http_sd
// format: a JSON list of {targets, labels}, one group per node that has not
// left, its target the agent's API address.
func TestPrometheusSD(t *testing.T) {
	nodes := testNodes()
	nodes = append(nodes,
		apitypes.Node{Name: "pi-5", Address: "10.0.0.15", HTTPPort: 8080, Status: apitypes.StatusLeft, Services: []string{}},
		apitypes.Node{Name: "pi-6", Address: "fd00::6", HTTPPort: 9090, Status: apitypes.StatusAlive, Services: []string{}})
	ts, _, _ := testServer(t, "", nodes...)

	a := call(t, "GET", ts.URL+"/v1/sd/prometheus", "", nil)
	// Prometheus takes application/json, with charset=utf-8 or none.
	if ct, params, err := mime.ParseMediaType(a.header.Get("Content-Type")); a.code != 200 || err != nil || ct != "application/json" || params["charset"] != "" && params["charset"] != "utf-8" {
		t.Fatalf("GET /v1/sd/prometheus = %d %q: %s", a.code, a.header.Get("Content-Type"), a.body)
	}
	var groups []struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	dec := json.NewDecoder(strings.NewReader(a.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&groups); err != nil {
		t.Fatalf("not http_sd JSON: %v\n%s", err, a.body)
	}
	got := map[string]string{}
	for _, g := range groups {
		if len(g.Targets) != 1 {
			t.Errorf("group %v: %d targets, want 1", g.Labels, len(g.Targets))
			continue
		}
		got[g.Targets[0]] = fmt.Sprint(g.Labels)
	}
	want := map[string]string{
		"10.0.0.11:8080": fmt.Sprint(map[string]string{"node": "pi-1", "arch": "arm64", "model": "Raspberry Pi 4 Model B Rev 1.4",
			"__meta_rpi_services": ",nginx_webserver,", "__meta_rpi_status": "alive", "__meta_rpi_version": "v1.0.0"}),
		"10.0.0.12:8080": fmt.Sprint(map[string]string{"node": "pi-2", "arch": "arm64", "model": "Raspberry Pi 5 Model B Rev 1.0",
			"__meta_rpi_services": ",nginx_webserver,redis,", "__meta_rpi_status": "alive", "__meta_rpi_version": "v1.0.0"}),
		// No model: no label, as Prometheus treats an empty one.
		"10.0.0.13:8080": fmt.Sprint(map[string]string{"node": "pi-3", "arch": "arm",
			"__meta_rpi_services": ",", "__meta_rpi_status": "suspect", "__meta_rpi_version": "v1.0.0"}),
		// Failed: still listed, so its target is down rather than gone.
		"10.0.0.14:8080": fmt.Sprint(map[string]string{"node": "pi-4", "arch": "arm64",
			"__meta_rpi_services": ",redis,", "__meta_rpi_status": "failed", "__meta_rpi_version": "v0.9.0"}),
		"[fd00::6]:9090": fmt.Sprint(map[string]string{"node": "pi-6",
			"__meta_rpi_services": ",", "__meta_rpi_status": "alive", "__meta_rpi_version": ""}),
	}
	for target, labels := range want {
		if got[target] != labels {
			t.Errorf("target %s: labels %s, want %s", target, got[target], labels)
		}
	}
	for target := range got {
		if _, ok := want[target]; !ok {
			t.Errorf("unexpected target %s %s (pi-5 left)", target, got[target])
		}
	}

	// An empty cluster view is an empty list, not null: Prometheus
	// rejects null.
	empty, _, _ := testServer(t, "", []apitypes.Node{}...)
	if a := call(t, "GET", empty.URL+"/v1/sd/prometheus", "", nil); a.code != 200 || strings.TrimSpace(a.body) != "[]" {
		t.Errorf("GET /v1/sd/prometheus with no nodes = %d %q, want []", a.code, a.body)
	}
}

package inventory

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

var update = flag.Bool("update", false, "rewrite golden files")

func temp(c float64) *float64 { return &c }

// sampleNodes is a small cluster with every status and a busy node.
func sampleNodes() []apitypes.Node {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	return []apitypes.Node{
		{Name: "pi-b", Address: "10.0.0.12", GossipPort: 7946, HTTPPort: 8080, Status: apitypes.StatusAlive,
			Services: []string{"nginx_webserver", "web.api-v2"}, PhiThreshold: 8, Phi: 0.41234,
			Monitoring: apitypes.Monitoring{CPUs: 4, CPUPercent: 12.5, MemTotal: 1000, MemUsed: 250, Load1: 0.4, Load5: 0.2, Load15: 0.1, TempC: temp(48.3), SampledAt: at},
			Model:      "Raspberry Pi 4 Model B Rev 1.4", Arch: "arm64"},
		{Name: "pi-a", Address: "10.0.0.11", GossipPort: 7946, HTTPPort: 8080, Status: apitypes.StatusAlive,
			Services: []string{"nginx_load_balancer", "alive"}, PhiThreshold: 8,
			Monitoring: apitypes.Monitoring{CPUs: 4, MemTotal: 1000, MemUsed: 500, Load1: 4, Load5: 4, Load15: 4, SampledAt: at},
			Model:      "Raspberry Pi 3 Model B Plus Rev 1.3", Arch: "arm"},
		{Name: "pi-c", Address: "10.0.0.13", GossipPort: 7946, HTTPPort: 8081, Status: apitypes.StatusFailed,
			Services: []string{"nginx_webserver"}, Phi: 12, PhiThreshold: 8,
			Monitoring: apitypes.Monitoring{CPUs: 0, MemTotal: 0, Load1: 1}, Arch: "arm64"},
		{Name: "pi-d", Address: "10.0.0.14", Status: apitypes.StatusSuspect, Services: []string{"9p"}, Phi: 6, PhiThreshold: 8},
	}
}

func TestBuildGroups(t *testing.T) {
	inv := Build(sampleNodes(), Options{})
	want := map[string][]string{
		"alive":               {"pi-a", "pi-b"},
		"suspect":             {"pi-d"},
		"failed":              {"pi-c"},
		"left":                {},
		"nginx_webserver":     {"pi-b"}, // pi-c runs it but failed
		"web_api_v2":          {"pi-b"},
		"nginx_load_balancer": {"pi-a"},
		"service_alive":       {"pi-a"},
	}
	if !reflect.DeepEqual(inv.Groups, want) {
		t.Errorf("groups:\n got %v\nwant %v", inv.Groups, want)
	}
	if got := inv.Vars["pi-a"].AnsibleUser; got != "pi" {
		t.Errorf("default ansible_user = %q, want pi", got)
	}
	if got := inv.Vars["pi-c"].BusyScore; got != 0.25 {
		t.Errorf("busy score with cpus=0, mem_total=0 = %v, want 0.25 (load1 1 on one cpu / 4)", got)
	}
	if got := inv.Vars["pi-d"].HTTPPort; got != 8080 {
		t.Errorf("missing http port = %d, want default 8080", got)
	}
}

func TestListJSONGolden(t *testing.T) {
	inv := Build(sampleNodes(), Options{User: "ops", SSHKey: "/home/ops/.ssh/id_ed25519"})
	compact, err := inv.ListJSON()
	if err != nil {
		t.Fatal(err)
	}
	// The output is compact; the golden file is indented to be read.
	var indented bytes.Buffer
	if err := json.Indent(&indented, compact, "", "  "); err != nil {
		t.Fatalf("--list output is not JSON: %v\n%s", err, compact)
	}
	got := indented.Bytes()
	golden := filepath.Join("testdata", "list.golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("--list output differs from %s:\n%s", golden, got)
	}
	var parsed map[string]json.RawMessage
	if err := json.Unmarshal(got, &parsed); err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"_meta", "all", "alive", "suspect", "failed", "left"} {
		if _, ok := parsed[g]; !ok {
			t.Errorf("--list lacks %q", g)
		}
	}
}

func TestListJSONEmptyCluster(t *testing.T) {
	got, err := Build(nil, Options{}).ListJSON()
	if err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		Meta struct {
			HostVars map[string]any `json:"hostvars"`
		} `json:"_meta"`
		Left struct {
			Hosts []string `json:"hosts"`
		} `json:"left"`
	}
	if err := json.Unmarshal(got, &parsed); err != nil {
		t.Fatal(err)
	}
	if parsed.Meta.HostVars == nil || parsed.Left.Hosts == nil {
		t.Errorf("empty cluster must still have _meta.hostvars {} and left.hosts []:\n%s", got)
	}
}

func TestHostJSON(t *testing.T) {
	inv := Build(sampleNodes(), Options{})
	got, err := inv.HostJSON("pi-b")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(got, &v); err != nil {
		t.Fatal(err)
	}
	if v["ansible_host"] != "10.0.0.12" || v["rpi_temp_c"] != 48.3 || v["rpi_phi"] != 0.4123 {
		t.Errorf("unexpected host vars: %s", got)
	}
	if _, ok := v["ansible_ssh_private_key_file"]; ok {
		t.Errorf("ssh key var present without a configured key: %s", got)
	}
	_, err = inv.HostJSON("nope")
	if err == nil || !strings.Contains(err.Error(), "pi-a, pi-b, pi-c, pi-d") {
		t.Errorf("unknown host error should list known hosts, got %v", err)
	}
}

func TestStaticJSON(t *testing.T) {
	data, err := Build(sampleNodes(), Options{}).StaticJSON()
	if err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		All struct {
			Hosts    map[string]HostVars `json:"hosts"`
			Children map[string]struct {
				Hosts map[string]any `json:"hosts"`
			} `json:"children"`
		} `json:"all"`
	}
	if err := json.Unmarshal(data, &parsed); err != nil {
		t.Fatal(err)
	}
	if parsed.All.Hosts["pi-b"].AnsibleHost != "10.0.0.12" {
		t.Errorf("static inventory lacks pi-b vars: %s", data)
	}
	if _, ok := parsed.All.Children["nginx_webserver"].Hosts["pi-b"]; !ok {
		t.Errorf("static inventory lacks pi-b in nginx_webserver: %s", data)
	}
}

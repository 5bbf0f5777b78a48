package inventory

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPlaybookGroups(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "site.yml"), `
- hosts: web:&alive:!failed
  tasks: []
- name: list form
  hosts: [db, "cache,web"]
- import_playbook: sub/lb.yml
- hosts: "{{ target }}"
- hosts: "~pi-.*"
- hosts: webservers[0:1]
`)
	writeFile(t, filepath.Join(dir, "sub", "lb.yml"), `
- ansible.builtin.import_playbook: ../more.yml
- hosts: nginx_load_balancer
`)
	writeFile(t, filepath.Join(dir, "more.yml"), "- hosts: all\n")
	groups, warnings, err := PlaybookGroups(filepath.Join(dir, "site.yml"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"web", "alive", "failed", "db", "cache", "all", "nginx_load_balancer", "webservers"}
	if !reflect.DeepEqual(groups, want) {
		t.Errorf("groups = %v, want %v", groups, want)
	}
	if len(warnings) != 2 || !strings.Contains(warnings[0], "templated") || !strings.Contains(warnings[1], "~pi-.*") {
		t.Errorf("warnings = %q, want one for the templated and one for the regex pattern", warnings)
	}
}

func TestPlaybookGroupsErrors(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.yml"), "- import_playbook: b.yml\n")
	writeFile(t, filepath.Join(dir, "b.yml"), "- import_playbook: a.yml\n")
	writeFile(t, filepath.Join(dir, "map.yml"), "hosts: web\n")
	writeFile(t, filepath.Join(dir, "badhosts.yml"), "- hosts: {a: b}\n")
	for file, want := range map[string]string{
		"a.yml":        "import cycle",
		"map.yml":      "expected a list of plays",
		"badhosts.yml": "hosts must be a string or a list",
		"missing.yml":  "no such file",
	} {
		_, _, err := PlaybookGroups(filepath.Join(dir, file))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one containing %q", file, err, want)
		}
	}
}

func TestParseAssign(t *testing.T) {
	got, err := ParseAssign([]string{"web=2", " lb = 1"})
	if err != nil || !reflect.DeepEqual(got, map[string]int{"web": 2, "lb": 1}) {
		t.Errorf("ParseAssign = %v, %v", got, err)
	}
	for _, bad := range []string{"web", "web=0", "=2", "web=x"} {
		if _, err := ParseAssign([]string{bad}); err == nil || !strings.Contains(err.Error(), "GROUP=N") {
			t.Errorf("ParseAssign(%q) error = %v, want a GROUP=N hint", bad, err)
		}
	}
}

func TestHostsFile(t *testing.T) {
	nodes := sampleNodes()
	nodes = append(nodes, apitypes.Node{Name: "pi-e", Address: "10.0.0.15", Status: apitypes.StatusAlive,
		Monitoring: apitypes.Monitoring{CPUs: 4, MemTotal: 100, MemUsed: 1}})
	ini, warnings := HostsFile(nodes, []string{"nginx_webserver", "alive", "left", "db", "lb"},
		map[string]int{"lb": 2, "extra": 9}, Options{User: "ops"})
	got := string(ini)
	for _, want := range []string{
		"[all:vars]\nansible_user=ops\n",
		"[nginx_webserver]\npi-b ansible_host=10.0.0.12\n\n",
		"[alive]\npi-a ansible_host=10.0.0.11\npi-b ansible_host=10.0.0.12\npi-e ansible_host=10.0.0.15\n\n",
		"[left]\n\n",
		"[db]\n\n",
		// the two least busy alive nodes: pi-e (0.01), pi-b (0.32); not pi-a (2)
		"[lb]\npi-b ansible_host=10.0.0.12\npi-e ansible_host=10.0.0.15\n\n",
		"[extra]\npi-a ansible_host=10.0.0.11\npi-b ansible_host=10.0.0.12\npi-e ansible_host=10.0.0.15\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("hosts file lacks %q:\n%s", want, got)
		}
	}
	joined := strings.Join(warnings, "\n")
	for _, want := range []string{"group left: no node is left", "group db: no alive node runs", "--assign db=N", "group extra: asked for 9 nodes, only 3 alive"} {
		if !strings.Contains(joined, want) {
			t.Errorf("warnings lack %q:\n%s", want, joined)
		}
	}
	if len(warnings) != 3 {
		t.Errorf("want 3 warnings, got %q", warnings)
	}
}

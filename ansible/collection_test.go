package ansible

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// ansible-galaxy builds the collection, and the archive holds the plugin,
// the module, the role and the metadata, and none of the Go tests.
func TestCollectionBuilds(t *testing.T) {
	needTool(t, "ansible-galaxy")
	tmp := t.TempDir()
	mustRun(t, tmp, ansibleEnv(tmp), "ansible-galaxy", "collection", "build", collectionDir, "--output-path", tmp)
	archives, _ := filepath.Glob(filepath.Join(tmp, "rpi_cluster-pi-*.tar.gz"))
	if len(archives) != 1 {
		t.Fatalf("ansible-galaxy collection build made %v, want one rpi_cluster-pi-*.tar.gz", archives)
	}
	files := tarNames(t, archives[0])
	for _, want := range []string{
		"MANIFEST.json", "README.md", "meta/runtime.yml",
		"plugins/inventory/agent.py", "plugins/modules/service.py", "plugins/module_utils/rpi.py",
		"roles/agent/tasks/main.yml", "roles/agent/handlers/main.yml", "roles/agent/files/rpi-agent.service",
		"roles/agent/templates/agent.yaml.j2", "roles/agent/meta/argument_specs.yml",
	} {
		if !files[want] {
			t.Errorf("the collection archive lacks %s; it holds %v", want, slices.Sorted(maps.Keys(files)))
		}
	}
	for f := range files {
		if strings.HasSuffix(f, ".go") {
			t.Errorf("the collection archive holds Go file %s", f)
		}
	}
	// Installable: ansible-galaxy takes the archive it built.
	mustRun(t, tmp, ansibleEnv(tmp), "ansible-galaxy", "collection", "install", "--offline", "-p", filepath.Join(tmp, "installed"), archives[0])
	if _, err := os.Stat(filepath.Join(tmp, "installed", "ansible_collections", "rpi_cluster", "pi", "plugins", "inventory", "agent.py")); err != nil {
		t.Errorf("after ansible-galaxy collection install: %v", err)
	}
}

func tarNames(t *testing.T, path string) map[string]bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	names := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names[strings.TrimPrefix(h.Name, "./")] = true
	}
}

// ansible-doc parses the plugin's, the module's and the role's
// documentation, and it lists the options the README promises.
func TestDocsParse(t *testing.T) {
	needTool(t, "ansible-doc")
	tmp := t.TempDir()
	for _, c := range []struct {
		kind, name string
		options    []string
	}{
		{"inventory", "rpi_cluster.pi.agent", []string{"agents", "token", "user", "ssh_key", "known_hosts", "cache", "cache_timeout", "compose", "groups", "keyed_groups", "strict"}},
		{"module", "rpi_cluster.pi.service", []string{"name", "state", "agent", "token", "node"}},
	} {
		out := mustRun(t, tmp, ansibleEnv(tmp), "ansible-doc", "--json", "-t", c.kind, c.name)
		var doc map[string]struct {
			Doc struct {
				Options map[string]any `json:"options"`
			} `json:"doc"`
			Examples string `json:"examples"`
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("ansible-doc %s %s: %v\n%s", c.kind, c.name, err, out)
		}
		d, ok := doc[c.name]
		if !ok {
			t.Fatalf("ansible-doc %s %s: no entry in %s", c.kind, c.name, out)
		}
		for _, o := range c.options {
			if _, ok := d.Doc.Options[o]; !ok {
				t.Errorf("%s %s: option %s is not documented; documented: %v", c.kind, c.name, o, slices.Sorted(maps.Keys(d.Doc.Options)))
			}
		}
		if d.Examples == "" {
			t.Errorf("%s %s: no examples", c.kind, c.name)
		}
	}
	out := mustRun(t, tmp, ansibleEnv(tmp), "ansible-doc", "-t", "role", "rpi_cluster.pi.agent")
	for _, want := range []string{"rpi_agent_encrypt", "rpi_agent_api_token", "rpi_agent_build_dir"} {
		if !strings.Contains(out, want) {
			t.Errorf("ansible-doc -t role rpi_cluster.pi.agent does not mention %s:\n%s", want, out)
		}
	}
}

// ansible-lint finds nothing in the collection (production profile, the
// strictest).
func TestAnsibleLint(t *testing.T) {
	needTool(t, "ansible-lint")
	tmp := t.TempDir()
	env := ansibleEnv(tmp, "XDG_CACHE_HOME="+filepath.Join(tmp, "cache"), "NO_COLOR=1")
	out, err := run(t, collectionDir, env, "ansible-lint", "--offline", "--nocolor", "--profile", "production")
	if err != nil {
		t.Fatalf("ansible-lint on the collection: %v", err)
	}
	t.Log(out)
}

// The role installs the unit the image installs, not a copy that drifted.
func TestRoleUnitIsTheProjectsUnit(t *testing.T) {
	want, err := os.ReadFile(filepath.Join(repoRoot, "dist", "systemd", "rpi-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(collectionDir, "roles", "agent", "files", "rpi-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("roles/agent/files/rpi-agent.service differs from dist/systemd/rpi-agent.service: copy dist's over it")
	}
}

// pluginFile writes an inventory file for the plugin asking agent, with
// the connection settings the workstation config of scriptInventory
// gives, plus extra lines.
func pluginFile(t *testing.T, dir, agent, extra string) string {
	t.Helper()
	path := filepath.Join(dir, "cluster.rpi.yml")
	writeFile(t, path, fmt.Sprintf(`plugin: rpi_cluster.pi.agent
agents: [%q]
user: admin
ssh_key: /home/admin/.ssh/id_ed25519
known_hosts: %q
%s`, agent, filepath.Join(dir, "known hosts.rpi"), extra))
	return path
}

// scriptInventory writes the workstation config and a wrapper that runs
// the rpi-inventory binary on it against agent, and returns the wrapper
// for ansible-inventory -i: Ansible runs it as an inventory script with
// --list, as it runs the repository's ./rpi-inventory.
func scriptInventory(t *testing.T, dir, agent string) string {
	t.Helper()
	_, bin := binaries(t)
	cfg := filepath.Join(dir, "workstation.yaml")
	writeFile(t, cfg, fmt.Sprintf("ssh_user: admin\nssh_key: /home/admin/.ssh/id_ed25519\nknown_hosts: %q\nknown_nodes: %q\n",
		filepath.Join(dir, "known hosts.rpi"), filepath.Join(dir, "known_nodes.json")))
	path := filepath.Join(dir, "rpi-inventory")
	writeFile(t, path, fmt.Sprintf("#!/bin/sh\nexec %q --config %q --agent %q \"$@\"\n", bin, cfg, agent))
	if err := os.Chmod(path, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// compareInventories fails unless the two ansible-inventory --list outputs
// have the same hosts, groups and hostvars, leaving out the hostvars in
// skip.
func compareInventories(t *testing.T, plugin, script inventoryJSON, skip ...string) {
	t.Helper()
	if got, want := plugin.hosts("all"), script.hosts("all"); !slices.Equal(got, want) {
		t.Errorf("hosts: plugin %v, rpi-inventory %v", got, want)
	}
	if got, want := plugin.groups(), script.groups(); !slices.Equal(got, want) {
		t.Errorf("groups: plugin %v, rpi-inventory %v", got, want)
	}
	for _, g := range script.groups() {
		if got, want := plugin.hosts(g), script.hosts(g); !slices.Equal(got, want) {
			t.Errorf("group %s: plugin %v, rpi-inventory %v", g, got, want)
		}
	}
	pv, sv := plugin.hostvars(), script.hostvars()
	for h, want := range sv {
		got := maps.Clone(pv[h])
		want = maps.Clone(want)
		for _, k := range skip {
			delete(got, k)
			delete(want, k)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("hostvars of %s differ:\nplugin:        %s\nrpi-inventory: %s", h, indent(got), indent(want))
		}
	}
}

// Acceptance: ansible-inventory through the plugin and through the
// rpi-inventory script give the same hosts, groups and hostvars on a live
// cluster, one node of which left and whose nodes run services whose
// groups need renaming.
func TestPluginMatchesScriptOnLiveCluster(t *testing.T) {
	needTool(t, "ansible-inventory")
	const token = "plugin-test-token"
	agents := startCluster(t, 3, token)
	for i, svcs := range [][]string{{"web.api-v2", "alive"}, {"web.api-v2", "9p"}, {"nginx"}} {
		for _, s := range svcs {
			setService(t, agents[i].url, token, s, true)
		}
	}
	agents[2].stop(t) // pi-3 leaves: status group left, its nginx in no group
	testutil.WaitFor(t, 20*time.Second, func() error {
		for _, n := range nodes(t, agents[0].url) {
			if n.Name == "pi-3" && n.Status != "left" {
				return fmt.Errorf("pi-1 sees pi-3 %s, want left", n.Status)
			}
			if n.Name == "pi-2" && !slices.Contains(n.Services, "9p") {
				return fmt.Errorf("pi-1 does not see pi-2's services yet: %v", n.Services)
			}
		}
		return nil
	})

	t.Run("same answer", func(t *testing.T) {
		// Both tools read one /v1/nodes answer, so even phi is the same:
		// every hostvar must match.
		tmp := t.TempDir()
		proxy := snapshotProxy(t, agents[0].url, nil)
		plugin := decodeInventory(t, mustRun(t, tmp, ansibleEnv(tmp), "ansible-inventory", "-i", pluginFile(t, tmp, proxy, ""), "--list"))
		script := decodeInventory(t, mustRun(t, tmp, ansibleEnv(tmp), "ansible-inventory", "-i", scriptInventory(t, tmp, proxy), "--list"))
		compareInventories(t, plugin, script)

		if got, want := script.hosts("all"), []string{"pi-1", "pi-2", "pi-3"}; !slices.Equal(got, want) {
			t.Fatalf("rpi-inventory hosts %v, want %v", got, want)
		}
		for g, want := range map[string][]string{
			"alive": {"pi-1", "pi-2"}, "left": {"pi-3"}, "web_api_v2": {"pi-1", "pi-2"},
			"service_alive": {"pi-1"}, "service_9p": {"pi-2"}, "nginx": nil,
		} {
			if got := plugin.hosts(g); !slices.Equal(got, want) {
				t.Errorf("plugin group %s = %v, want %v", g, got, want)
			}
		}
		hv := plugin.hostvars()["pi-1"]
		if hv["ansible_user"] != "admin" || hv["ansible_host"] == "" || hv["rpi_status"] != "alive" ||
			!strings.Contains(fmt.Sprint(hv["ansible_ssh_common_args"]), "'"+filepath.Join(tmp, "known hosts.rpi")+"'") {
			t.Errorf("plugin hostvars of pi-1: %s", indent(hv))
		}
	})

	t.Run("hostile answer", func(t *testing.T) {
		// Nodes that break the name rules, twins and nodes named like a
		// group, added to the live answer: both tools leave out the same.
		tmp := t.TempDir()
		proxy := snapshotProxy(t, agents[0].url, func(ns []map[string]any) []map[string]any {
			like := func(name string, change func(n map[string]any)) map[string]any {
				n := maps.Clone(ns[0])
				delete(n, "signed_record")
				delete(n, "identity_key")
				n["self"] = false
				n["name"] = name
				n["address"] = "127.0.0.9"
				n["status"] = "alive"
				n["services"] = []any{}
				if change != nil {
					change(n)
				}
				return n
			}
			// pi-3: the agent vouches for pi-1's key, not its record's.
			ns[2] = vouched(ns[2], ns[0])
			return append(ns,
				like("bad name", nil),
				like("all", nil),
				like("Localhost", nil),
				like(strings.Repeat("x", 64), nil),
				like("web_api_v2", nil),
				like("WEB_API_V2", nil),
				like("zoned", func(n map[string]any) { n["address"] = "fe80::1%eth0" }),
				like("hostname-addr", func(n map[string]any) { n["address"] = "pi.local" }),
				like("badsvc", func(n map[string]any) { n["services"] = []any{"Bad"} }),
				like("dotdot", func(n map[string]any) { n["services"] = []any{"../etc"} }),
				like("twin", nil), like("twin", nil),
				like("extra", func(n map[string]any) { n["services"] = []any{"9p", "ungrouped", "web.api-v2"} }),
				like("painted", func(n map[string]any) { n["model"] = "\x1b[31mred\u202e"; n["arch"] = "arm\x07" }),
				like("gone", func(n map[string]any) { n["status"] = "gone" }),
				like("suspected", func(n map[string]any) { n["status"] = "suspect"; n["services"] = []any{"web.api-v2"} }),
				forged(t, ns[1], "forged", false),  // pi-2's signed record under another name
				forged(t, ns[1], "tampered", true), // pi-2's record renamed, signature kept
			)
		})
		plugin := decodeInventory(t, mustRun(t, tmp, ansibleEnv(tmp), "ansible-inventory", "-i", pluginFile(t, tmp, proxy, ""), "--list"))
		script := decodeInventory(t, mustRun(t, tmp, ansibleEnv(tmp), "ansible-inventory", "-i", scriptInventory(t, tmp, proxy), "--list"))
		compareInventories(t, plugin, script)
		want := []string{"extra", "gone", "painted", "pi-1", "pi-2", "suspected"}
		if got := plugin.hosts("all"); !slices.Equal(got, want) {
			t.Errorf("plugin hosts %v, want %v", got, want)
		}
		if got := plugin.hostvars()["painted"]["rpi_model"]; got != `"\x1b[31mred\u202e"` {
			t.Errorf("painted's rpi_model = %q, want it quoted", got)
		}
		if got := plugin.hosts("service_ungrouped"); !slices.Equal(got, []string{"extra"}) {
			t.Errorf("group service_ungrouped = %v, want [extra]", got)
		}
	})

	t.Run("pinned keys", func(t *testing.T) {
		// With the pins rpi-inventory wrote, the plugin agrees; a pinned
		// node without a record is left out by both; a changed key fails
		// both, naming the node and the fix.
		tmp := t.TempDir()
		var key string
		proxy := snapshotProxy(t, agents[0].url, func(ns []map[string]any) []map[string]any {
			key = fmt.Sprint(ns[0]["identity_key"])
			n := maps.Clone(ns[0])
			delete(n, "signed_record")
			delete(n, "identity_key")
			n["name"], n["self"] = "unsigned", false
			return append(ns, n)
		})
		pins := filepath.Join(tmp, "known_nodes.json")
		writeFile(t, pins, fmt.Sprintf(`{"unsigned": %q}`, key))
		script := decodeInventory(t, mustRun(t, tmp, ansibleEnv(tmp), "ansible-inventory", "-i", scriptInventory(t, tmp, proxy), "--list"))
		plugin := decodeInventory(t, mustRun(t, tmp, ansibleEnv(tmp), "ansible-inventory", "-i",
			pluginFile(t, tmp, proxy, fmt.Sprintf("known_nodes: %q\n", pins)), "--list"))
		compareInventories(t, plugin, script)
		if got := plugin.hosts("all"); slices.Contains(got, "unsigned") || len(got) != 3 {
			t.Errorf("plugin hosts %v, want pi-1, pi-2, pi-3 and not the pinned node without a record", got)
		}
		data, err := os.ReadFile(pins)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]string
		if err := json.Unmarshal(data, &m); err != nil || len(m) != 4 {
			t.Fatalf("rpi-inventory pinned %v (%v), want pi-1..3 and unsigned", m, err)
		}
		m["pi-2"] = m["pi-1"]
		data, _ = json.Marshal(m)
		writeFile(t, pins, string(data))
		for tool, inv := range map[string]string{
			"rpi-inventory": scriptInventory(t, tmp, proxy),
			"plugin":        pluginFile(t, tmp, proxy, fmt.Sprintf("known_nodes: %q\n", pins)),
		} {
			_, err := run(t, tmp, ansibleEnv(tmp), "ansible-inventory", "-i", inv, "--list")
			if err == nil || !strings.Contains(oneLine(err), "refuse node pi-2") || !strings.Contains(oneLine(err), "forget pi-2") {
				t.Errorf("%s with pi-2 pinned to pi-1's key: %v, want a refusal naming pi-2 and the fix", tool, err)
			}
		}
	})

	t.Run("live", func(t *testing.T) {
		// Straight from the agent, one call after the other: only phi,
		// which the agent computes at each request, may differ.
		tmp := t.TempDir()
		plugin := decodeInventory(t, mustRun(t, tmp, ansibleEnv(tmp), "ansible-inventory", "-i", pluginFile(t, tmp, agents[0].url, ""), "--list"))
		script := decodeInventory(t, mustRun(t, tmp, ansibleEnv(tmp), "ansible-inventory", "-i", scriptInventory(t, tmp, agents[0].url), "--list"))
		compareInventories(t, plugin, script, "rpi_phi")
	})
}

// The Constructable options work on the plugin's hosts (keyed_groups,
// groups, compose, seen through --graph and --list), and with cache on,
// a second run answers from the cache until --flush-cache.
func TestPluginConstructedAndCache(t *testing.T) {
	needTool(t, "ansible-inventory")
	const token = "cache-test-token"
	agents := startCluster(t, 2, token)
	setService(t, agents[0].url, token, "web.api-v2", true)
	testutil.WaitFor(t, 20*time.Second, func() error {
		for _, n := range nodes(t, agents[1].url) {
			if n.Name == "pi-1" && slices.Contains(n.Services, "web.api-v2") {
				return nil
			}
		}
		return fmt.Errorf("pi-2 does not see pi-1's service yet")
	})
	tmp := t.TempDir()
	cacheDir := filepath.Join(tmp, "cache")
	inv := pluginFile(t, tmp, agents[1].url, fmt.Sprintf(`cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: %q
cache_timeout: 3600
strict: true
keyed_groups:
  - key: rpi_arch
    prefix: arch
compose:
  rpi_agent_url: "'http://' + ansible_host + ':' + (rpi_http_port | string)"
groups:
  api: "'web.api-v2' in rpi_services"
`, cacheDir))
	env := ansibleEnv(tmp)

	graph := mustRun(t, tmp, env, "ansible-inventory", "-i", inv, "--graph")
	for _, want := range []string{"@alive:", "@web_api_v2:", "@api:", "@arch_" + runtime.GOARCH + ":", "|--pi-1", "|--pi-2"} {
		if !strings.Contains(graph, want) {
			t.Errorf("--graph lacks %q:\n%s", want, graph)
		}
	}
	first := decodeInventory(t, mustRun(t, tmp, env, "ansible-inventory", "-i", inv, "--list"))
	if got := first.hosts("api"); !slices.Equal(got, []string{"pi-1"}) {
		t.Errorf("group api (groups:) = %v, want [pi-1]", got)
	}
	if got := first.hosts("arch_" + runtime.GOARCH); !slices.Equal(got, []string{"pi-1", "pi-2"}) {
		t.Errorf("group arch_%s (keyed_groups:) = %v, want [pi-1 pi-2]", runtime.GOARCH, got)
	}
	if got, want := first.hostvars()["pi-2"]["rpi_agent_url"], agents[1].url; got != want {
		t.Errorf("pi-2's rpi_agent_url (compose:) = %v, want %s", got, want)
	}
	if entries, _ := os.ReadDir(cacheDir); len(entries) == 0 {
		t.Errorf("cache on, but %s is empty after a run", cacheDir)
	}

	// A service recorded now: the cached inventory does not have it...
	setService(t, agents[1].url, token, "cached.probe", true)
	cached := decodeInventory(t, mustRun(t, tmp, env, "ansible-inventory", "-i", inv, "--list"))
	if got := cached.hosts("cached_probe"); len(got) != 0 {
		t.Errorf("with cache on, the second run asked the agent: group cached_probe = %v", got)
	}
	// ...a run that flushes the cache (ansible-playbook --flush-cache;
	// ansible-inventory has no such flag) sees it and refreshes the cache.
	play := filepath.Join(tmp, "probe.yml")
	writeFile(t, play, "- name: Probe\n  hosts: cached_probe\n  gather_facts: false\n  tasks: []\n")
	listed := mustRun(t, tmp, env, "ansible-playbook", "-i", inv, "--flush-cache", "--list-hosts", play)
	if !regexp.MustCompile(`hosts \(1\):\s+pi-2`).MatchString(listed) {
		t.Errorf("after --flush-cache, the play on group cached_probe lists:\n%s\nwant pi-2 alone", listed)
	}
	fresh := decodeInventory(t, mustRun(t, tmp, env, "ansible-inventory", "-i", inv, "--list"))
	if got := fresh.hosts("cached_probe"); !slices.Equal(got, []string{"pi-2"}) {
		t.Errorf("after a run with --flush-cache, the cached group cached_probe = %v, want [pi-2]", got)
	}
}

// The plugin names what is wrong when no agent answers or none is given.
func TestPluginErrors(t *testing.T) {
	needTool(t, "ansible-inventory")
	tmp := t.TempDir()
	path := filepath.Join(tmp, "none.rpi.yml")
	writeFile(t, path, "plugin: rpi_cluster.pi.agent\nagents: []\n")
	_, err := run(t, tmp, ansibleEnv(tmp), "ansible-inventory", "-i", path, "--list")
	if err == nil || !strings.Contains(oneLine(err), "no agent to ask") {
		t.Errorf("no agents: %v, want an error saying there is no agent to ask", err)
	}
	// A port nothing listens on: connection refused at once.
	down := pluginFile(t, tmp, "http://127.0.0.1:1", "")
	_, err = run(t, tmp, ansibleEnv(tmp), "ansible-inventory", "-i", down, "--list")
	if err == nil || !strings.Contains(oneLine(err), "no agent answered") || !strings.Contains(oneLine(err), "127.0.0.1:1/v1/nodes") {
		t.Errorf("agent down: %v, want an error naming the agent tried", err)
	}
}

// forged is a node named name carrying n's signed record: as it is (a
// record of another node), or, with tamper, with the record's name changed
// to name and n's signature kept.
func forged(t *testing.T, n map[string]any, name string, tamper bool) map[string]any {
	t.Helper()
	f := maps.Clone(n)
	f["name"], f["self"] = name, false
	if !tamper {
		return f
	}
	rec := maps.Clone(n["signed_record"].(map[string]any))
	body, err := base64.StdEncoding.DecodeString(rec["body"].(string))
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(body, &claims); err != nil {
		t.Fatal(err)
	}
	claims["n"] = name
	body, err = json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	rec["body"] = base64.StdEncoding.EncodeToString(body)
	f["signed_record"] = rec
	return f
}

// vouched is n with the answering agent vouching for other's identity key
// instead of the one n's record carries.
func vouched(n, other map[string]any) map[string]any {
	v := maps.Clone(n)
	v["identity_key"] = other["identity_key"]
	return v
}

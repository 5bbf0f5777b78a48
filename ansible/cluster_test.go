package ansible

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// The tests run real agent processes on a random 127.x.y.0/24 with port 0,
// so two runs at once do not collide, and real Ansible commands against
// them. Nothing leaves loopback.

var (
	repoRoot      = mustAbs("..")
	collections   = filepath.Join(repoRoot, "ansible", "collections")
	collectionDir = filepath.Join(collections, "ansible_collections", "rpi_cluster", "pi")
)

func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		panic(err)
	}
	return a
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binaries builds rpi-agent and rpi-inventory once per test run.
func binaries(t *testing.T) (agent, inventory string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "rpi-ansible-test-")
		if buildErr != nil {
			return
		}
		for _, pkg := range []string{"./agent/cmd/rpi-agent", "./inventory/cmd/rpi-inventory"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(buildDir, filepath.Base(pkg)), pkg)
			cmd.Dir = repoRoot
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "rpi-agent"), filepath.Join(buildDir, "rpi-inventory")
}

// needTool skips the test when an Ansible tool is not installed.
func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s is not installed (%v): install ansible-core and ansible-lint (make deps does) to run this test", name, err)
	}
}

// ansibleEnv is the environment of the Ansible commands: this collection
// on the collections path, no RPI_ or ANSIBLE_ settings from the caller, an
// inventory source that fails to parse is an error (by default Ansible
// only warns and goes on with an empty inventory), and temp files under
// dir.
func ansibleEnv(dir string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RPI_") && !strings.HasPrefix(kv, "ANSIBLE_") {
			env = append(env, kv)
		}
	}
	return append(append(env,
		"ANSIBLE_COLLECTIONS_PATH="+collections,
		"ANSIBLE_INVENTORY_UNPARSED_FAILED=true",
		"ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED=true",
		"ANSIBLE_NOCOLOR=1",
		"ANSIBLE_RETRY_FILES_ENABLED=false",
		"ANSIBLE_LOCAL_TEMP="+filepath.Join(dir, "ansible-tmp"),
		"ANSIBLE_PYTHON_INTERPRETER=auto_silent",
	), extra...)
}

// run runs an Ansible command in dir (so no ansible.cfg of the repository
// applies) and returns its stdout; stderr is in the error.
func run(t *testing.T, dir string, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %s: %w\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), err
}

func mustRun(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	out, err := run(t, dir, env, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// agentProc is one rpi-agent process.
type agentProc struct {
	name string
	url  string
	cmd  *exec.Cmd
	out  *testutil.SyncBuffer
	done chan struct{}
}

var statusPageRE = regexp.MustCompile(`status_page=(http://[0-9.:]+)/`)

// startCluster starts n agents named pi-1... on a random loopback /24,
// all joined to the first, with API token token, and waits until each
// sees all n alive. Monitoring samples once an hour, so the figures the
// tools report stay the same while a test compares them.
func startCluster(t *testing.T, n int, token string) []*agentProc {
	t.Helper()
	bin, _ := binaries(t)
	tmp := t.TempDir()
	cfg := filepath.Join(tmp, "agent.yaml")
	writeFile(t, cfg, "monitor_interval: 1h\napi_token: "+token+"\n")
	subnet := fmt.Sprintf("127.%d.%d.", 100+rand.IntN(100), 1+rand.IntN(254))
	var procs []*agentProc
	var join string
	for i := 1; i <= n; i++ {
		ip := subnet + fmt.Sprint(i)
		p := &agentProc{name: fmt.Sprintf("pi-%d", i), out: &testutil.SyncBuffer{}, done: make(chan struct{})}
		args := []string{"--config", cfg, "--name", p.name, "--bind", ip + ":0", "--http", ip + ":0",
			"--no-mdns", "--profile", "local", "--data-dir", filepath.Join(tmp, p.name)}
		if join != "" {
			args = append(args, "--join", join)
		}
		p.cmd = exec.Command(bin, args...)
		p.cmd.Env = ansibleEnv(tmp)
		p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { p.cmd.Wait(); close(p.done) }()
		t.Cleanup(func() {
			p.stop(t)
			if t.Failed() {
				t.Logf("%s output:\n%s", p.name, p.out)
			}
		})
		testutil.WaitFor(t, 20*time.Second, func() error {
			select {
			case <-p.done:
				t.Fatalf("%s exited before it ran:\n%s", p.name, p.out)
			default:
			}
			m := statusPageRE.FindStringSubmatch(p.out.String())
			if m == nil {
				return fmt.Errorf("%s has not logged its status page yet", p.name)
			}
			p.url = m[1]
			return nil
		})
		if i == 1 {
			var self struct {
				GossipPort int `json:"gossip_port"`
			}
			getJSON(t, p.url+"/v1/self", &self)
			join = fmt.Sprintf("%s:%d", ip, self.GossipPort)
		}
		procs = append(procs, p)
	}
	for _, p := range procs {
		testutil.WaitFor(t, 30*time.Second, func() error {
			alive := 0
			for _, node := range nodes(t, p.url) {
				if node.Status == "alive" {
					alive++
				}
			}
			if alive != n {
				return fmt.Errorf("%s sees %d of %d nodes alive", p.name, alive, n)
			}
			return nil
		})
	}
	return procs
}

// stop ends the agent with SIGTERM (it leaves the cluster gracefully) and
// waits for it.
func (p *agentProc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Errorf("%s still running 15 s after SIGTERM; killed", p.name)
		p.cmd.Process.Kill()
		<-p.done
	}
}

type node struct {
	Name     string   `json:"name"`
	Status   string   `json:"status"`
	Services []string `json:"services"`
}

func nodes(t *testing.T, agentURL string) []node {
	t.Helper()
	var ns []node
	getJSON(t, agentURL+"/v1/nodes", &ns)
	return ns
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

// setService records (add) or removes a service through the agent's API.
func setService(t *testing.T, agentURL, token, service string, add bool) {
	t.Helper()
	method := http.MethodPut
	if !add {
		method = http.MethodDelete
	}
	req, err := http.NewRequest(method, agentURL+"/v1/services/"+service, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s", method, req.URL, resp.Status)
	}
}

// snapshotProxy serves one answer of agentURL's GET /v1/nodes, edited by
// edit, to every GET /v1/nodes, and passes everything else to the agent:
// two tools asked one after the other see the same cluster, to the phi.
func snapshotProxy(t *testing.T, agentURL string, edit func([]map[string]any) []map[string]any) string {
	t.Helper()
	resp, err := http.Get(agentURL + "/v1/nodes")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber() // record versions are uint64: keep every digit
	var ns []map[string]any
	err = dec.Decode(&ns)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		ns = edit(ns)
	}
	body, err := json.Marshal(ns)
	if err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(agentURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/nodes" {
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// inventoryJSON is ansible-inventory --list decoded.
type inventoryJSON map[string]any

func decodeInventory(t *testing.T, out string) inventoryJSON {
	t.Helper()
	var inv inventoryJSON
	if err := json.Unmarshal([]byte(out), &inv); err != nil {
		t.Fatalf("ansible-inventory output is not JSON: %v\n%s", err, out)
	}
	return inv
}

// hosts returns group g's hosts, sorted; "all" is every host with
// variables (ansible-inventory lists no hosts under all itself).
func (inv inventoryJSON) hosts(g string) []string {
	if g == "all" {
		return slices.Sorted(maps.Keys(inv.hostvars()))
	}
	grp, _ := inv[g].(map[string]any)
	var out []string
	for _, h := range asList(grp["hosts"]) {
		out = append(out, h.(string))
	}
	return sorted(out)
}

func (inv inventoryJSON) hostvars() map[string]map[string]any {
	meta, _ := inv["_meta"].(map[string]any)
	hv, _ := meta["hostvars"].(map[string]any)
	out := map[string]map[string]any{}
	for h, v := range hv {
		out[h], _ = v.(map[string]any)
	}
	return out
}

// groups returns the groups ansible-inventory lists as children of all.
func (inv inventoryJSON) groups() []string {
	all, _ := inv["all"].(map[string]any)
	var out []string
	for _, g := range asList(all["children"]) {
		out = append(out, g.(string))
	}
	return sorted(out)
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func indent(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// oneLine is err's text with every run of white space made one space:
// Ansible wraps its warnings to the terminal's width.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

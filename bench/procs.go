package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
)

// FootprintPlan configures the separate-process footprint run.
type FootprintPlan struct {
	// AgentBin is the rpi-agent binary.
	AgentBin string
	N        int
	// Idle is how long the cluster idles between the two /proc samples.
	Idle time.Duration
}

// ProcSample is one agent's footprint.
type ProcSample struct {
	Name string
	// RSS is VmRSS in bytes after the idle period: RSSAnon (heap, stacks,
	// runtime) plus RSSFile (the binary's mapped pages, clean and shared
	// with the page cache).
	RSS, RSSAnon, RSSFile uint64
	// CPU is the percentage of one core used during the idle period.
	CPU float64
}

// FootprintResult holds one sample per agent.
type FootprintResult struct {
	Plan    FootprintPlan
	Samples []ProcSample
	Err     error
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture the project builds for.
const clockTicks = 100

// RunFootprint starts N rpi-agent processes on 127.0.9.201 and up with a
// static join to the first, waits until the first sees all alive, lets
// them idle and reads their RSS and CPU time from /proc. The processes are
// stopped when it returns, including when ctx is cancelled, and die with
// this process if it is killed (Pdeathsig).
func RunFootprint(ctx context.Context, plan FootprintPlan, logger *slog.Logger) FootprintResult {
	res := FootprintResult{Plan: plan}
	dir, err := os.MkdirTemp("", "rpi-bench-footprint-")
	if err != nil {
		res.Err = fmt.Errorf("footprint: %w", err)
		return res
	}
	defer os.RemoveAll(dir)
	key := NewKey()
	ip := func(i int) string { return fmt.Sprintf("127.0.9.%d", 201+i) }

	var cmds []*exec.Cmd
	defer func() {
		for _, c := range cmds {
			c.Process.Signal(syscall.SIGTERM)
		}
		// An agent leaves within 5 s of SIGTERM; one that does not is killed.
		t := time.AfterFunc(15*time.Second, func() {
			for _, c := range cmds {
				c.Process.Kill()
			}
		})
		defer t.Stop()
		for _, c := range cmds {
			c.Wait()
		}
	}()
	for i := range plan.N {
		name := fmt.Sprintf("bench-%d", i)
		cmd, _, err := AgentCommand(plan.AgentBin, filepath.Join(dir, name), name, ip(i), "lan", key, []string{ip(0) + ":7946"})
		if err != nil {
			res.Err = fmt.Errorf("footprint: %w", err)
			return res
		}
		if err := cmd.Start(); err != nil {
			res.Err = fmt.Errorf("footprint: start %s: %w", plan.AgentBin, err)
			return res
		}
		cmds = append(cmds, cmd)
		res.Samples = append(res.Samples, ProcSample{Name: name})
	}
	url := "http://" + ip(0) + ":8080"
	err = poll(ctx, 60*time.Second, 200*time.Millisecond, func() error {
		for _, c := range cmds {
			if c.ProcessState != nil {
				return errors.New("an agent exited")
			}
		}
		n, err := aliveAt(ctx, url)
		if err != nil {
			return err
		}
		if n < plan.N {
			return fmt.Errorf("%s sees %d of %d agents alive", ip(0), n, plan.N)
		}
		return nil
	})
	if err != nil {
		res.Err = fmt.Errorf("footprint: cluster of %d agents: %w", plan.N, err)
		return res
	}
	logger.Info("footprint cluster formed", "agents", plan.N, "idle", plan.Idle)
	cpu0 := make([]uint64, len(cmds))
	for i, c := range cmds {
		if cpu0[i], err = procCPUTicks(c.Process.Pid); err != nil {
			res.Err = fmt.Errorf("footprint: %w", err)
			return res
		}
	}
	t0 := time.Now()
	if err := sleepCtx(ctx, plan.Idle); err != nil {
		res.Err = err
		return res
	}
	el := time.Since(t0).Seconds()
	for i, c := range cmds {
		cpu1, err := procCPUTicks(c.Process.Pid)
		if err != nil {
			res.Err = fmt.Errorf("footprint: %w", err)
			return res
		}
		mem, err := ProcRSS(c.Process.Pid)
		if err != nil {
			res.Err = fmt.Errorf("footprint: %w", err)
			return res
		}
		res.Samples[i].RSS = mem["VmRSS"]
		res.Samples[i].RSSAnon = mem["RssAnon"]
		res.Samples[i].RSSFile = mem["RssFile"]
		res.Samples[i].CPU = 100 * float64(cpu1-cpu0[i]) / clockTicks / el
	}
	return res
}

// aliveAt returns how many nodes the agent at base lists alive.
func aliveAt(ctx context.Context, base string) (int, error) {
	cl, err := client.New(base, "")
	if err != nil {
		return 0, err
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	nodes, err := cl.Nodes(rctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, nd := range nodes {
		if nd.Status == apitypes.StatusAlive {
			n++
		}
	}
	return n, nil
}

// NewKey returns a random gossip key, base64 as --encrypt takes it.
func NewKey() string {
	key := make([]byte, 32)
	rand.Read(key)
	return base64.StdEncoding.EncodeToString(key)
}

// AgentCommand returns an rpi-agent command for one benchmark or test agent: no
// config file, no mDNS, its own data directory (created) and HOME, stderr
// kept (first 8 KB), killed if this process dies.
func AgentCommand(bin, data, name, ip, profile, key string, joins []string) (*exec.Cmd, *LimitedWriter, error) {
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, nil, err
	}
	args := []string{"--config", "/dev/null", "--name", name,
		"--bind", ip + ":7946", "--http", ip + ":8080",
		"--no-mdns", "--profile", profile, "--data-dir", data, "--log-level", "warn", "--encrypt", key}
	for _, j := range joins {
		args = append(args, "--join", j)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+data)
	stderr := &LimitedWriter{b: &bytes.Buffer{}, n: 8 << 10}
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd, stderr, nil
}

// procCPUTicks returns utime+stime of pid in clock ticks.
func procCPUTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu time: %w", err)
	}
	// The command name (field 2) may hold spaces; fields after it are
	// plain. utime and stime are fields 14 and 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return ut + st, nil
}

// ProcRSS returns VmRSS, RssAnon and RssFile of pid in bytes.
func ProcRSS(pid int) (map[string]uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, fmt.Errorf("read rss: %w", err)
	}
	return parseRSS(pid, string(b))
}

// parseRSS reads the resident-memory lines of a /proc/PID/status text.
func parseRSS(pid int, status string) (map[string]uint64, error) {
	want := []string{"VmRSS", "RssAnon", "RssFile"}
	out := make(map[string]uint64, len(want))
	for _, line := range strings.Split(status, "\n") {
		key, v, ok := strings.Cut(line, ":")
		if !ok || !slices.Contains(want, key) {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return nil, fmt.Errorf("parse /proc/%d/status: %s %q", pid, key, v)
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("parse /proc/%d/status: %w", pid, err)
		}
		out[key] = kb << 10
	}
	for _, k := range want {
		if _, ok := out[k]; !ok {
			return nil, fmt.Errorf("parse /proc/%d/status: no %s", pid, k)
		}
	}
	return out, nil
}

// LimitedWriter keeps the first n bytes written to it. It is safe to read
// with String while a process writes to it.
type LimitedWriter struct {
	mu sync.Mutex
	b  *bytes.Buffer
	n  int
}

func (w *LimitedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if room := w.n - w.b.Len(); room > 0 {
		w.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// String returns what was kept.
func (w *LimitedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// InventoryPlan configures the rpi-inventory timing.
type InventoryPlan struct {
	// InventoryBin is the rpi-inventory binary.
	InventoryBin string
	Sizes        []int
	Runs         int
}

// InventoryResult is the wall times of one size.
type InventoryResult struct {
	N     int
	Times []time.Duration
	Err   error
}

// RunInventory times `rpi-inventory --list` against an in-process server
// answering /v1/nodes with N canned nodes: whole process wall time,
// start-up included. Every run's output must list all N hosts.
func RunInventory(ctx context.Context, plan InventoryPlan) []InventoryResult {
	var out []InventoryResult
	for _, n := range plan.Sizes {
		out = append(out, runInventory(ctx, plan, n))
	}
	return out
}

func runInventory(ctx context.Context, plan InventoryPlan, n int) InventoryResult {
	res := InventoryResult{N: n}
	body, err := json.Marshal(CannedNodes(n))
	if err != nil {
		res.Err = err
		return res
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/nodes":
			w.Write(body)
		case "/healthz":
			io.WriteString(w, `{"status":"ok"}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	home, err := os.MkdirTemp("", "rpi-bench-inventory-")
	if err != nil {
		res.Err = err
		return res
	}
	defer os.RemoveAll(home)
	for i := range plan.Runs {
		cmd := exec.CommandContext(ctx, plan.InventoryBin, "--list", "--agent", srv.URL)
		cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &LimitedWriter{b: &stderr, n: 4 << 10}
		t0 := time.Now()
		err := cmd.Run()
		d := time.Since(t0)
		if err != nil {
			res.Err = fmt.Errorf("rpi-inventory --list at %d nodes, run %d: %w: %s", n, i+1, err, strings.TrimSpace(stderr.String()))
			return res
		}
		var inv struct {
			Meta struct {
				Hostvars map[string]json.RawMessage `json:"hostvars"`
			} `json:"_meta"`
		}
		if err := json.Unmarshal(stdout.Bytes(), &inv); err != nil {
			res.Err = fmt.Errorf("rpi-inventory --list at %d nodes: output is not inventory JSON: %w", n, err)
			return res
		}
		if len(inv.Meta.Hostvars) != n {
			res.Err = fmt.Errorf("rpi-inventory --list at %d nodes: listed %d hosts", n, len(inv.Meta.Hostvars))
			return res
		}
		res.Times = append(res.Times, d)
	}
	return res
}

// CannedNodes returns n plausible alive nodes as /v1/nodes serves them.
func CannedNodes(n int) []apitypes.Node {
	nodes := make([]apitypes.Node, n)
	for i := range nodes {
		temp := 40 + float64(i%20)
		svcs := []string{}
		if i%3 == 0 {
			svcs = append(svcs, "nginx_webserver")
		}
		nodes[i] = apitypes.Node{
			Name: fmt.Sprintf("pi-%04d", i), Address: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255),
			GossipPort: 7946, HTTPPort: 8080, Status: "alive", Services: svcs,
			Monitoring: apitypes.Monitoring{CPUs: 4, CPUPercent: float64(i % 100), MemTotal: 4 << 30, MemUsed: 1 << 30,
				Load1: 0.5, Load5: 0.4, Load15: 0.3, TempC: &temp, DiskUsedPercent: 31, UptimeS: 86400, SampledAt: time.Now().UTC()},
			PhiThreshold: 8, Version: "bench", Arch: "arm64", Model: "Raspberry Pi 4 Model B Rev 1.4",
			RecordVersion: uint64(i + 1), Self: i == 0,
		}
	}
	slices.SortFunc(nodes, func(a, b apitypes.Node) int { return strings.Compare(a.Name, b.Name) })
	return nodes
}

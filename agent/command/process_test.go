package command

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// Process tests run the real rpi-agent command line in a child process: the
// test binary itself, which runs App instead of the tests when runAgentEnv
// is set. They use 127.0.4.0/24 and port 0.
const runAgentEnv = "RPI_AGENT_TEST_RUN_AGENT"

func TestMain(m *testing.M) {
	if os.Getenv(runAgentEnv) == "1" {
		// What agent/cmd/rpi-agent's main does.
		if err := App().Run(append([]string{"rpi-agent"}, os.Args[1:]...)); err != nil {
			fmt.Fprintln(os.Stderr, "rpi-agent:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// agentProc is an rpi-agent child process.
type agentProc struct {
	cmd    *exec.Cmd
	stderr *testutil.SyncBuffer
	done   chan struct{}
	err    error // the exit, once done is closed
}

// startAgentProc runs rpi-agent with args in a child process, its
// environment cleared of RPI_ settings. The process is killed at the end
// of the test if it is still running.
func startAgentProc(t *testing.T, args ...string) *agentProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{runAgentEnv + "=1"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RPI_") {
			env = append(env, kv)
		}
	}
	p := &agentProc{stderr: &testutil.SyncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(exe, args...)
	p.cmd.Env = env
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test
	p.cmd.Stdout = p.stderr
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		t.Logf("rpi-agent %v output:\n%s", args, p.stderr)
	})
	return p
}

// wait waits up to timeout for the process to exit and returns its exit
// error; it fails the test if the process is still running.
func (p *agentProc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("rpi-agent still running after %v; output:\n%s", timeout, p.stderr)
		return nil
	}
}

var statusPageRE = regexp.MustCompile(`status_page=(http://[0-9.:]+)/`)

// url waits until the agent logs that it runs and returns its API's base
// URL.
func (p *agentProc) url(t *testing.T) string {
	t.Helper()
	var base string
	testutil.WaitFor(t, 20*time.Second, func() error {
		select {
		case <-p.done:
			t.Fatalf("rpi-agent exited (%v) before it ran:\n%s", p.err, p.stderr)
		default:
		}
		m := statusPageRE.FindStringSubmatch(p.stderr.String())
		if m == nil {
			return errors.New("rpi-agent has not logged its status page yet")
		}
		base = m[1]
		return nil
	})
	return base
}

// agentArgs are the arguments of a loopback agent on 127.0.4.<i> using
// config file cfg and data directory dir.
func agentArgs(i int, cfg, dir string) []string {
	ip := "127.0.4." + strconv.Itoa(i)
	return []string{"--config", cfg, "--name", "proc-" + strconv.Itoa(i), "--bind", ip + ":0", "--http", ip + ":0",
		"--no-mdns", "--data-dir", dir, "--profile", "local"}
}

func writeConfig(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Acceptance: a second rpi-agent on a data dir in use exits non-zero,
// naming the lock and the first agent's PID, while the first keeps serving.
func TestSecondAgentProcessOnDataDirExits(t *testing.T) {
	tmp := t.TempDir()
	cfg, dir := filepath.Join(tmp, "agent.yaml"), filepath.Join(tmp, "data")
	writeConfig(t, cfg, "ssh_host_keys: ''\n")

	first := startAgentProc(t, agentArgs(1, cfg, dir)...)
	base := first.url(t)

	second := startAgentProc(t, agentArgs(2, cfg, dir)...)
	err := second.wait(t, 20*time.Second)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("second agent: exit %v, want a non-zero exit status", err)
	}
	out := second.stderr.String()
	lock := filepath.Join(dir, "agent.lock")
	for _, want := range []string{"is in use by another rpi-agent", "pid " + strconv.Itoa(first.cmd.Process.Pid), lock} {
		if !strings.Contains(out, want) {
			t.Errorf("second agent's output does not say %q:\n%s", want, out)
		}
	}

	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatalf("first agent stopped answering: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("first agent's /healthz: %d", resp.StatusCode)
	}

	first.cmd.Process.Signal(syscall.SIGTERM)
	if err := first.wait(t, 20*time.Second); err != nil {
		t.Fatalf("first agent's exit after SIGTERM: %v", err)
	}
	// The lock went with it: a new agent on the directory starts.
	third := startAgentProc(t, agentArgs(3, cfg, dir)...)
	third.url(t)
}

// put sends PUT base/v1/services/x with token and returns the status.
func put(t *testing.T, base, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, base+"/v1/services/x", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// SIGHUP re-reads the config file: a new api_token takes over at once; a
// file that does not validate changes nothing and the agent says so; a
// setting fixed at start is named as needing a restart.
func TestSIGHUPReloadsToken(t *testing.T) {
	tmp := t.TempDir()
	cfg, dir := filepath.Join(tmp, "agent.yaml"), filepath.Join(tmp, "data")
	writeConfig(t, cfg, "ssh_host_keys: ''\napi_token: first-token\n")
	p := startAgentProc(t, agentArgs(4, cfg, dir)...)
	base := p.url(t)
	if code := put(t, base, "first-token"); code != http.StatusOK {
		t.Fatalf("first token: %d", code)
	}

	writeConfig(t, cfg, "ssh_host_keys: ''\napi_token: second-token\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if code := put(t, base, "second-token"); code != http.StatusOK {
			return fmt.Errorf("new token after SIGHUP: %d, want 200", code)
		}
		return nil
	})
	if code := put(t, base, "first-token"); code != http.StatusUnauthorized {
		t.Errorf("old token after SIGHUP: %d, want 401", code)
	}

	// Broken: NaN threshold. Nothing applies, and the log says why.
	writeConfig(t, cfg, "ssh_host_keys: ''\napi_token: third-token\nphi_threshold: .nan\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if !strings.Contains(p.stderr.String(), "configuration not applied") {
			return errors.New("no log line saying the configuration was not applied")
		}
		return nil
	})
	if !strings.Contains(p.stderr.String(), "phi_threshold") {
		t.Errorf("the refusal does not name phi_threshold:\n%s", p.stderr)
	}
	if put(t, base, "third-token") != http.StatusUnauthorized || put(t, base, "second-token") != http.StatusOK {
		t.Error("an invalid config file changed the token")
	}

	// A cluster name from the file needs a restart: logged, token applied.
	writeConfig(t, cfg, "ssh_host_keys: ''\napi_token: fourth-token\ncluster: other\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if code := put(t, base, "fourth-token"); code != http.StatusOK {
			return fmt.Errorf("fourth token: %d", code)
		}
		return nil
	})
	testutil.WaitFor(t, 10*time.Second, func() error {
		for l := range strings.Lines(p.stderr.String()) {
			if strings.Contains(l, "restart") && strings.Contains(l, "cluster") {
				return nil
			}
		}
		return errors.New("no log line naming cluster as needing a restart")
	})

	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(t, 20*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

// SIGHUP with the token given by --api-token: the flag outranks the config
// file, so a new api_token in the file is not applied, and the agent says
// so (once per reload) instead of keeping the flag's token silently.
func TestSIGHUPSaysTheTokenFlagWins(t *testing.T) {
	tmp := t.TempDir()
	cfg, dir := filepath.Join(tmp, "agent.yaml"), filepath.Join(tmp, "data")
	writeConfig(t, cfg, "ssh_host_keys: ''\napi_token: file-token-1\n")
	p := startAgentProc(t, append(agentArgs(5, cfg, dir), "--api-token", "flag-token")...)
	base := p.url(t)
	if code := put(t, base, "flag-token"); code != http.StatusOK {
		t.Fatalf("the flag's token: %d, want 200", code)
	}

	writeConfig(t, cfg, "ssh_host_keys: ''\napi_token: file-token-2\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	var line string
	testutil.WaitFor(t, 10*time.Second, func() error {
		for l := range strings.Lines(p.stderr.String()) {
			if strings.Contains(l, "reload:") && strings.Contains(l, "api token is not applied") {
				line = l
				return nil
			}
		}
		return errors.New("no log line saying the config file's token is not applied")
	})
	for _, want := range []string{"--api-token", "outrank the config file", "ignored=api_token"} {
		if !strings.Contains(line, want) {
			t.Errorf("the reload log line does not say %q:\n%s", want, line)
		}
	}
	if put(t, base, "flag-token") != http.StatusOK || put(t, base, "file-token-2") != http.StatusUnauthorized {
		t.Error("the token changed although --api-token gives it")
	}

	// The same file again: still said, once for this reload.
	p.cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := strings.Count(p.stderr.String(), "api token is not applied"); n != 2 {
			return fmt.Errorf("%d log lines about the token after two reloads, want 2", n)
		}
		return nil
	})

	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(t, 20*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

package launcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// DefaultMaxCapture is how much of a run's output Runner keeps by default.
const DefaultMaxCapture = 1 << 20

// Runner runs ansible-playbook. It is the one place the tools start Ansible:
// explicit environment, output streamed to the user while a bounded tail is
// kept, and per-host results read from the PLAY RECAP that ansible-core's
// default stdout callback prints (so no extra collection is needed).
// Host-key checking is left as configured: the runner never turns it off.
type Runner struct {
	// Path is the ansible-playbook executable; empty means "ansible-playbook"
	// from PATH.
	Path string
	// Env is the complete environment of the run; nil means the current
	// process's. The runner adds ANSIBLE_STDOUT_CALLBACK=default (the recap
	// it parses) and ANSIBLE_RETRY_FILES_ENABLED=False.
	Env []string
	// Dir is the working directory; empty means the current one.
	Dir string
	// Stdout and Stderr receive Ansible's output as it is written; nil
	// discards it.
	Stdout, Stderr io.Writer
	// MaxCapture bounds the output kept in RunResult.Output (the tail);
	// 0 means DefaultMaxCapture.
	MaxCapture int
}

// RunSpec is one ansible-playbook invocation.
type RunSpec struct {
	Playbook  string
	Inventory string
	// Limit restricts the run to these hosts (--limit).
	Limit []string
	// ExtraVars are passed as one JSON -e argument.
	ExtraVars map[string]any
	// Args are passed to ansible-playbook before the playbook (the user's
	// arguments after "--").
	Args []string
}

// HostStats is one host's line of the PLAY RECAP.
type HostStats struct {
	OK, Changed, Unreachable, Failed, Skipped, Rescued, Ignored int
}

// RunResult is the outcome of a run.
type RunResult struct {
	// Hosts are the per-host results from the PLAY RECAP, summed over
	// recaps if the playbook printed several.
	Hosts map[string]HostStats
	// ExitCode is ansible-playbook's exit status.
	ExitCode int
	// Output is the tail of stdout and stderr, at most MaxCapture bytes.
	Output string
}

// Succeeded reports whether host appears in the recap with no failed and no
// unreachable tasks. A host missing from the recap did not succeed.
func (r *RunResult) Succeeded(host string) bool {
	s, ok := r.Hosts[host]
	return ok && s.Failed == 0 && s.Unreachable == 0
}

// Run runs spec and waits for it. A playbook that fails on some hosts is not
// an error: read the per-host results. The error is for runs that could not
// start, were cancelled, or ended without a recap.
func (r *Runner) Run(ctx context.Context, spec RunSpec) (*RunResult, error) {
	path := r.Path
	if path == "" {
		path = "ansible-playbook"
	}
	args := []string{"-i", spec.Inventory}
	// Ansible reads --limit as patterns: "all", "a,b", "web:&db" select
	// other hosts than the ones named, so only node names pass.
	for _, h := range spec.Limit {
		if err := apitypes.ValidateNodeName(h); err != nil {
			return nil, fmt.Errorf("run %s: --limit: %w", spec.Playbook, err)
		}
	}
	if len(spec.Limit) > 0 {
		args = append(args, "--limit", strings.Join(spec.Limit, ","))
	}
	if len(spec.ExtraVars) > 0 {
		ev, err := json.Marshal(spec.ExtraVars)
		if err != nil {
			return nil, fmt.Errorf("run %s: encode extra vars: %w", spec.Playbook, err)
		}
		args = append(args, "-e", string(ev))
	}
	args = append(args, spec.Args...)
	args = append(args, spec.Playbook)

	env := r.Env
	if env == nil {
		env = os.Environ()
	}
	env = setEnv(env, "ANSIBLE_STDOUT_CALLBACK", "default")
	env = setEnv(env, "ANSIBLE_RETRY_FILES_ENABLED", "False")

	limit := r.MaxCapture
	if limit <= 0 {
		limit = DefaultMaxCapture
	}
	tail := &tailBuffer{max: limit}
	recap := &recapParser{hosts: map[string]HostStats{}}

	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = env
	cmd.Dir = r.Dir
	cmd.Stdout = io.MultiWriter(orDiscard(r.Stdout), tail, recap)
	cmd.Stderr = io.MultiWriter(orDiscard(r.Stderr), tail)
	// On cancellation let Ansible stop its workers cleanly, then kill.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 10 * time.Second

	err := cmd.Run()
	recap.flush()
	res := &RunResult{Hosts: recap.hosts, Output: tail.String()}
	if ctx.Err() != nil {
		return res, fmt.Errorf("run %s: %w", spec.Playbook, ctx.Err())
	}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		res.ExitCode = exit.ExitCode()
	case err != nil:
		return res, fmt.Errorf("run %s: %w (is ansible-core installed? set --ansible-playbook)", spec.Playbook, err)
	}
	if !recap.seen {
		return res, fmt.Errorf("run %s: ansible-playbook exited %d without a PLAY RECAP; output ends:\n%s", spec.Playbook, res.ExitCode, lastLines(res.Output, 20))
	}
	return res, nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// setEnv returns env with key set to value, replacing any earlier value.
func setEnv(env []string, key, value string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return append(out, key+"="+value)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var (
	ansiRE  = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)
	recapRE = regexp.MustCompile(`^(\S+)\s+:\s+((?:[a-z]+=\d+\s*)+)$`)
	statRE  = regexp.MustCompile(`([a-z]+)=(\d+)`)
)

// recapParser reads PLAY RECAP blocks from a stream, line by line, so the
// results survive however long the output is.
type recapParser struct {
	partial []byte
	inRecap bool
	seen    bool
	hosts   map[string]HostStats
}

func (p *recapParser) Write(b []byte) (int, error) {
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		p.line(string(p.partial[:i]))
		p.partial = p.partial[i+1:]
	}
	return len(b), nil
}

func (p *recapParser) flush() {
	if len(p.partial) > 0 {
		p.line(string(p.partial))
		p.partial = nil
	}
}

func (p *recapParser) line(l string) {
	l = strings.TrimSpace(ansiRE.ReplaceAllString(l, ""))
	if strings.HasPrefix(l, "PLAY RECAP") {
		p.inRecap, p.seen = true, true
		return
	}
	if !p.inRecap {
		return
	}
	m := recapRE.FindStringSubmatch(l)
	if m == nil {
		if l != "" {
			p.inRecap = false
		}
		return
	}
	s := p.hosts[m[1]]
	for _, kv := range statRE.FindAllStringSubmatch(m[2], -1) {
		v, _ := strconv.Atoi(kv[2])
		switch kv[1] {
		case "ok":
			s.OK += v
		case "changed":
			s.Changed += v
		case "unreachable":
			s.Unreachable += v
		case "failed":
			s.Failed += v
		case "skipped":
			s.Skipped += v
		case "rescued":
			s.Rescued += v
		case "ignored":
			s.Ignored += v
		}
	}
	p.hosts[m[1]] = s
}

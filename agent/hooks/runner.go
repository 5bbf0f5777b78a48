package hooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults of Config.
const (
	DefaultTimeout   = 30 * time.Second
	DefaultMaxOutput = 8 << 10
	DefaultQueueSize = 128
	DefaultShell     = "/bin/sh"
)

// waitDelay bounds the wait for a command's output pipes after it exited
// or was killed: a child that left the process group can hold them open.
const waitDelay = 2 * time.Second

// Config configures a Runner.
type Config struct {
	// Hooks are run in order for every event they match.
	Hooks []Hook
	// Timeout bounds each run; the command's process group is killed when
	// it is reached. 0: DefaultTimeout.
	Timeout time.Duration
	// MaxOutput bounds the stdout and stderr captured per run; the rest is
	// dropped and counted. 0: DefaultMaxOutput.
	MaxOutput int
	// QueueSize bounds the events waiting to be handled. 0:
	// DefaultQueueSize.
	QueueSize int
	// Shell runs each command as Shell -c COMMAND. Empty: DefaultShell.
	Shell string
	// SelfName and Cluster are passed to every command as RPI_SELF_NAME
	// and RPI_CLUSTER.
	SelfName string
	Cluster  string
	// Logger receives one line per run. Nil discards.
	Logger *slog.Logger
}

// Result is the outcome of one run.
type Result struct {
	Hook Hook
	// ExitCode is the command's exit status; -1 when it did not start or
	// was killed.
	ExitCode int
	Duration time.Duration
	// Output is the start of stdout and stderr, interleaved, at most
	// MaxOutput bytes; OutputDropped counts the bytes beyond.
	Output        []byte
	OutputDropped int64
	// TimedOut is set when the run was killed for overrunning Timeout.
	TimedOut bool
	// Err is nil when the command exited 0.
	Err error
}

// Stats count what a Runner did.
type Stats struct {
	// Queued and Dropped count events Submit accepted or dropped because
	// the queue was full.
	Queued  uint64
	Dropped uint64
	// Runs and Failures count commands run and those that did not exit 0.
	Runs     uint64
	Failures uint64
}

// Runner runs hooks for events. Create it with New, Start its worker,
// Submit events, Shutdown when done. Run executes hooks synchronously and
// needs no worker. All methods are safe for concurrent use.
type Runner struct {
	conf   Config
	logger *slog.Logger
	queue  chan Event

	// filterMu guards the per-node state that turns raw membership events
	// into the ones hooks see (see Submit).
	filterMu sync.Mutex
	digests  map[string]string
	pending  map[string]Event

	queued, dropped, runs, failures atomic.Uint64

	lifeMu     sync.Mutex
	started    bool
	stopped    bool
	ctx        context.Context
	cancel     context.CancelFunc
	shutdownCh chan struct{}
	wg         sync.WaitGroup
}

// New validates conf and builds a Runner. An invalid hook is an error that
// names it by position.
func New(conf Config) (*Runner, error) {
	for i, h := range conf.Hooks {
		if err := h.Validate(); err != nil {
			return nil, fmt.Errorf("event handler %d (%s): %w", i+1, h.Command, err)
		}
	}
	if conf.Timeout <= 0 {
		conf.Timeout = DefaultTimeout
	}
	if conf.MaxOutput <= 0 {
		conf.MaxOutput = DefaultMaxOutput
	}
	if conf.QueueSize <= 0 {
		conf.QueueSize = DefaultQueueSize
	}
	if conf.Shell == "" {
		conf.Shell = DefaultShell
	}
	conf.Hooks = slices.Clone(conf.Hooks)
	logger := conf.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Runner{
		conf:       conf,
		logger:     logger,
		queue:      make(chan Event, conf.QueueSize),
		digests:    make(map[string]string),
		pending:    make(map[string]Event),
		ctx:        ctx,
		cancel:     cancel,
		shutdownCh: make(chan struct{}),
	}, nil
}

// Start starts the worker that runs queued events one at a time. It does
// nothing after Shutdown or when already started.
func (r *Runner) Start() {
	r.lifeMu.Lock()
	defer r.lifeMu.Unlock()
	if r.started || r.stopped {
		return
	}
	r.started = true
	r.wg.Add(1)
	go r.work()
}

// Shutdown stops the worker, killing a command still running, and drops
// what is queued. It is safe to call more than once.
func (r *Runner) Shutdown() {
	r.lifeMu.Lock()
	if r.stopped {
		r.lifeMu.Unlock()
		return
	}
	r.stopped = true
	close(r.shutdownCh)
	r.cancel()
	r.lifeMu.Unlock()
	r.wg.Wait()
}

// Stats returns the counters.
func (r *Runner) Stats() Stats {
	return Stats{Queued: r.queued.Load(), Dropped: r.dropped.Load(), Runs: r.runs.Load(), Failures: r.failures.Load()}
}

func (r *Runner) work() {
	defer r.wg.Done()
	for {
		select {
		case <-r.shutdownCh:
			return
		case ev := <-r.queue:
			r.Run(r.ctx, ev)
		}
	}
}

// Submit queues ev for the worker without blocking; it returns false when
// the event was dropped because the queue is full or the Runner is shut
// down. Events no hook wants are not queued (and return true).
//
// Submit also shapes the raw membership stream into what a hook author
// expects. A join reported before the node's record arrived (so without
// its services) is held back and delivered as member-join when the record
// comes, instead of a join without services followed by an update. An
// update is delivered only when something a hook can see changed — the
// address, ports or services — not for every monitoring sample; the first
// update of a node never joined (this node itself) only sets the baseline.
// Submit is meant to be called from one goroutine, in event order.
func (r *Runner) Submit(ev Event) bool {
	select {
	case <-r.shutdownCh:
		return false
	default:
	}
	ev, ok := r.shape(ev)
	if !ok || !r.wanted(ev) {
		return true
	}
	select {
	case r.queue <- ev:
		r.queued.Add(1)
		return true
	default:
		n := r.dropped.Add(1)
		if n == 1 || n%100 == 0 {
			r.logger.Warn("event handler queue full, dropping events: handlers are too slow for the event rate",
				"event", ev.Type, "node", ev.Node.Name, "dropped", n, "queue", cap(r.queue))
		}
		return false
	}
}

// shape applies the join and update rules of Submit; false drops ev.
func (r *Runner) shape(ev Event) (Event, bool) {
	name := ev.Node.Name
	r.filterMu.Lock()
	defer r.filterMu.Unlock()
	switch ev.Type {
	case MemberJoin:
		if !ev.HasRecord {
			r.pending[name] = ev
			return ev, false
		}
		delete(r.pending, name)
		r.digests[name] = ev.Node.digest()
		return ev, true
	case MemberUpdate:
		if join, ok := r.pending[name]; ok {
			if !ev.HasRecord {
				return ev, false
			}
			delete(r.pending, name)
			ev.Type, ev.Time = MemberJoin, join.Time
			r.digests[name] = ev.Node.digest()
			return ev, true
		}
		d := ev.Node.digest()
		prev, known := r.digests[name]
		r.digests[name] = d
		return ev, known && prev != d
	case MemberLeave, MemberFailed, MemberReap:
		delete(r.pending, name)
		delete(r.digests, name)
		return ev, true
	}
	return ev, false
}

func (r *Runner) wanted(ev Event) bool {
	for _, h := range r.conf.Hooks {
		if h.Matches(ev) {
			return true
		}
	}
	return false
}

// Run runs every hook matching ev, in order, one after the other, and
// returns their results. Cancelling ctx kills the running command.
func (r *Runner) Run(ctx context.Context, ev Event) []Result {
	var results []Result
	for _, h := range r.conf.Hooks {
		if !h.Matches(ev) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		res := r.runOne(ctx, h, ev)
		r.log(res, ev)
		results = append(results, res)
	}
	return results
}

// payload is the JSON written to a command's stdin.
type payload struct {
	Event   string    `json:"event"`
	Node    Node      `json:"node"`
	Self    string    `json:"self"`
	Cluster string    `json:"cluster"`
	Time    time.Time `json:"time"`
}

func (r *Runner) runOne(ctx context.Context, h Hook, ev Event) Result {
	res := Result{Hook: h, ExitCode: -1}
	node := ev.Node
	if node.Services == nil {
		node.Services = []string{}
	}
	stdin, err := json.Marshal(payload{Event: ev.Type, Node: node, Self: r.conf.SelfName, Cluster: r.conf.Cluster, Time: ev.Time})
	if err != nil {
		res.Err = fmt.Errorf("run event handler: encode event: %w", err)
		return res
	}

	ctx, cancel := context.WithTimeout(ctx, r.conf.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.conf.Shell, "-c", h.Command)
	cmd.Env = r.env(ev)
	cmd.Stdin = strings.NewReader(string(stdin))
	out := &boundedBuffer{max: r.conf.MaxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so a timeout kills what the script started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = waitDelay

	start := time.Now()
	err = cmd.Run()
	res.Duration = time.Since(start)
	res.Output, res.OutputDropped = out.result()
	if cmd.ProcessState != nil {
		res.ExitCode = cmd.ProcessState.ExitCode()
	}
	r.runs.Add(1)
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		res.TimedOut = true
		res.ExitCode = -1
		res.Err = fmt.Errorf("run event handler %q: killed after %v: %w", h.Command, r.conf.Timeout, ctx.Err())
	case err != nil:
		res.Err = fmt.Errorf("run event handler %q: %w", h.Command, err)
	}
	if res.Err != nil {
		r.failures.Add(1)
	}
	return res
}

// env is the agent's environment without its own RPI_* variables (which
// may hold the gossip key or the API token), plus the event's.
func (r *Runner) env(ev Event) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RPI_") {
			env = append(env, kv)
		}
	}
	n := ev.Node
	return append(env,
		"RPI_EVENT="+ev.Type,
		"RPI_NODE_NAME="+n.Name,
		"RPI_NODE_ADDR="+n.Address,
		"RPI_NODE_GOSSIP_PORT="+strconv.Itoa(n.GossipPort),
		"RPI_NODE_HTTP_PORT="+strconv.Itoa(n.HTTPPort),
		"RPI_NODE_STATUS="+n.Status,
		"RPI_NODE_SERVICES="+strings.Join(n.Services, ","),
		"RPI_SELF_NAME="+r.conf.SelfName,
		"RPI_CLUSTER="+r.conf.Cluster,
	)
}

func (r *Runner) log(res Result, ev Event) {
	attrs := []any{
		"event", ev.Type, "node", ev.Node.Name, "command", res.Hook.Command,
		"exit_code", res.ExitCode, "duration", res.Duration.Round(time.Millisecond),
		"output", string(res.Output),
	}
	if res.OutputDropped > 0 {
		attrs = append(attrs, "output_dropped_bytes", res.OutputDropped)
	}
	switch {
	case res.TimedOut:
		r.logger.Warn("event handler timed out; its process group was killed", attrs...)
	case res.Err != nil:
		r.logger.Warn("event handler failed", append(attrs, "err", res.Err)...)
	default:
		r.logger.Info("event handler ran", attrs...)
	}
}

// boundedBuffer keeps the first max bytes written and counts the rest.
// The command's stdout and stderr share one, written from two goroutines.
type boundedBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped int64
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.max - len(b.buf)
	if room >= len(p) {
		b.buf = append(b.buf, p...)
	} else {
		b.buf = append(b.buf, p[:max(room, 0)]...)
		b.dropped += int64(len(p) - max(room, 0))
	}
	return len(p), nil
}

func (b *boundedBuffer) result() ([]byte, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf...), b.dropped
}

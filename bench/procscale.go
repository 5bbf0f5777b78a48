package bench

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
)

// ProcScalePlan configures the separate-process rows: N real rpi-agent
// processes on loopback, each with its own runtime, collector and threads,
// as each Pi has. In one process a collection or a late timer holds up
// every node at once; here a node is late on its own, as on real boards.
type ProcScalePlan struct {
	// AgentBin is the rpi-agent binary.
	AgentBin string
	// Profile is the agent's --profile.
	Profile string
	N       int
	// Trials is the number of join and detection trials; each joins one
	// new agent and then kills (SIGKILL) one random agent, so the size
	// stays N.
	Trials int
	// Idle is the window over which gossip bytes are counted.
	Idle time.Duration
	// StartEvery spaces the agents' starts (0: all at once). Started
	// together, 100 agents' start-up work lands on this machine's two
	// cores at once, which no cluster of boards has to share.
	StartEvery time.Duration
	// Net is the second octet of the agents' addresses, 127.Net.x.y, so
	// contenders never share an address.
	Net int
}

// ProcScaleResult is what one contender measured with separate processes.
type ProcScaleResult struct {
	Contender string
	Plan      ProcScalePlan
	// Formation is from starting the first process until every agent
	// lists all N alive, the spaced starts included.
	Formation time.Duration
	// Detect runs from the SIGKILL to the last survivor's fail event;
	// Join from starting the new process to the last peer's join event.
	Detect, Join []time.Duration
	// IdleBytes is gossip bytes sent per agent per second, from the
	// agents' own rpi_gossip_bytes_total counters (monitoring sampled
	// every 5 s, as agents do).
	IdleBytes float64
	// FalsePositives are fail events about agents that were not killed.
	FalsePositives []FalsePositive
	Err            error
}

// procAgent is one rpi-agent process of a procCluster.
type procAgent struct {
	name, ip string
	cmd      *exec.Cmd
	stderr   *LimitedWriter
	done     chan struct{} // closed when the process has exited
}

// procCluster runs rpi-agent processes and follows their event streams.
type procCluster struct {
	plan   ProcScalePlan
	dir    string
	key    string
	logger *slog.Logger
	ctx    context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	agents  []*procAgent                    // every agent started, in order
	live    map[string]bool                 // started and not killed
	killed  map[string]time.Time            // killed agents, when
	joins   map[string]map[string]time.Time // subject -> observer -> join event time
	fails   map[string]map[string]time.Time // subject -> observer -> fail event time
	causes  map[string]map[string]string    // subject -> observer -> the fail event's cause
	fps     []FalsePositive
	changed chan struct{} // closed and replaced on every recorded event
	// formation is how long starting the agents and forming took.
	formation time.Duration
}

func (c *procCluster) ip(i int) string {
	return fmt.Sprintf("127.%d.%d.%d", c.plan.Net, i/250, i%250+1)
}

// start starts agent i, joined to agents 0 and 1.
func (c *procCluster) start(i int) (*procAgent, error) {
	a := &procAgent{name: fmt.Sprintf("p%d", i), ip: c.ip(i)}
	joins := []string{c.ip(0) + ":7946"}
	if i > 1 {
		joins = append(joins, c.ip(1)+":7946")
	}
	cmd, stderr, err := AgentCommand(c.plan.AgentBin, filepath.Join(c.dir, a.name), a.name, a.ip, c.plan.Profile, c.key, joins)
	if err != nil {
		return nil, err
	}
	a.cmd, a.stderr, a.done = cmd, stderr, make(chan struct{})
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", c.plan.AgentBin, err)
	}
	go func() {
		cmd.Wait()
		close(a.done)
	}()
	c.mu.Lock()
	c.agents = append(c.agents, a)
	c.live[a.name] = true
	c.mu.Unlock()
	return a, nil
}

// follow opens a's event stream and records join and fail events until
// the cluster stops or a is killed.
func (c *procCluster) follow(a *procAgent) error {
	cl, err := client.New("http://"+a.ip+":8080", "")
	if err != nil {
		return err
	}
	ready := make(chan error, 1)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		err := cl.Follow(c.ctx, func() { ready <- nil }, func(ev apitypes.Event) error {
			c.record(a.name, ev)
			return nil
		})
		// Once the stream was open nobody reads ready again: the error
		// a killed agent's stream ends with lands in the buffer, unread.
		select {
		case ready <- fmt.Errorf("event stream of %s: %v", a.name, err):
		default:
		}
	}()
	return <-ready
}

func (c *procCluster) record(observer string, ev apitypes.Event) {
	subject := ev.Node.Name
	if subject == "" || subject == observer {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch ev.Kind {
	case "join":
		if c.joins[subject] == nil {
			c.joins[subject] = map[string]time.Time{}
		}
		if _, seen := c.joins[subject][observer]; !seen {
			c.joins[subject][observer] = ev.Time
		}
	case "fail":
		if _, dead := c.killed[subject]; !dead {
			c.fps = append(c.fps, FalsePositive{Subject: subject, Observer: observer, Time: ev.Time})
		}
		if c.fails[subject] == nil {
			c.fails[subject] = map[string]time.Time{}
		}
		if _, seen := c.fails[subject][observer]; !seen {
			c.fails[subject][observer] = ev.Time
			if c.causes[subject] == nil {
				c.causes[subject] = map[string]string{}
			}
			c.causes[subject][observer] = ev.Cause
		}
	default:
		return
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

// waitVerdict waits until every live agent but subject has recorded an
// event about subject in verdicts (joins or fails) and returns the latest.
func (c *procCluster) waitVerdict(subject string, verdicts map[string]map[string]time.Time, timeout time.Duration) (time.Time, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		var last time.Time
		missing := 0
		for name := range c.live {
			if name == subject {
				continue
			}
			t, ok := verdicts[subject][name]
			if !ok {
				missing++
				continue
			}
			if t.After(last) {
				last = t
			}
		}
		changed := c.changed
		c.mu.Unlock()
		if missing == 0 {
			return last, nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			return time.Time{}, fmt.Errorf("%d agents have no verdict on %s after %v", missing, subject, timeout)
		case <-c.ctx.Done():
			return time.Time{}, c.ctx.Err()
		}
	}
}

// lastObserver returns the agent whose fail event about subject came last,
// and that event's cause: who held detection back, and on whose verdict.
func (c *procCluster) lastObserver(subject string) (observer, cause string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var last time.Time
	for o, t := range c.fails[subject] {
		if t.After(last) {
			last, observer = t, o
		}
	}
	return observer, c.causes[subject][observer]
}

// kill SIGKILLs a and returns when it happened.
func (c *procCluster) kill(a *procAgent) time.Time {
	c.mu.Lock()
	t := time.Now()
	c.killed[a.name] = t
	delete(c.live, a.name)
	c.mu.Unlock()
	a.cmd.Process.Kill()
	return t
}

// shutdown stops every agent and every stream.
func (c *procCluster) shutdown() {
	c.stop()
	for _, a := range c.agents {
		a.cmd.Process.Signal(syscall.SIGTERM)
	}
	// An agent leaves within 5 s of SIGTERM; one that does not is killed.
	t := time.AfterFunc(15*time.Second, func() {
		for _, a := range c.agents {
			a.cmd.Process.Kill()
		}
	})
	defer t.Stop()
	for _, a := range c.agents {
		<-a.done
	}
	c.wg.Wait()
	os.RemoveAll(c.dir)
}

// exited returns the first agent that exited on its own, with its stderr.
func (c *procCluster) exited() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.agents {
		if _, dead := c.killed[a.name]; dead {
			continue
		}
		select {
		case <-a.done:
			return fmt.Errorf("agent %s exited (%v): %s", a.name, a.cmd.ProcessState, strings.TrimSpace(a.stderr.String()))
		default:
		}
	}
	return nil
}

// RunProcScale measures formation, idle gossip, join and failure detection
// with N separate rpi-agent processes of one profile. The processes are
// stopped when it returns and die with this process (Pdeathsig).
func RunProcScale(ctx context.Context, label string, plan ProcScalePlan, logger *slog.Logger) ProcScaleResult {
	res := ProcScaleResult{Contender: label, Plan: plan}
	fail := func(err error) ProcScaleResult {
		res.Err = fmt.Errorf("%s, %d processes: %w", label, plan.N, err)
		return res
	}
	if plan.N < 3 || plan.N+plan.Trials > 250*250 {
		return fail(fmt.Errorf("size %d with %d trials is out of range", plan.N, plan.Trials))
	}
	log := logger.With("contender", label, "n", plan.N, "processes", true)
	c, err := startProcCluster(ctx, plan, log)
	if c != nil {
		defer c.shutdown()
	}
	if err != nil {
		return fail(err)
	}
	res.Formation = c.formation
	// Let the formation's join traffic settle before counting bytes.
	if err := sleepCtx(ctx, 10*time.Second); err != nil {
		return fail(err)
	}
	if res.IdleBytes, err = c.idleBytes(ctx, plan.Idle); err != nil {
		return fail(err)
	}
	log.Info("idle gossip counted", "bytes_per_node_s", int(res.IdleBytes))

	rng := rand.New(rand.NewPCG(uint64(plan.N), uint64(plan.Net)))
	for trial := range plan.Trials {
		if err := c.exited(); err != nil {
			return fail(err)
		}
		started := time.Now()
		a, err := c.start(plan.N + trial)
		if err != nil {
			return fail(err)
		}
		last, err := c.waitVerdict(a.name, c.joins, 30*time.Second)
		if err != nil {
			return fail(fmt.Errorf("join trial %d: %w", trial+1, err))
		}
		res.Join = append(res.Join, last.Sub(started))
		if err := c.waitHealthy(a); err != nil {
			return fail(err)
		}
		if err := c.follow(a); err != nil {
			return fail(err)
		}

		victim := c.pickVictim(rng, a.name)
		killed := c.kill(victim)
		last, err = c.waitVerdict(victim.name, c.fails, 60*time.Second)
		if err != nil {
			return fail(fmt.Errorf("detection trial %d: %w", trial+1, err))
		}
		res.Detect = append(res.Detect, last.Sub(killed))
		slowest, cause := c.lastObserver(victim.name)
		log.Info("trial", "n", trial+1, "join", res.Join[trial].Round(time.Millisecond), "detect", res.Detect[trial].Round(time.Millisecond),
			"last_observer", slowest, "its_cause", cause)
	}
	c.mu.Lock()
	res.FalsePositives = append([]FalsePositive(nil), c.fps...)
	c.mu.Unlock()
	return res
}

// startProcCluster starts plan.N agents, StartEvery apart, waits until
// every one lists all alive and opens every event stream. The cluster it
// returns (even with an error) must be shut down.
func startProcCluster(ctx context.Context, plan ProcScalePlan, log *slog.Logger) (*procCluster, error) {
	dir, err := os.MkdirTemp("", "rpi-bench-procs-")
	if err != nil {
		return nil, err
	}
	cctx, stop := context.WithCancel(ctx)
	c := &procCluster{
		plan: plan, dir: dir, key: NewKey(), logger: log, ctx: cctx, stop: stop,
		live: map[string]bool{}, killed: map[string]time.Time{},
		joins: map[string]map[string]time.Time{}, fails: map[string]map[string]time.Time{},
		causes:  map[string]map[string]string{},
		changed: make(chan struct{}),
	}
	log.Info("starting agent processes")
	t0 := time.Now()
	for i := range plan.N {
		if i > 0 && plan.StartEvery > 0 {
			if err := sleepCtx(ctx, plan.StartEvery); err != nil {
				return c, err
			}
		}
		if _, err := c.start(i); err != nil {
			return c, err
		}
	}
	if err := c.waitFormed(log, formationTimeoutProcs(plan.N)); err != nil {
		return c, err
	}
	c.formation = time.Since(t0)
	log.Info("cluster formed", "took", c.formation.Round(time.Millisecond))
	for _, a := range c.agents {
		if err := c.follow(a); err != nil {
			return c, err
		}
	}
	return c, nil
}

// formationTimeoutProcs allows a second per agent beyond a minute.
func formationTimeoutProcs(n int) time.Duration {
	return time.Minute + time.Duration(n)*time.Second
}

// waitFormed waits until every agent lists all N alive. Agents that are
// complete are not asked again, so the polling stays light at N = 100.
func (c *procCluster) waitFormed(log *slog.Logger, timeout time.Duration) error {
	done := map[string]bool{}
	lastLog := time.Now()
	return poll(c.ctx, timeout, 250*time.Millisecond, func() error {
		if err := c.exited(); err != nil {
			return err
		}
		for _, a := range c.agents {
			if done[a.name] {
				continue
			}
			n, err := aliveAt(c.ctx, "http://"+a.ip+":8080")
			if err == nil && n == c.plan.N {
				done[a.name] = true
				continue
			}
			if time.Since(lastLog) > 10*time.Second {
				lastLog = time.Now()
				log.Info("still forming", "complete", len(done), "of", c.plan.N)
			}
			if err != nil {
				return err
			}
			return fmt.Errorf("%s sees %d of %d agents alive", a.name, n, c.plan.N)
		}
		return nil
	})
}

// waitHealthy waits until a's API answers, so its stream can be opened.
func (c *procCluster) waitHealthy(a *procAgent) error {
	cl, err := client.New("http://"+a.ip+":8080", "")
	if err != nil {
		return err
	}
	return poll(c.ctx, 20*time.Second, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(c.ctx, time.Second)
		defer cancel()
		_, err := cl.Health(ctx)
		return err
	})
}

// pickVictim returns a random live agent other than the two seeds and the
// newest.
func (c *procCluster) pickVictim(rng *rand.Rand, newest string) *procAgent {
	c.mu.Lock()
	defer c.mu.Unlock()
	var pool []*procAgent
	for _, a := range c.agents[2:] {
		if c.live[a.name] && a.name != newest {
			pool = append(pool, a)
		}
	}
	return pool[rng.IntN(len(pool))]
}

// idleBytes counts gossip bytes the live agents send over window, per agent
// per second, from their rpi_gossip_bytes_total{direction="sent"}.
func (c *procCluster) idleBytes(ctx context.Context, window time.Duration) (float64, error) {
	c.mu.Lock()
	agents := make([]*procAgent, 0, len(c.live))
	for _, a := range c.agents {
		if c.live[a.name] {
			agents = append(agents, a)
		}
	}
	c.mu.Unlock()
	sum := func() (float64, error) {
		var total float64
		for _, a := range agents {
			v, err := sentBytes(ctx, a.ip)
			if err != nil {
				return 0, err
			}
			total += v
		}
		return total, nil
	}
	before, err := sum()
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	if err := sleepCtx(ctx, window); err != nil {
		return 0, err
	}
	after, err := sum()
	if err != nil {
		return 0, err
	}
	return (after - before) / float64(len(agents)) / time.Since(t0).Seconds(), nil
}

// sentBytes reads rpi_gossip_bytes_total{direction="sent"} from the
// /metrics of the agent on ip.
func sentBytes(ctx context.Context, ip string) (float64, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c := client.Client{BaseURL: "http://" + ip + ":8080"}
	return c.Metric(rctx, `rpi_gossip_bytes_total{direction="sent"}`)
}

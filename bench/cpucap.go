package bench

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// CPUCapPlan configures the CPU-capped row: N rpi-agent processes, one of
// them held to a share of one core (a CFS quota in a cgroup of its own) for
// a while, as a Pi Zero or a Pi 3 whose CPU a service saturates is. Its
// late timers and backed-up receive queue must not turn into verdicts
// about its live peers, and the others must still fail a dead node fast.
type CPUCapPlan struct {
	// AgentBin is the rpi-agent binary; Profile its --profile.
	AgentBin string
	Profile  string
	N        int
	// Quota of every Period the capped agent may run: 10 ms of 100 ms is
	// 10 % of one core.
	Quota, Period time.Duration
	// Duration is how long the cap lasts.
	Duration time.Duration
	// KillAfter is when, into the cap, another agent is SIGKILLed.
	KillAfter time.Duration
	// Grace is how long verdicts are still counted after the cap is
	// lifted: suspicions raised under the cap end after it.
	Grace time.Duration
	// Net is the second octet of the agents' addresses (127.Net.x.y).
	Net int
}

// CPUCapResult is what one contender showed with one agent capped.
type CPUCapResult struct {
	Contender string
	Plan      CPUCapPlan
	// Capped and Victim name the capped agent and the one killed.
	Capped, Victim string
	// Cgroup says which cgroup mechanism held the cap.
	Cgroup string
	// CappedCPU is the share of one core the capped agent used under the
	// cap, in percent, from its utime+stime; ThrottledPeriods and
	// Throttled are the kernel's count of CFS periods it was stopped in
	// and their total length.
	CappedCPU        float64
	ThrottledPeriods uint64
	Throttled        time.Duration
	// Detect runs from the SIGKILL to the last uncapped survivor's fail
	// event; DetectCapped to the capped agent's own (zero if it had none
	// before the run ended).
	Detect, DetectCapped time.Duration
	// FalsePositives are fail events about live agents, by anyone, from
	// formation until Grace after the cap.
	FalsePositives []FalsePositive
	Err            error
}

// RunCPUCap runs the CPU-capped row for one contender. The cgroup is
// removed and the agents stopped when it returns, also on failure or
// cancellation; the run is bounded by formation plus Duration plus Grace.
func RunCPUCap(ctx context.Context, label string, plan CPUCapPlan, logger *slog.Logger) CPUCapResult {
	res := CPUCapResult{Contender: label, Plan: plan}
	fail := func(err error) CPUCapResult {
		res.Err = fmt.Errorf("%s, %d processes, one capped: %w", label, plan.N, err)
		return res
	}
	if plan.N < 4 || plan.KillAfter >= plan.Duration {
		return fail(fmt.Errorf("need at least 4 agents (have %d) and a kill inside the cap (kill after %v of %v)", plan.N, plan.KillAfter, plan.Duration))
	}
	// Make sure the cap can be set before starting anything.
	cg, err := newCPUCap(fmt.Sprintf("cpucap-%d", plan.Net), plan.Quota, plan.Period)
	if err != nil {
		return fail(err)
	}
	defer func() {
		if err := cg.Close(); err != nil && res.Err == nil {
			res.Err = err
		}
	}()
	res.Cgroup = cg.String()
	log := logger.With("contender", label, "n", plan.N, "row", "cpucap")
	c, err := startProcCluster(ctx, ProcScalePlan{AgentBin: plan.AgentBin, Profile: plan.Profile, N: plan.N, Net: plan.Net, StartEvery: 100 * time.Millisecond}, log)
	if c != nil {
		defer c.shutdown()
	}
	if err != nil {
		return fail(err)
	}
	// Let the formation's traffic settle, as the procs rows do.
	if err := sleepCtx(ctx, 10*time.Second); err != nil {
		return fail(err)
	}
	// Neither a seed (agents 0 and 1) nor each other.
	capped, victim := c.agents[2], c.agents[3]
	res.Capped, res.Victim = capped.name, victim.name
	pid := capped.cmd.Process.Pid
	cpu0, err := procCPUTicks(pid)
	if err != nil {
		return fail(err)
	}
	if err := cg.Add(pid); err != nil {
		return fail(err)
	}
	t0 := time.Now()
	log.Info("capped", "agent", capped.name, "quota", plan.Quota, "period", plan.Period, "for", plan.Duration, "cgroup", res.Cgroup)

	if err := sleepCtx(ctx, plan.KillAfter); err != nil {
		return fail(err)
	}
	killed := c.kill(victim)
	// The uncapped survivors' verdicts, waited for on their own: a
	// verdict the capped agent is slow to reach must not hold them up.
	c.mu.Lock()
	delete(c.live, capped.name)
	c.mu.Unlock()
	last, err := c.waitVerdict(victim.name, c.fails, plan.Duration-plan.KillAfter)
	c.mu.Lock()
	c.live[capped.name] = true
	c.mu.Unlock()
	if err != nil {
		return fail(fmt.Errorf("detection under the cap: %w", err))
	}
	res.Detect = last.Sub(killed)
	log.Info("detected", "victim", victim.name, "on_the_others", res.Detect.Round(time.Millisecond))

	if err := sleepCtx(ctx, time.Until(t0.Add(plan.Duration))); err != nil {
		return fail(err)
	}
	cpu1, err := procCPUTicks(pid)
	if err != nil {
		return fail(fmt.Errorf("the capped agent: %w", err))
	}
	res.CappedCPU = 100 * float64(cpu1-cpu0) / clockTicks / time.Since(t0).Seconds()
	res.ThrottledPeriods, res.Throttled, err = cg.Throttled()
	if err != nil {
		return fail(err)
	}
	if err := cg.Close(); err != nil {
		return fail(err)
	}
	log.Info("cap lifted", "cpu_percent", fmt.Sprintf("%.1f", res.CappedCPU), "throttled_periods", res.ThrottledPeriods, "throttled", res.Throttled.Round(time.Millisecond))
	if err := sleepCtx(ctx, plan.Grace); err != nil {
		return fail(err)
	}
	if err := c.exited(); err != nil {
		return fail(err)
	}
	c.mu.Lock()
	res.FalsePositives = append([]FalsePositive(nil), c.fps...)
	if t, ok := c.fails[victim.name][capped.name]; ok {
		res.DetectCapped = t.Sub(killed)
	}
	c.mu.Unlock()
	log.Info("cpu-capped row done", "false_positives", len(res.FalsePositives), "detect", res.Detect.Round(time.Millisecond), "detect_by_capped", res.DetectCapped.Round(time.Millisecond))
	return res
}

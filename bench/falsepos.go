package bench

import (
	"context"
	"log/slog"
	"time"
)

// FalsePosPlan configures the false-positive run.
type FalsePosPlan struct {
	N int
	// Loss is the probability each node drops an outgoing UDP packet.
	Loss float64
	// Duration of the observation once the cluster has formed.
	Duration time.Duration
	// One node is frozen (FaultyTransport.Freeze) for Starve every
	// StarveEvery, the first time StarveEvery/6 into the run.
	Starve, StarveEvery time.Duration
}

// FalsePosResult is what one contender showed under loss and starvation.
type FalsePosResult struct {
	Contender string
	Plan      FalsePosPlan
	// Freezes is how many starvation episodes ran.
	Freezes int
	// Events are the fail verdicts about live nodes; Nodes counts the
	// distinct nodes concerned.
	Events []FalsePositive
	Nodes  int
	// Overruled counts memberlist verdicts on live nodes that the agents
	// set aside because a heartbeat showed the node outlived the suspicion:
	// wrong verdicts that did not become false positives.
	Overruled uint64
	Err       error
}

// RunFalsePositives runs every contender's cluster at once under loss with
// one periodically starved node and counts live nodes declared failed.
func RunFalsePositives(ctx context.Context, cs []Contender, plan FalsePosPlan, base SwarmConfig, logger *slog.Logger) []FalsePosResult {
	return sideBySide(cs, base, func(c Contender, conf SwarmConfig) FalsePosResult {
		conf.Profile = c.Profile
		conf.Loss = plan.Loss
		return runFalsePositives(ctx, c, plan, conf, logger.With("contender", c.Label))
	})
}

func runFalsePositives(ctx context.Context, c Contender, plan FalsePosPlan, conf SwarmConfig, log *slog.Logger) FalsePosResult {
	res := FalsePosResult{Contender: c.Label, Plan: plan}
	sw, err := NewSwarm(conf)
	if err != nil {
		res.Err = err
		return res
	}
	defer sw.Shutdown()
	if _, err := sw.Grow(ctx, plan.N, 0, formationTimeout(conf.Profile, plan.N)); err != nil {
		res.Err = err
		return res
	}
	starved := sw.Live()[0]
	log.Info("false-positive run started", "duration", plan.Duration, "starved", starved)
	end := time.Now().Add(plan.Duration)
	next := time.Now().Add(plan.StarveEvery / 6)
	for {
		wait := time.Until(next)
		if left := time.Until(end); left < wait {
			wait = left
		}
		if err := sleepCtx(ctx, max(wait, 0)); err != nil {
			res.Err = err
			break
		}
		if !time.Now().Before(end) {
			break
		}
		if err := sw.Freeze(starved, plan.Starve); err != nil {
			res.Err = err
			break
		}
		res.Freezes++
		next = next.Add(plan.StarveEvery)
	}
	res.Events = sw.FalsePositives()
	res.Overruled = sw.Overrules()
	if err := sw.checkEvents(); err != nil && res.Err == nil {
		res.Err = err
	}
	nodes := map[string]bool{}
	for _, e := range res.Events {
		nodes[e.Subject] = true
	}
	res.Nodes = len(nodes)
	log.Info("false-positive run done", "freezes", res.Freezes, "false_positive_nodes", res.Nodes, "events", len(res.Events), "overruled", res.Overruled)
	return res
}

package bench

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
)

// ScalePlan says what to measure on one cluster size.
type ScalePlan struct {
	N int
	// DetectTrials hard-stops this many nodes one after another (each
	// replaced by a newly joined node, whose join is timed too). Zero skips
	// detection; JoinTrials joins are then timed alone.
	DetectTrials int
	JoinTrials   int
	// Warmup runs before the bandwidth windows so that the formation's
	// broadcasts have drained.
	Warmup time.Duration
	// Window is the length of each bandwidth measurement; zero skips them.
	Window time.Duration
	// IdleWindows is how many idle windows run back to back after the
	// warm-up (at least one); the last is the idle figure, the series
	// shows how long the formation's gossip took to die down.
	IdleWindows int
	// UpdateInterval is how often each node changes its monitoring record
	// during the second bandwidth window.
	UpdateInterval time.Duration
	// GrowEvery spaces the node starts while the cluster forms; zero
	// starts each as soon as the one before has joined. Formation is the
	// one moment every node gossips every other's alive message, O(N²)
	// messages in all, which in one process on a few cores can take the
	// CPU from the probes of the nodes already there.
	GrowEvery time.Duration
}

// ScaleResult is what one contender measured at one size.
type ScaleResult struct {
	Contender string
	N         int
	// Formation is how long starting N nodes and full convergence took.
	Formation time.Duration
	Detect    []time.Duration
	Join      []time.Duration
	// IdleBytes and UpdateBytes are gossip bytes sent per node per second.
	IdleBytes, UpdateBytes float64
	// Idle and Update are the two bandwidth windows' traffic, split by
	// kind when the swarm splits kinds (SwarmConfig.SplitKinds).
	Idle, Update Window
	// IdleSeries is every idle window, in order (see IdleWindows); the
	// last is Idle.
	IdleSeries []Window
	// HandoffDrops counts, by phase (PhaseFormation, ...), the received
	// messages memberlist dropped on all nodes, its handler queue full.
	HandoffDrops map[string]uint64
	// Warmup is how long after formation the first idle window began.
	Warmup         time.Duration
	FalsePositives []FalsePositive
	// Overruled counts failure verdicts the nodes set aside (see
	// Swarm.Overrules); one about a killed node delays its detection.
	Overruled uint64
	// Dilation is the run's time dilation (zero or 1: none). Every
	// duration above is emulated time, every rate per emulated second.
	Dilation Dilation
	// Err is set when the run could not finish (a cluster that never
	// converged, a failure never detected): a gross failure.
	Err error
}

// The phases of a scale run, which its false positives are labelled with.
const (
	PhaseFormation = "formation"
	PhaseBandwidth = "warm-up and bandwidth windows"
	PhaseTrials    = "join and detection trials"
)

// RunScale measures one contender at one size: formation, bandwidth idle and
// with monitoring updates, join convergence and failure detection.
func RunScale(ctx context.Context, c Contender, plan ScalePlan, conf SwarmConfig, logger *slog.Logger) (res ScaleResult) {
	res = ScaleResult{Contender: c.Label, N: plan.N, Dilation: conf.Dilation, Warmup: plan.Warmup}
	conf.Profile = c.Profile
	sw, err := NewSwarm(conf)
	if err != nil {
		res.Err = err
		return res
	}
	defer sw.Shutdown()
	log := logger.With("contender", c.Label, "n", plan.N)

	log.Info("forming cluster")
	res.HandoffDrops = map[string]uint64{}
	var dropsBefore uint64
	phase := func(next string) {
		d := sw.HandoffDrops()
		res.HandoffDrops[sw.Phase()] += d - dropsBefore
		dropsBefore = d
		sw.SetPhase(next)
	}
	defer func() {
		phase("")
		// On every path, a formation that failed included: its false
		// positives are what explains it.
		res.FalsePositives = sw.FalsePositives()
		res.Overruled = sw.Overrules()
	}()
	sw.SetPhase(PhaseFormation)
	res.Formation, err = sw.Grow(ctx, plan.N, plan.GrowEvery, formationTimeout(conf.Profile, plan.N))
	if err != nil {
		log.Error("cluster did not form", "err", err)
		res.Err = err
		return res
	}
	log.Info("cluster formed", "took", res.Formation.Round(time.Millisecond))

	if plan.Window > 0 {
		phase(PhaseBandwidth)
		if err := sw.Sleep(ctx, plan.Warmup); err != nil {
			res.Err = err
			return res
		}
		for range max(plan.IdleWindows, 1) {
			res.Idle, err = measureBandwidth(ctx, sw, plan.Window, nil)
			if err != nil {
				res.Err = err
				return res
			}
			res.IdleSeries = append(res.IdleSeries, res.Idle)
			log.Debug("idle window", "i", len(res.IdleSeries), "Bps", int(res.Idle.PerNodeSecond(float64(res.Idle.Bytes))))
		}
		res.IdleBytes = res.Idle.PerNodeSecond(float64(res.Idle.Bytes))
		res.Update, err = measureBandwidth(ctx, sw, plan.Window, func(ctx context.Context) {
			sw.RunUpdates(ctx, plan.UpdateInterval)
		})
		res.UpdateBytes = res.Update.PerNodeSecond(float64(res.Update.Bytes))
		if err != nil {
			res.Err = err
			return res
		}
		log.Info("bandwidth", "idle_Bps", int(res.IdleBytes), "updates_Bps", int(res.UpdateBytes))
	}

	phase(PhaseTrials)
	trials := max(plan.DetectTrials, plan.JoinTrials)
	joinTimeout := formationTimeout(conf.Profile, plan.N)
	for i := range trials {
		name, began, err := sw.Add()
		if err == nil {
			var d time.Duration
			d, err = sw.WaitJoined(ctx, name, began, joinTimeout)
			res.Join = append(res.Join, d)
		}
		if err != nil {
			res.Err = fmt.Errorf("join trial %d: %w", i+1, err)
			break
		}
		if i >= plan.DetectTrials {
			continue
		}
		victim, _ := sw.RandomLive(name)
		at, survivors, err := sw.Kill(victim)
		if err == nil {
			var d time.Duration
			d, err = sw.WaitFailed(ctx, victim, survivors, at, detectTimeout(c, plan.N))
			res.Detect = append(res.Detect, d)
		}
		if err != nil {
			res.Err = fmt.Errorf("detection trial %d: %w", i+1, err)
			break
		}
		log.Debug("trial", "i", i+1, "join", res.Join[len(res.Join)-1], "detect", res.Detect[len(res.Detect)-1])
	}
	if err := sw.checkEvents(); err != nil && res.Err == nil {
		res.Err = err
	}
	if res.Err != nil {
		log.Error("scale run failed", "err", res.Err)
	}
	log.Info("trials done", "joins", len(res.Join), "detections", len(res.Detect), "false_positives", len(sw.FalsePositives()), "overruled", sw.Overrules())
	return res
}

// RunScaleSideBySide runs every contender at once (each on its own swarm),
// so they are measured under the same machine load.
func RunScaleSideBySide(ctx context.Context, cs []Contender, plan ScalePlan, base SwarmConfig, logger *slog.Logger) []ScaleResult {
	return sideBySide(cs, base, func(c Contender, conf SwarmConfig) ScaleResult {
		return RunScale(ctx, c, plan, conf, logger)
	})
}

// sideBySide runs fn for every contender at once, each on its own swarm
// configuration derived from base (a cluster name and seed of its own), so
// the contenders of a row share the machine's load and differ only in what
// they are.
func sideBySide[R any](cs []Contender, base SwarmConfig, fn func(c Contender, conf SwarmConfig) R) []R {
	out := make([]R, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conf := base
			conf.ClusterName = fmt.Sprintf("%s-%d", base.ClusterName, i)
			conf.Seed = base.Seed + uint64(i)
			out[i] = fn(c, conf)
		}()
	}
	wg.Wait()
	return out
}

// Window is the traffic of one bandwidth window.
type Window struct {
	Traffic
	// Seconds is the window's emulated length.
	Seconds float64
}

// PerNodeSecond turns a count over the window into one per node per
// emulated second.
func (w Window) PerNodeSecond(x float64) float64 {
	if w.Nodes == 0 || w.Seconds == 0 {
		return 0
	}
	return x / float64(w.Nodes) / w.Seconds
}

// measureBandwidth returns the traffic during window, with load (if any)
// running meanwhile.
func measureBandwidth(ctx context.Context, sw *Swarm, window time.Duration, load func(context.Context)) (Window, error) {
	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if load != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			load(lctx)
		}()
	}
	t0 := time.Now()
	before := sw.Traffic()
	err := sw.Sleep(ctx, window)
	after := sw.Traffic()
	el := sw.conf.Dilation.Emulated(time.Since(t0))
	cancel()
	wg.Wait()
	if err != nil {
		return Window{}, err
	}
	after.Nodes = before.Nodes
	return Window{Traffic: after.Sub(before), Seconds: el.Seconds()}, nil
}

// formationTimeout bounds cluster formation and single joins: generous,
// since a loaded machine slows everything, and long enough for a push-pull
// round to repair a lost alive message, but finite.
func formationTimeout(p cluster.Profile, n int) time.Duration {
	return max(30*time.Second, 2*p.PushPullInterval) + time.Duration(n)*200*time.Millisecond
}

// detectTimeout bounds one detection: memberlist's longest suspicion
// (SuspicionMaxTimeoutMult times the minimum) plus a few probe rounds.
func detectTimeout(c Contender, n int) time.Duration {
	p := c.Profile
	scale := 1.0
	for x := n; x >= 10; x /= 10 {
		scale++
	}
	max := time.Duration(float64(p.SuspicionMaxTimeoutMult*p.SuspicionMult)*scale) * p.ProbeInterval
	return max + 10*p.ProbeInterval + 10*time.Second
}

// sleepCtx waits for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

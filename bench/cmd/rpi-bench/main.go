// Command rpi-bench measures failure detection, false positives, join
// convergence, gossip bandwidth, agent footprint and inventory speed, and
// prints a markdown report. `make bench` runs it in full (about 25 min);
// `make bench-quick` runs a reduced set (under 5 min) that fails only on
// gross failures, never on timings.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rpi-cluster/rpi-cluster/bench"
	"github.com/rpi-cluster/rpi-cluster/internal/cliapp"
	"github.com/rpi-cluster/rpi-cluster/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	quick       bool
	out         string
	rows        string
	sizes       string
	trials      int
	agentBin    string
	invBin      string
	fpDuration  time.Duration
	window      time.Duration
	footIdle    time.Duration
	parallelMax int
	verbose     bool
	invRuns     int
	joinTrials  int
	procSizes   string
	procTrials  int
	cpuProfile  string
	growEvery   time.Duration
	profiles    string
	capQuota    float64
	warmup      time.Duration
	capDuration time.Duration
	dilate      string
	detectMaxN  int
	splitKinds  bool
	idleWindows int
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rpi-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.BoolVar(&o.quick, "quick", false, "reduced run for CI: N = 10 and 100, 5 trials, short windows (under 5 min)")
	fs.StringVar(&o.out, "o", "", "also write the report to `FILE`")
	fs.StringVar(&o.rows, "rows", "scale,procs,falsepos,footprint,inventory", "rows to run, comma-separated: scale (detection, join, bandwidth), procs (the same with rpi-agent processes), falsepos, footprint, inventory; and, not by default, cpucap (one of 10 agent processes held to --cap-quota of a core for --cap-duration in a cgroup of its own: needs root and a cgroup with the cpu controller)")
	fs.StringVar(&o.sizes, "sizes", "", "cluster sizes for the scale rows (default 10,100,500; quick 10,100)")
	fs.IntVar(&o.trials, "trials", 0, "failure-detection trials per size up to 100 nodes (default 20; quick 5, at N = 10 only)")
	fs.IntVar(&o.joinTrials, "join-trials", 0, "join trials at sizes without detection (default 10; quick 3)")
	fs.StringVar(&o.procSizes, "proc-sizes", "", "cluster sizes for the procs rows (default 10,100; quick 10)")
	fs.IntVar(&o.procTrials, "proc-trials", 0, "join and detection trials per size in the procs rows (default 20; quick 5)")
	fs.StringVar(&o.agentBin, "agent-bin", "bin/rpi-agent", "rpi-agent binary for the procs and footprint rows")
	fs.StringVar(&o.invBin, "inventory-bin", "bin/rpi-inventory", "rpi-inventory binary for the inventory row")
	fs.DurationVar(&o.fpDuration, "fp-duration", 0, "false-positive observation time (default 10m; quick 60s)")
	fs.DurationVar(&o.window, "window", 0, "each bandwidth window (default 30s; quick 5s)")
	fs.DurationVar(&o.footIdle, "footprint-idle", 0, "footprint idle time (default 60s; quick 15s)")
	fs.StringVar(&o.profiles, "profiles", "lan,memberlist-lan", "the contenders, by agent profile name, comma-separated: lan (ours) and memberlist-lan (memberlist's DefaultLANConfig)")
	fs.DurationVar(&o.growEvery, "grow-every", 100*time.Millisecond, "in-process clusters of more than 100 nodes start a node this often while they form, as the procs rows do (smaller ones as fast as joins complete)")
	fs.IntVar(&o.parallelMax, "parallel-max-n", 10, "up to this size the contenders run at the same time; above it one after another")
	fs.IntVar(&o.invRuns, "inventory-runs", 20, "rpi-inventory runs per size")
	fs.StringVar(&o.dilate, "dilate", "1", "time dilation `K` of the scale rows (a number from 1 to 100): every protocol interval and timeout runs K times longer, measured times are divided by K and bandwidths are per emulated second, so two cores can emulate a cluster K times larger (docs/PERFORMANCE.md)")
	fs.DurationVar(&o.warmup, "warmup", 0, "wait this long after formation before the scale rows' bandwidth windows (default 5 s plus 50 ms per node)")
	fs.IntVar(&o.detectMaxN, "detect-max-n", 0, "the scale rows time failure detection at sizes up to this (default 100; quick 10); larger sizes time joins only")
	fs.Float64Var(&o.capQuota, "cap-quota", 0.10, "the cpucap row's CPU share of the capped agent, as a fraction of one core (CFS quota per 100 ms period)")
	fs.DurationVar(&o.capDuration, "cap-duration", 2*time.Minute, "how long the cpucap row holds its agent capped; another agent is killed half-way")
	fs.BoolVar(&o.verbose, "v", false, "log progress at debug level")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the in-process rows to `FILE` (go tool pprof)")
	fs.BoolVar(&o.splitKinds, "split-kinds", false, "split the scale rows' bandwidth by message kind (memberlist's and the agent's, packets and TCP streams), decrypting every packet sent once more, and print the Stats counters of each window")
	fs.IntVar(&o.idleWindows, "idle-windows", 1, "the scale rows measure this many idle --window's back to back after the warm-up and report the last as the idle figure, and the series (with --split-kinds, by kind) to show the formation's gossip dying down")
	showVersion := fs.Bool("version", false, "print the version")
	// As the other tools: -h prints the flags on stdout; a bad command line
	// is one line on stderr and exit status 2, not the whole list.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fmt.Fprintln(stdout, "usage: rpi-bench [flags]")
			fs.PrintDefaults()
			return 0
		}
		return cliapp.Exit("rpi-bench", &cliapp.UsageError{Command: "rpi-bench", Err: err}, stderr)
	}
	if fs.NArg() > 0 {
		return cliapp.Exit("rpi-bench", cliapp.Usagef("unexpected argument %q: rpi-bench takes only flags", fs.Arg(0)), stderr)
	}
	if *showVersion {
		fmt.Fprintln(stdout, "rpi-bench version", version.String())
		return 0
	}
	applyDefaults(&o)
	sizes, err := parseSizes("--sizes", o.sizes)
	if err != nil {
		fmt.Fprintf(stderr, "rpi-bench: %v\n", err)
		return 2
	}
	procSizes, err := parseSizes("--proc-sizes", o.procSizes)
	if err != nil {
		fmt.Fprintf(stderr, "rpi-bench: %v\n", err)
		return 2
	}
	dilation, err := bench.ParseDilation(o.dilate)
	if err != nil {
		fmt.Fprintf(stderr, "rpi-bench: --dilate: %v\n", err)
		return 2
	}
	if o.capQuota <= 0 || o.capQuota > 1 {
		fmt.Fprintf(stderr, "rpi-bench: --cap-quota %g: want a share of one core above 0 and at most 1, like 0.1 for 10 %%\n", o.capQuota)
		return 2
	}
	rows := map[string]bool{}
	for _, r := range strings.Split(o.rows, ",") {
		switch r = strings.TrimSpace(r); r {
		case "scale", "procs", "falsepos", "footprint", "inventory", "cpucap":
			rows[r] = true
		default:
			fmt.Fprintf(stderr, "rpi-bench: unknown row %q: use scale, procs, falsepos, footprint, inventory, cpucap\n", r)
			return 2
		}
	}
	if dilation.Dilated() {
		for r := range rows {
			if r != "scale" {
				fmt.Fprintf(stderr, "rpi-bench: --dilate works on the in-process scale rows only (agent processes run their built-in profiles in real time): use --rows scale, or run %s without --dilate\n", r)
				return 2
			}
		}
	}
	cs, err := bench.Contenders(strings.Split(o.profiles, ","))
	if err != nil {
		fmt.Fprintf(stderr, "rpi-bench: --profiles: %v\n", err)
		return 2
	}
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// A second signal while cleaning up forces the exit.
		<-ctx.Done()
		stop()
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
		select {
		case <-ch:
			fmt.Fprintln(stderr, "rpi-bench: second signal, exiting now")
			os.Exit(130)
		case <-time.After(30 * time.Second):
		}
	}()

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "rpi-bench: %v\n", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "rpi-bench: start CPU profile: %v\n", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	rep := measure(ctx, o, dilation, cs, sizes, procSizes, rows, logger)
	if err := rep.WriteMarkdown(stdout); err != nil {
		fmt.Fprintf(stderr, "rpi-bench: write report: %v\n", err)
		return 1
	}
	if o.out != "" {
		f, err := createFile(o.out)
		if err == nil {
			err = rep.WriteMarkdown(f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			fmt.Fprintf(stderr, "rpi-bench: write %s: %v\n", o.out, err)
			return 1
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "rpi-bench: interrupted; the report above is partial")
		return 130
	}
	if fails := rep.Failures(); len(fails) > 0 {
		fmt.Fprintf(stderr, "rpi-bench: %d gross failure(s):\n", len(fails))
		for _, f := range fails {
			fmt.Fprintf(stderr, "  %s\n", f)
		}
		return 1
	}
	return 0
}

// createFile creates path, and its directory if missing.
func createFile(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	return os.Create(path)
}

func applyDefaults(o *options) {
	pick := func(full, quick time.Duration) time.Duration {
		if o.quick {
			return quick
		}
		return full
	}
	if o.sizes == "" {
		o.sizes = "10,100,500"
		if o.quick {
			o.sizes = "10,100"
		}
	}
	if o.procSizes == "" {
		o.procSizes = "10,100"
		if o.quick {
			o.procSizes = "10"
		}
	}
	if o.procTrials == 0 {
		o.procTrials = 20
		if o.quick {
			o.procTrials = 5
		}
	}
	if o.trials == 0 {
		o.trials = 20
		if o.quick {
			o.trials = 5
		}
	}
	if o.joinTrials == 0 {
		o.joinTrials = 10
		if o.quick {
			o.joinTrials = 3
		}
	}
	if o.detectMaxN == 0 {
		o.detectMaxN = 100
		if o.quick {
			o.detectMaxN = 10
		}
	}
	if o.fpDuration == 0 {
		o.fpDuration = pick(10*time.Minute, 60*time.Second)
	}
	if o.window == 0 {
		o.window = pick(30*time.Second, 5*time.Second)
	}
	if o.footIdle == 0 {
		o.footIdle = pick(60*time.Second, 15*time.Second)
	}
}

func parseSizes(flag, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 3 || n > 2000 {
			return nil, fmt.Errorf("bad size %q in %s: want numbers from 3 to 2000, like 10,100,500", f, flag)
		}
		out = append(out, n)
	}
	return out, nil
}

func measure(ctx context.Context, o options, dilation bench.Dilation, cs []bench.Contender, sizes, procSizes []int, rows map[string]bool, logger *slog.Logger) *bench.Report {
	rep := &bench.Report{
		Machine:  bench.ReadMachine(),
		Command:  "rpi-bench " + strings.Join(os.Args[1:], " "),
		Started:  time.Now(),
		Mode:     "full",
		Dilation: dilation,
	}
	if o.quick {
		rep.Mode = "quick"
	}
	if dilation.Dilated() {
		rep.Mode += fmt.Sprintf(", time-dilated K = %g", float64(dilation))
	}
	defer func() {
		rep.Elapsed = time.Since(rep.Started)
		rep.Machine.LoadEnd = bench.LoadAvg()
	}()
	for _, c := range cs {
		rep.Labels = append(rep.Labels, c.Label)
	}
	key := make([]byte, 32)
	rand.Read(key)
	base := bench.SwarmConfig{ClusterName: "bench", Key: key, Seed: uint64(time.Now().UnixNano()), Logger: logger.With("component", "node"), Progress: logger, SplitKinds: o.splitKinds}
	if !o.verbose {
		base.Logger = nil
	}

	if rows["scale"] {
		for _, n := range sizes {
			if ctx.Err() != nil {
				break
			}
			plan := bench.ScalePlan{
				N: n, Warmup: 5*time.Second + time.Duration(n)*50*time.Millisecond, Window: o.window, UpdateInterval: 5 * time.Second,
				JoinTrials: o.joinTrials, IdleWindows: o.idleWindows,
			}
			// Quick mode keeps the full warm-up: right after formation
			// the nodes are still gossiping everyone's alive messages and
			// records (at N = 100, 2 s after formation lan still sent
			// 50 KB/s per node), which is not what "idle" means.
			if o.warmup > 0 {
				plan.Warmup = o.warmup
			}
			if n <= o.detectMaxN {
				plan.DetectTrials = o.trials
			}
			if n > 100 {
				plan.GrowEvery = o.growEvery
			}
			conf := base
			conf.Dilation = dilation
			conf.ClusterName = fmt.Sprintf("bench-%d", n)
			conf.IPs = bench.LoopbackIPs(n)
			if n <= o.parallelMax {
				rep.Scale = append(rep.Scale, bench.RunScaleSideBySide(ctx, cs, plan, conf, logger)...)
				continue
			}
			for i, c := range cs {
				if ctx.Err() != nil {
					break
				}
				conf := conf
				conf.ClusterName = fmt.Sprintf("bench-%d-%d", n, i)
				rep.Scale = append(rep.Scale, bench.RunScale(ctx, c, plan, conf, logger))
			}
		}
	}
	if rows["procs"] {
		// One contender at a time: 100 processes each are enough for two
		// cores. Each contender has its own 127.X.0.0/16.
		for _, n := range procSizes {
			for i, c := range cs {
				if ctx.Err() != nil {
					break
				}
				rep.Procs = append(rep.Procs, bench.RunProcScale(ctx, c.Label, bench.ProcScalePlan{
					AgentBin: o.agentBin, Profile: c.Profile.Name, N: n, Trials: o.procTrials,
					Idle: o.window, Net: 20 + i, StartEvery: 100 * time.Millisecond,
				}, logger))
			}
		}
	}
	if rows["cpucap"] {
		for i, c := range cs {
			if ctx.Err() != nil {
				break
			}
			rep.CPUCap = append(rep.CPUCap, bench.RunCPUCap(ctx, c.Label, bench.CPUCapPlan{
				AgentBin: o.agentBin, Profile: c.Profile.Name, N: 10,
				Quota: time.Duration(o.capQuota * float64(100*time.Millisecond)), Period: 100 * time.Millisecond,
				Duration: o.capDuration, KillAfter: o.capDuration / 2, Grace: 15 * time.Second, Net: 22 + i,
			}, logger))
		}
	}
	if rows["falsepos"] && ctx.Err() == nil {
		conf := base
		conf.ClusterName = "bench-fp"
		conf.IPs = bench.LoopbackIPs(10)
		rep.FalsePos = bench.RunFalsePositives(ctx, cs, bench.FalsePosPlan{
			N: 10, Loss: 0.10, Duration: o.fpDuration, Starve: 2 * time.Second, StarveEvery: 30 * time.Second,
		}, conf, logger)
	}
	if rows["footprint"] && ctx.Err() == nil {
		f := bench.RunFootprint(ctx, bench.FootprintPlan{AgentBin: o.agentBin, N: 10, Idle: o.footIdle}, logger)
		rep.Footprint = &f
	}
	if rows["inventory"] && ctx.Err() == nil {
		rep.Inventory = bench.RunInventory(ctx, bench.InventoryPlan{InventoryBin: o.invBin, Sizes: []int{10, 100, 1000}, Runs: o.invRuns})
	}
	rep.Notes = append(rep.Notes, notes(o)...)
	if dilation.Dilated() {
		rep.Notes = append(rep.Notes, fmt.Sprintf("Time dilation K = %g (DieCast, NSDI 2008): every duration of the contenders' profiles (so memberlist's probe, gossip, push-pull, suspicion and TCP timings, the heartbeats and the phi detector) and the benchmark's own waits, windows, warm-ups and poll intervals ran %g times longer; times are reported divided by %g, bandwidth per emulated second. CPU time per message, loopback latency and scheduling are not dilated: see docs/PERFORMANCE.md.", float64(dilation), float64(dilation), float64(dilation)))
	}
	return rep
}

func notes(o options) []string {
	n := []string{
		"In-process clusters: every node is a real cluster.Cluster (memberlist, encrypted with AES-GCM) on its own UDP/TCP sockets on 127.0.9.x (127.0.10-11.x beyond 250 nodes); the contenders of a size up to " +
			strconv.Itoa(o.parallelMax) + " nodes run at the same time, so they share the machine's load. Clusters of more than 100 nodes form with a node started every " + o.growEvery.String() + " (formation gossips every node's alive message to every node, O(N²) messages, which on a few shared cores would starve the probes of the nodes already there); smaller ones as fast as joins complete.",
		"Failure detection: a random node is hard-stopped (Shutdown without Leave); the time runs from that instant to the last surviving node's fail event. Each trial first joins a new node (timed as a join trial), so the size stays N.",
		"Join: from the new node's Join call to the last peer's join event for it.",
		"Bandwidth: bytes sent per node per second counted by each node's CountingTransport (UDP packets and TCP streams, encryption included), after a warm-up.",
		"False positives: 10 % of every node's outgoing UDP packets dropped; one node frozen for 2 s every 30 s: its transport delivers nothing to memberlist (packets and streams wait, as in socket buffers) and every send blocks, as a descheduled process's goroutines would. Counted: live nodes any peer declared failed.",
		"Separate processes: real rpi-agent processes (the contender's --profile, encrypted, mDNS off, static join to the first two) on 127.20.x.y and 127.21.x.y, one contender after the other, started 10 a second (all at once, 100 agents' start-up work on two shared cores sent lan into a storm of false suspicions that sustained itself: 3.4 % of a core per agent instead of 1.3 %); each trial starts a new agent (join: from starting the process to the last peer's join event, process start included) and then SIGKILLs a random one (detection: to the last survivor's fail event); events come from every agent's /v1/events stream, bytes from every agent's rpi_gossip_bytes_total over the bandwidth window, monitoring sampled every 5 s as agents do.",
		"Footprint: separate rpi-agent processes (lan profile, encrypted, mDNS off, static join) on 127.0.9.201 and up; RSS is VmRSS, CPU is utime+stime over the idle window.",
	}
	if o.splitKinds {
		n = append(n, "By kind (--split-kinds): every packet and TCP stream a node sent, decrypted again with the cluster key, stripped of its CRC header, decompressed and split into its compound parts: memberlist's messages by type, the agent's user messages by their first byte (\"user heartbeat\", \"user record\", ...), TCP streams (\"tcp ...\") by their first write, a push-pull into memberlist's node states and the agent's records. \"encryption\" is AES-GCM's 29 bytes per packet, \"framing\" the compound and CRC headers; compressed bytes are shared among the parts by their uncompressed sizes, so the kinds add up to the transports' count (in brackets). The counters are the nodes' cluster.Stats over the same window.")
	}
	return n
}

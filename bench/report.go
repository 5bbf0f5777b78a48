// Package bench measures what people choose a membership system for: how
// fast it notices failures, how rarely it is wrong, how fast it converges
// and what it costs a small board. Clusters run in-process on loopback
// (127.0.9.0/24, and 127.0.10-11.x beyond 250 nodes) through the real
// cluster package and memberlist; the footprint and inventory rows run the
// real binaries. cmd/rpi-bench drives it and prints a markdown report.
package bench

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
)

// Machine describes where a run happened.
type Machine struct {
	CPUs      int
	Model     string
	GoVersion string
	// LoadStart and LoadEnd are /proc/loadavg at the start and the end.
	LoadStart, LoadEnd string
}

// ReadMachine describes this machine now.
func ReadMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Model: "unknown", GoVersion: runtime.Version(), LoadStart: LoadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// LoadAvg returns the 1, 5 and 15 minute load averages.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// Report is everything one run measured.
type Report struct {
	Machine Machine
	Command string
	Started time.Time
	Elapsed time.Duration
	Mode    string
	// Dilation is the time dilation of the in-process rows (zero or 1:
	// none); see Dilation.
	Dilation Dilation
	Labels   []string // contender labels, in column order
	Scale    []ScaleResult
	FalsePos []FalsePosResult
	// Procs are the separate-process rows.
	Procs []ProcScaleResult
	// CPUCap are the CPU-capped rows.
	CPUCap []CPUCapResult
	// Footprint is nil when the row did not run.
	Footprint *FootprintResult
	Inventory []InventoryResult
	Notes     []string
}

// Failures lists the gross failures: crashes of a row, clusters that never
// converged, failures never detected, and false positives of the lan
// profile. Timings never count.
func (r *Report) Failures() []string {
	var out []string
	for _, s := range r.Scale {
		if s.Err != nil {
			out = append(out, fmt.Sprintf("%s at N=%d: %v", s.Contender, s.N, s.Err))
		}
		if s.Contender == "lan" && len(s.FalsePositives) > 0 {
			out = append(out, fmt.Sprintf("lan at N=%d: %d live nodes declared failed (%d fail verdicts), first %s failed on %s",
				s.N, wronged(s.FalsePositives), len(s.FalsePositives), s.FalsePositives[0].Subject, s.FalsePositives[0].Observer))
		}
	}
	for _, p := range r.Procs {
		if p.Err != nil {
			out = append(out, p.Err.Error())
		}
		if p.Contender == "lan" && len(p.FalsePositives) > 0 {
			out = append(out, fmt.Sprintf("lan, %d processes: %d false positives, first %s failed on %s",
				p.Plan.N, len(p.FalsePositives), p.FalsePositives[0].Subject, p.FalsePositives[0].Observer))
		}
	}
	for _, f := range r.FalsePos {
		if f.Err != nil {
			out = append(out, fmt.Sprintf("false positives, %s: %v", f.Contender, f.Err))
		}
		if f.Contender == "lan" && f.Nodes > 0 {
			out = append(out, fmt.Sprintf("false positives, lan: %d live nodes declared failed", f.Nodes))
		}
	}
	for _, c := range r.CPUCap {
		if c.Err != nil {
			out = append(out, c.Err.Error())
		}
		if c.Contender == "lan" && len(c.FalsePositives) > 0 {
			out = append(out, fmt.Sprintf("lan, one agent capped to a share of a core: %d false positives, first %s failed on %s",
				len(c.FalsePositives), c.FalsePositives[0].Subject, c.FalsePositives[0].Observer))
		}
	}
	if r.Footprint != nil && r.Footprint.Err != nil {
		out = append(out, r.Footprint.Err.Error())
	}
	for _, i := range r.Inventory {
		if i.Err != nil {
			out = append(out, i.Err.Error())
		}
	}
	return out
}

// Percentile returns the p-th percentile (0-100) of xs by the nearest-rank
// method; zero for no samples.
func Percentile[T cmp.Ordered](xs []T, p float64) T {
	if len(xs) == 0 {
		var zero T
		return zero
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(p/100*float64(len(s)) + 0.999999)
	return s[min(max(rank, 1), len(s))-1]
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func bps(b float64) string {
	if b >= 1000 {
		return fmt.Sprintf("%.1f KB/s", b/1000)
	}
	return fmt.Sprintf("%.0f B/s", b)
}

// WriteMarkdown writes the report as markdown tables.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "## rpi-bench results (%s)\n\n", r.Mode)
	fmt.Fprintf(&b, "- machine: %d CPUs, %s, %s\n", r.Machine.CPUs, r.Machine.Model, r.Machine.GoVersion)
	fmt.Fprintf(&b, "- date: %s, took %s\n", r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Elapsed.Round(time.Second))
	fmt.Fprintf(&b, "- load average (1/5/15 min): %s at start, %s at end\n", r.Machine.LoadStart, r.Machine.LoadEnd)
	fmt.Fprintf(&b, "- command: `%s`\n", r.Command)
	if r.Dilation.Dilated() {
		fmt.Fprintf(&b, "- **time-dilated run, K = %g**: every protocol interval and timeout (the profile's, memberlist's, the benchmark's own) ran %g times longer; the times below are divided by %g and the bandwidths are per emulated second\n",
			float64(r.Dilation), float64(r.Dilation), float64(r.Dilation))
	}
	b.WriteString("\n")

	if len(r.Scale) > 0 || len(r.FalsePos) > 0 {
		b.WriteString("| measure | N | " + strings.Join(r.Labels, " | ") + " | target |\n")
		b.WriteString("|---|---:|" + strings.Repeat("---:|", len(r.Labels)) + "---|\n")
		sizes := r.sizes()
		row := func(measure string, n int, target string, cell func(ScaleResult) string) {
			cells := make([]string, len(r.Labels))
			any := false
			for i, l := range r.Labels {
				cells[i] = "–"
				for _, s := range r.Scale {
					if s.Contender == l && s.N == n {
						if c := cell(s); c != "" {
							cells[i], any = c, true
						}
					}
				}
			}
			if any {
				fmt.Fprintf(&b, "| %s | %d | %s | %s |\n", measure, n, strings.Join(cells, " | "), target)
			}
		}
		errCell := func(s ScaleResult) string {
			if s.Err != nil {
				return "**failed**"
			}
			return ""
		}
		for _, n := range sizes {
			target := map[int]string{10: "p99 ≤ 2.5 s", 100: "p99 ≤ 5 s"}[n]
			row("failure detection p50 / p99 (trials)", n, target, func(s ScaleResult) string {
				if len(s.Detect) == 0 {
					return errCell(s)
				}
				return fmt.Sprintf("%s / %s (%d)", secs(Percentile(s.Detect, 50)), secs(Percentile(s.Detect, 99)), len(s.Detect))
			})
		}
		for _, n := range sizes {
			target := map[int]string{500: "≤ 5 s"}[n]
			row("join seen by all p50 / p99 (trials)", n, target, func(s ScaleResult) string {
				if len(s.Join) == 0 {
					return errCell(s)
				}
				return fmt.Sprintf("%s / %s (%d)", secs(Percentile(s.Join, 50)), secs(Percentile(s.Join, 99)), len(s.Join))
			})
		}
		for _, n := range sizes {
			row("cluster formation, all see all", n, "", func(s ScaleResult) string {
				if s.Formation == 0 {
					return errCell(s)
				}
				return secs(s.Formation)
			})
		}
		for _, n := range sizes {
			target := map[int]string{100: "≤ 2 KB/s"}[n]
			row("gossip sent per node, idle", n, target, func(s ScaleResult) string {
				if s.IdleBytes == 0 {
					return ""
				}
				return bps(s.IdleBytes)
			})
		}
		for _, n := range sizes {
			row("gossip sent per node, monitoring update every 5 s", n, "", func(s ScaleResult) string {
				if s.UpdateBytes == 0 {
					return ""
				}
				return bps(s.UpdateBytes)
			})
		}
		for _, n := range sizes {
			row("live nodes declared failed during the rows above (fail verdicts)", n, "0", func(s ScaleResult) string {
				if s.Err != nil && len(s.Join) == 0 {
					return ""
				}
				// One wrong verdict is one fail event per observer that
				// takes it: at N = 1,000 a watcher's verdict alone can be a
				// thousand. The nodes wronged say how many mistakes there were.
				cell := fmt.Sprintf("%d (%d)", wronged(s.FalsePositives), len(s.FalsePositives))
				if s.Overruled > 0 {
					cell += fmt.Sprintf("; %d verdicts overruled", s.Overruled)
				}
				return cell
			})
		}
		for _, n := range sizes {
			row("received messages memberlist dropped, its handler queue full: formation / bandwidth windows / trials", n, "", func(s ScaleResult) string {
				if s.HandoffDrops == nil {
					return ""
				}
				return fmt.Sprintf("%d / %d / %d", s.HandoffDrops[PhaseFormation], s.HandoffDrops[PhaseBandwidth], s.HandoffDrops[PhaseTrials])
			})
		}
		if len(r.FalsePos) > 0 {
			p := r.FalsePos[0].Plan
			cells := make([]string, len(r.Labels))
			for i, l := range r.Labels {
				cells[i] = "–"
				for _, f := range r.FalsePos {
					if f.Contender == l {
						if f.Err != nil {
							cells[i] = "**failed**"
						} else {
							cells[i] = fmt.Sprintf("%d nodes (%d verdicts, %d freezes; %d overruled)", f.Nodes, len(f.Events), f.Freezes, f.Overruled)
						}
					}
				}
			}
			fmt.Fprintf(&b, "| false positives: %.0f %% loss, one node frozen %s every %s, %s | %d | %s | 0 |\n",
				100*p.Loss, p.Starve, p.StarveEvery, p.Duration, p.N, strings.Join(cells, " | "))
		}
		b.WriteString("\n")
	}

	r.writeKinds(&b)
	r.writeWrongVerdicts(&b)
	r.writeProcs(&b)
	r.writeCPUCap(&b)

	if f := r.Footprint; f != nil && len(f.Samples) > 0 && f.Err == nil {
		rss := make([]float64, len(f.Samples))
		anon := make([]float64, len(f.Samples))
		file := make([]float64, len(f.Samples))
		cpu := make([]float64, len(f.Samples))
		for i, s := range f.Samples {
			rss[i] = float64(s.RSS) / (1 << 20)
			anon[i] = float64(s.RSSAnon) / (1 << 20)
			file[i] = float64(s.RSSFile) / (1 << 20)
			cpu[i] = s.CPU
		}
		fmt.Fprintf(&b, "| footprint: %d rpi-agent processes, lan profile, encrypted, after %s idle | median | max | target |\n|---|---:|---:|---|\n", f.Plan.N, f.Plan.Idle)
		fmt.Fprintf(&b, "| RSS | %.1f MiB | %.1f MiB | ≤ 15 MB |\n", Percentile(rss, 50), Percentile(rss, 100))
		fmt.Fprintf(&b, "| of which anonymous (heap, stacks, runtime) | %.1f MiB | %.1f MiB | |\n", Percentile(anon, 50), Percentile(anon, 100))
		fmt.Fprintf(&b, "| of which the binary's mapped file pages | %.1f MiB | %.1f MiB | |\n", Percentile(file, 50), Percentile(file, 100))
		fmt.Fprintf(&b, "| CPU, %% of one core | %.2f %% | %.2f %% | |\n\n", Percentile(cpu, 50), Percentile(cpu, 100))
	}

	if len(r.Inventory) > 0 {
		b.WriteString("| `rpi-inventory --list` wall time, process start included | nodes | runs | median | p90 | max | target |\n|---|---:|---:|---:|---:|---:|---|\n")
		for _, i := range r.Inventory {
			if i.Err != nil {
				fmt.Fprintf(&b, "| | %d | | **failed** | | | |\n", i.N)
				continue
			}
			target := map[int]string{1000: "≤ 50 ms"}[i.N]
			fmt.Fprintf(&b, "| | %d | %d | %s | %s | %s | %s |\n", i.N, len(i.Times),
				ms(Percentile(i.Times, 50)), ms(Percentile(i.Times, 90)), ms(Percentile(i.Times, 100)), target)
		}
		b.WriteString("\n")
	}

	if fs := r.Failures(); len(fs) > 0 {
		b.WriteString("### Gross failures\n\n")
		for _, f := range fs {
			fmt.Fprintf(&b, "- %s\n", f)
		}
		b.WriteString("\n")
	}
	if len(r.Notes) > 0 {
		b.WriteString("### Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (r *Report) sizes() []int {
	var ns []int
	for _, s := range r.Scale {
		if !slices.Contains(ns, s.N) {
			ns = append(ns, s.N)
		}
	}
	slices.Sort(ns)
	return ns
}

// writeProcs writes the separate-process rows as one table, contenders side
// by side.
func (r *Report) writeProcs(b *strings.Builder) {
	if len(r.Procs) == 0 {
		return
	}
	var sizes []int
	for _, p := range r.Procs {
		if !slices.Contains(sizes, p.Plan.N) {
			sizes = append(sizes, p.Plan.N)
		}
	}
	b.WriteString("| separate rpi-agent processes | N | " + strings.Join(r.Labels, " | ") + " | target |\n")
	b.WriteString("|---|---:|" + strings.Repeat("---:|", len(r.Labels)) + "---|\n")
	row := func(measure string, target map[int]string, cell func(ProcScaleResult) string) {
		for _, n := range sizes {
			cells := make([]string, len(r.Labels))
			for i, l := range r.Labels {
				cells[i] = "–"
				for _, p := range r.Procs {
					if p.Contender == l && p.Plan.N == n {
						cells[i] = cell(p)
					}
				}
			}
			fmt.Fprintf(b, "| %s | %d | %s | %s |\n", measure, n, strings.Join(cells, " | "), target[n])
		}
	}
	trials := func(ds []time.Duration, err error) string {
		if len(ds) == 0 {
			if err != nil {
				return "**failed**"
			}
			return "–"
		}
		c := fmt.Sprintf("%s / %s (%d)", secs(Percentile(ds, 50)), secs(Percentile(ds, 99)), len(ds))
		if err != nil {
			c += " **then failed**"
		}
		return c
	}
	row("failure detection (SIGKILL) p50 / p99 (trials)", map[int]string{10: "p99 ≤ 2.5 s", 100: "p99 ≤ 5 s"},
		func(p ProcScaleResult) string { return trials(p.Detect, p.Err) })
	row("join seen by all, from process start, p50 / p99 (trials)", map[int]string{500: "≤ 5 s"},
		func(p ProcScaleResult) string { return trials(p.Join, p.Err) })
	row("cluster formation, all see all", nil, func(p ProcScaleResult) string {
		if p.Formation == 0 {
			return "**failed**"
		}
		return secs(p.Formation)
	})
	row("gossip sent per agent, idle (monitoring every 5 s)", map[int]string{100: "≤ 2 KB/s"}, func(p ProcScaleResult) string {
		if p.IdleBytes == 0 {
			return "–"
		}
		return bps(p.IdleBytes)
	})
	row("live agents declared failed (verdicts)", map[int]string{10: "0", 100: "0"}, func(p ProcScaleResult) string {
		if p.Formation == 0 {
			return "–"
		}
		return fmt.Sprintf("%d (%d)", wronged(p.FalsePositives), len(p.FalsePositives))
	})
	b.WriteString("\n")
}

// writeCPUCap writes the CPU-capped rows, contenders side by side.
func (r *Report) writeCPUCap(b *strings.Builder) {
	if len(r.CPUCap) == 0 {
		return
	}
	p := r.CPUCap[0].Plan
	fmt.Fprintf(b, "| %d rpi-agent processes, one held to %.0f %% of a core (CFS quota %v per %v) for %v | %s | target |\n",
		p.N, 100*p.Quota.Seconds()/p.Period.Seconds(), p.Quota, p.Period, p.Duration, strings.Join(r.Labels, " | "))
	b.WriteString("|---|" + strings.Repeat("---:|", len(r.Labels)) + "---|\n")
	row := func(measure, target string, cell func(CPUCapResult) string) {
		cells := make([]string, len(r.Labels))
		for i, l := range r.Labels {
			cells[i] = "–"
			for _, c := range r.CPUCap {
				if c.Contender == l {
					cells[i] = cell(c)
				}
			}
		}
		fmt.Fprintf(b, "| %s | %s | %s |\n", measure, strings.Join(cells, " | "), target)
	}
	row(fmt.Sprintf("live agents declared failed by anyone, until %v after the cap (verdicts)", p.Grace), "0", func(c CPUCapResult) string {
		if c.Detect == 0 && c.Err != nil {
			return "**failed**"
		}
		s := fmt.Sprintf("%d (%d)", wronged(c.FalsePositives), len(c.FalsePositives))
		if c.Err != nil {
			s += " **then failed**"
		}
		return s
	})
	row(fmt.Sprintf("detection of an agent SIGKILLed %v into the cap, by every other uncapped agent", p.KillAfter), "≤ 3 s", func(c CPUCapResult) string {
		if c.Detect == 0 {
			return "**failed**"
		}
		return secs(c.Detect)
	})
	row("the same, by the capped agent", "", func(c CPUCapResult) string {
		if c.DetectCapped == 0 {
			return "–"
		}
		return secs(c.DetectCapped)
	})
	row("capped agent: CPU used under the cap; CFS periods throttled (time)", "", func(c CPUCapResult) string {
		if c.CappedCPU == 0 {
			return "–"
		}
		return fmt.Sprintf("%.1f %% of a core; %d (%s)", c.CappedCPU, c.ThrottledPeriods, secs(c.Throttled))
	})
	b.WriteString("\n")
}

// writeKinds writes, for every scale result with a split (--split-kinds),
// its bandwidth windows by message kind and the counters that explain them.
func (r *Report) writeKinds(b *strings.Builder) {
	for _, s := range r.Scale {
		r.writeIdleSeries(b, s)
		if len(s.Idle.Kinds.Bytes) == 0 {
			continue
		}
		idle, upd := s.Idle, s.Update
		fmt.Fprintf(b, "| %s, N = %d: sent per node by kind | idle | share | messages/s | with updates | messages/s |\n|---|---:|---:|---:|---:|---:|\n", s.Contender, s.N)
		kinds := idle.Kinds.Kinds()
		for _, k := range upd.Kinds.Kinds() {
			if _, ok := idle.Kinds.Bytes[k]; !ok {
				kinds = append(kinds, k)
			}
		}
		total := idle.Kinds.Total()
		rate := func(w Window, k string) string {
			if w.Kinds.Messages[k] == 0 {
				return ""
			}
			return fmt.Sprintf("%.1f", w.PerNodeSecond(float64(w.Kinds.Messages[k])))
		}
		for _, k := range kinds {
			if math.Abs(idle.Kinds.Bytes[k]) < 0.5 && math.Abs(upd.Kinds.Bytes[k]) < 0.5 {
				continue
			}
			share := 0.0
			if total > 0 {
				share = 100 * idle.Kinds.Bytes[k] / total
			}
			fmt.Fprintf(b, "| %s | %s | %.1f %% | %s | %s | %s |\n", k,
				bps(max(0, idle.PerNodeSecond(idle.Kinds.Bytes[k]))), share, rate(idle, k),
				bps(max(0, upd.PerNodeSecond(upd.Kinds.Bytes[k]))), rate(upd, k))
		}
		fmt.Fprintf(b, "| all kinds (transport's count) | %s (%s) | | | %s (%s) | |\n",
			bps(idle.PerNodeSecond(total)), bps(idle.PerNodeSecond(float64(idle.Bytes))),
			bps(upd.PerNodeSecond(upd.Kinds.Total())), bps(upd.PerNodeSecond(float64(upd.Bytes))))
		names := make([]string, 0, len(idle.Counters))
		for k := range idle.Counters {
			if idle.Counters[k] > 0 || upd.Counters[k] > 0 {
				names = append(names, k)
			}
		}
		sort.Strings(names)
		for _, k := range names {
			fmt.Fprintf(b, "| counter: %s, all nodes | %d | | | %d | |\n", k, idle.Counters[k], upd.Counters[k])
		}
		fmt.Fprintf(b, "| nodes scoring themselves late at the end | %d of %d | | | %d of %d | |\n\n", idle.Degraded, idle.Nodes, upd.Degraded, upd.Nodes)
	}
}

// writeIdleSeries writes a result's idle windows one after the other, by
// the kinds that sent most in the first, when there is more than one.
func (r *Report) writeIdleSeries(b *strings.Builder, s ScaleResult) {
	if len(s.IdleSeries) < 2 {
		return
	}
	top := s.IdleSeries[0].Kinds.Kinds()
	top = top[:min(len(top), 4)]
	head := "| %s, N = %d: idle windows after formation | sent per node | %s | other kinds |\n|---|---:|%s---:|\n"
	if len(top) == 0 {
		head = "| %s, N = %d: idle windows after formation | sent per node |%s%s\n|---|---:|\n"
	}
	fmt.Fprintf(b, head, s.Contender, s.N, strings.Join(top, " | "), strings.Repeat("---:|", len(top)))
	at := s.Warmup.Seconds()
	for _, w := range s.IdleSeries {
		cells := make([]string, len(top))
		rest := w.Kinds.Total()
		for i, k := range top {
			cells[i] = bps(max(0, w.PerNodeSecond(w.Kinds.Bytes[k])))
			rest -= w.Kinds.Bytes[k]
		}
		if len(top) == 0 {
			fmt.Fprintf(b, "| %.0f–%.0f s | %s |\n", at, at+w.Seconds, bps(w.PerNodeSecond(float64(w.Bytes))))
		} else {
			fmt.Fprintf(b, "| %.0f–%.0f s | %s | %s | %s |\n", at, at+w.Seconds, bps(w.PerNodeSecond(float64(w.Bytes))), strings.Join(cells, " | "), bps(max(0, w.PerNodeSecond(rest))))
		}
		at += w.Seconds
	}
	b.WriteString("\n")
}

// wronged counts the live nodes that fps declared failed.
func wronged(fps []FalsePositive) int {
	nodes := map[string]bool{}
	for _, f := range fps {
		nodes[f.Subject] = true
	}
	return len(nodes)
}

// writeWrongVerdicts splits each scale row's false positives by the phase
// of the run and the cause of the verdict. One wrong verdict can reach
// every node (a watcher's verdict is told to all, memberlist's is
// gossiped), so each line also counts the verdicts at their origin: one per
// node and watcher for a watcher's, one per node and observer for a silence
// verdict, one per node for memberlist's.
func (r *Report) writeWrongVerdicts(b *strings.Builder) {
	for _, s := range r.Scale {
		if len(s.FalsePositives) == 0 {
			continue
		}
		type key struct {
			phase string
			cause cluster.Cause
		}
		type tally struct {
			events         int
			nodes, origins map[string]bool
		}
		var order []key
		tallies := map[key]*tally{}
		for _, f := range s.FalsePositives {
			k := key{f.Phase, f.Cause}
			t := tallies[k]
			if t == nil {
				t = &tally{nodes: map[string]bool{}, origins: map[string]bool{}}
				tallies[k] = t
				order = append(order, k)
			}
			t.events++
			t.nodes[f.Subject] = true
			t.origins[verdictOrigin(f)] = true
		}
		fmt.Fprintf(b, "| %s, N = %d: live nodes declared failed, by phase and cause | fail events | nodes | verdicts at their origin |\n|---|---:|---:|---:|\n", s.Contender, s.N)
		for _, k := range order {
			t := tallies[k]
			cause := string(k.cause)
			if cause == "" {
				cause = "unknown"
			}
			fmt.Fprintf(b, "| %s: %s | %d | %d | %d |\n", k.phase, cause, t.events, len(t.nodes), len(t.origins))
		}
		b.WriteString("\n")
	}
}

// verdictOrigin names the wrong verdict a false positive came from (see
// writeWrongVerdicts).
func verdictOrigin(f FalsePositive) string {
	switch f.Cause {
	case cluster.CauseWatcher, cluster.CausePeer:
		return f.Subject + " by " + f.By
	case cluster.CauseSilence:
		return f.Subject + " on " + f.Observer
	default:
		return f.Subject
	}
}

package api

import (
	"bytes"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// metrics answers GET /metrics in the Prometheus text exposition format
// (version 0.0.4) with what this agent alone can say: its own node's
// figures, unlabelled (Prometheus adds the target's labels), its view of the
// cluster (members by status, phi per peer), its gossip and API counters,
// and the process and Go runtime metrics. Scraping every agent so gives N
// series of each node figure for N nodes; the cluster-wide view is opt-in,
// on GET /metrics/cluster.
func (s *Server) metrics(w http.ResponseWriter, _ *http.Request) {
	// Raw backend values, not cleaned for JSON: the text format carries
	// +Inf and NaN as they are.
	self := s.b.Self()
	nodes := s.b.Nodes()
	stats := s.b.GossipStats()
	var p promWriter

	p.family("rpi_agent_info", "gauge", "Agent build and hardware information; the value is always 1.")
	p.sample("rpi_agent_info", 1, "node", self.Name, "version", s.version, "arch", self.Arch, "model", self.Model)

	p.family("rpi_members", "gauge", "Cluster members by status, as seen by this agent.")
	count := map[string]int{}
	for _, n := range nodes {
		count[n.Status]++
	}
	for _, st := range []string{apitypes.StatusAlive, apitypes.StatusSuspect, apitypes.StatusFailed, apitypes.StatusLeft} {
		p.sample("rpi_members", float64(count[st]), "status", st)
	}

	p.family("rpi_phi", "gauge", "Phi accrual suspicion level of each peer, as computed by this agent.")
	for _, n := range nodes {
		if !n.Self && n.Name != self.Name {
			p.sample("rpi_phi", n.Phi, "peer", n.Name)
		}
	}
	p.family("rpi_phi_threshold", "gauge", "Phi level above which this agent considers a peer failed.")
	p.sample("rpi_phi_threshold", self.PhiThreshold)

	p.family("rpi_gossip_messages_total", "counter", "Gossip messages sent and received by this agent.")
	p.sample("rpi_gossip_messages_total", float64(stats.MessagesSent), "direction", "sent")
	p.sample("rpi_gossip_messages_total", float64(stats.MessagesReceived), "direction", "received")
	p.family("rpi_gossip_bytes_total", "counter", "Gossip bytes sent and received by this agent.")
	p.sample("rpi_gossip_bytes_total", float64(stats.BytesSent), "direction", "sent")
	p.sample("rpi_gossip_bytes_total", float64(stats.BytesReceived), "direction", "received")
	p.family("rpi_events_dropped_total", "counter", "Membership events that event streams and hooks were too slow to take.")
	p.sample("rpi_events_dropped_total", float64(stats.EventsDropped))
	p.family("rpi_gossip_messages_dropped_total", "counter", "Received gossip messages dropped because memberlist's handler queue was full: this agent could not keep up, and counts each such round as late.")
	p.sample("rpi_gossip_messages_dropped_total", float64(stats.MessagesDropped))
	p.family("rpi_verdicts_overruled_total", "counter", "Failure verdicts on peers set aside because the peer's heartbeat arrived after it was suspected.")
	p.sample("rpi_verdicts_overruled_total", float64(stats.VerdictsOverruled))
	p.family("rpi_readvertisements_total", "counter", "Times a peer holding this agent failed asked it to re-advertise itself.")
	p.sample("rpi_readvertisements_total", float64(stats.ReadvertisementsAsked))
	p.family("rpi_silence_verdicts_total", "counter", "Peers failed by this agent, ahead of memberlist, because their heartbeats fell silent.")
	p.sample("rpi_silence_verdicts_total", float64(stats.SilenceVerdicts))
	p.family("rpi_watcher_verdicts_total", "counter", "Peers failed by this agent, ahead of memberlist, on the silence verdict of one of their watchers.")
	p.sample("rpi_watcher_verdicts_total", float64(stats.WatcherVerdicts))
	p.family("rpi_detector_health_score", "gauge", "This agent's score of its own lateness, 0 (healthy) to 8; above 0 it issues no silence verdicts and widens its windows by 1+score.")
	p.sample("rpi_detector_health_score", float64(stats.HealthScore))
	p.family("rpi_detector_late_rounds_total", "counter", "Heartbeat rounds of this agent that ran late, by cause: its timer fired late, judging and sending took too long, or received packets waited too long or were dropped.")
	for _, cause := range slices.Sorted(maps.Keys(stats.LateRounds)) {
		p.sample("rpi_detector_late_rounds_total", float64(stats.LateRounds[cause]), "cause", cause)
	}
	p.family("rpi_detector_verdicts_suppressed_total", "counter", "Silence verdicts this agent held back while it was degraded.")
	p.sample("rpi_detector_verdicts_suppressed_total", float64(stats.VerdictsSuppressed))
	if len(stats.SlipBuckets) == len(stats.SlipCounts) {
		p.family("rpi_detector_timer_slip_ratio", "histogram", "How late this agent's heartbeat timer fired, in multiples of the round's slack (one round, or a sixteenth of the silence timeout it serves).")
		for i, le := range stats.SlipBuckets {
			p.sample("rpi_detector_timer_slip_ratio_bucket", float64(stats.SlipCounts[i]), "le", strconv.FormatFloat(le, 'g', -1, 64))
		}
		p.sample("rpi_detector_timer_slip_ratio_bucket", float64(stats.SlipCount), "le", "+Inf")
		p.sample("rpi_detector_timer_slip_ratio_sum", stats.SlipSum)
		p.sample("rpi_detector_timer_slip_ratio_count", float64(stats.SlipCount))
	}
	p.family("rpi_members_reaped_total", "counter", "Members removed from this agent's view: failed or left for reap_failed_after or reap_left_after, or force-left.")
	p.sample("rpi_members_reaped_total", float64(stats.MembersReaped))
	p.family("rpi_gossip_rejected_total", "counter", "Gossip messages this agent refused, by reason: names or fields against the rules, bad signatures, keys other than the pinned one, leave intents with no pinned key, desired entries too far ahead of its clock.")
	for _, reason := range slices.Sorted(maps.Keys(stats.Rejected)) {
		p.sample("rpi_gossip_rejected_total", float64(stats.Rejected[reason]), "reason", reason)
	}
	p.family("rpi_key_conflicts", "gauge", "Node names this agent sees offered with another signing key than the one it pinned (GET /v1/conflicts).")
	p.sample("rpi_key_conflicts", float64(len(s.b.KeyConflicts())))
	s.limitMetrics(&p)

	nodeFigures(&p, []apitypes.Node{self}, false)

	// The process (CPU, memory, file descriptors) and Go runtime (heap,
	// GC, goroutines) metrics: process_* and go_*.
	mfs, err := runtimeRegistry().Gather()
	if err != nil { // what was gathered is still served
		s.log.Warn("metrics: gather process and runtime metrics", "err", err)
	}
	enc := expfmt.NewEncoder(&p.buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			s.log.Warn("metrics: encode process and runtime metrics", "metric", mf.GetName(), "err", err)
		}
	}
	p.write(w)
}

// runtimeRegistry holds the client library's process and Go runtime
// collectors, the same in every Server of the process.
var runtimeRegistry = sync.OnceValue(func() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
})

// clusterMetrics answers GET /metrics/cluster: the node figures of every
// current member (alive or suspect) as this agent last heard them by
// gossip, labelled node="<name>", for people who scrape one Pi instead of
// all. Failed and left nodes are left out: their samples are stale. Scrape
// it with honor_labels: true so the node label is the member's, not the
// scraped agent's.
func (s *Server) clusterMetrics(w http.ResponseWriter, _ *http.Request) {
	var current []apitypes.Node
	for _, n := range s.b.Nodes() {
		if n.Status == apitypes.StatusAlive || n.Status == apitypes.StatusSuspect {
			current = append(current, n)
		}
	}
	var p promWriter
	nodeFigures(&p, current, true)
	p.write(w)
}

// nodeFigures writes the monitoring sample of each of nodes, labelled
// node="<name>" when labelled is true. Percentages are 0-1 ratios and every
// unit is in the name, as Prometheus names its metrics.
func nodeFigures(p *promWriter, nodes []apitypes.Node, labelled bool) {
	gauge := func(name, help string, value func(apitypes.Monitoring) (float64, bool)) {
		p.family(name, "gauge", help)
		for _, n := range nodes {
			v, ok := value(n.Monitoring)
			switch {
			case !ok:
			case labelled:
				p.sample(name, v, "node", n.Name)
			default:
				p.sample(name, v)
			}
		}
	}
	always := func(f func(apitypes.Monitoring) float64) func(apitypes.Monitoring) (float64, bool) {
		return func(m apitypes.Monitoring) (float64, bool) { return f(m), true }
	}
	gauge("rpi_cpus", "Number of logical CPUs.", always(func(m apitypes.Monitoring) float64 { return float64(m.CPUs) }))
	gauge("rpi_cpu_busy_ratio", "Share of CPU time busy over the last sample interval, 0 to 1, all CPUs together.", always(func(m apitypes.Monitoring) float64 { return m.CPUPercent / 100 }))
	gauge("rpi_memory_used_bytes", "Memory in use, in bytes.", always(func(m apitypes.Monitoring) float64 { return float64(m.MemUsed) }))
	gauge("rpi_memory_total_bytes", "Total memory, in bytes.", always(func(m apitypes.Monitoring) float64 { return float64(m.MemTotal) }))
	gauge("rpi_load1", "Load average over 1 minute.", always(func(m apitypes.Monitoring) float64 { return m.Load1 }))
	gauge("rpi_load5", "Load average over 5 minutes.", always(func(m apitypes.Monitoring) float64 { return m.Load5 }))
	gauge("rpi_load15", "Load average over 15 minutes.", always(func(m apitypes.Monitoring) float64 { return m.Load15 }))
	gauge("rpi_temperature_celsius", "SoC temperature in degrees Celsius, where the node has a sensor.",
		func(m apitypes.Monitoring) (float64, bool) {
			if m.TempC == nil {
				return 0, false
			}
			return *m.TempC, true
		})
	gauge("rpi_disk_used_ratio", "Share of the root filesystem in use, 0 to 1.", always(func(m apitypes.Monitoring) float64 { return m.DiskUsedPercent / 100 }))
	gauge("rpi_uptime_seconds", "Seconds since the node booted.", always(func(m apitypes.Monitoring) float64 { return float64(m.UptimeS) }))
	gauge("rpi_sample_timestamp_seconds", "When the node took the sample above, in seconds since the Unix epoch; time() minus it is the sample's age.",
		func(m apitypes.Monitoring) (float64, bool) {
			if m.SampledAt.IsZero() {
				return 0, false
			}
			return float64(m.SampledAt.UnixMilli()) / 1000, true
		})
}

// promWriter builds a text exposition.
type promWriter struct{ buf bytes.Buffer }

// family writes the HELP and TYPE lines of a metric.
func (p *promWriter) family(name, typ, help string) {
	p.buf.WriteString("# HELP " + name + " " + helpEscaper.Replace(help) + "\n")
	p.buf.WriteString("# TYPE " + name + " " + typ + "\n")
}

// sample writes one sample; labels are name/value pairs.
func (p *promWriter) sample(name string, v float64, labels ...string) {
	p.buf.WriteString(name)
	if len(labels) > 0 {
		p.buf.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				p.buf.WriteByte(',')
			}
			p.buf.WriteString(labels[i] + `="` + labelEscaper.Replace(labels[i+1]) + `"`)
		}
		p.buf.WriteByte('}')
	}
	p.buf.WriteByte(' ')
	p.buf.WriteString(formatFloat(v))
	p.buf.WriteByte('\n')
}

// write answers the exposition.
func (p *promWriter) write(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(p.buf.Bytes())
}

// Escaping per the exposition format: label values escape backslash, double
// quote and line feed; HELP text escapes backslash and line feed.
var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

func formatFloat(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

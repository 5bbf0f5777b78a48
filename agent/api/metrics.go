package api

import (
	"bytes"
	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// metrics answers the Prometheus text exposition format (version 0.0.4),
// written by hand to keep the agent free of a metrics dependency.
//
// Monitoring gauges are given for every current member (alive or suspect),
// labelled node="<name>", so one scraped agent shows the whole cluster;
// failed and left nodes are left out because their samples are stale.
func (s *Server) metrics(w http.ResponseWriter, _ *http.Request) {
	// Raw backend values, not cleaned for JSON: the text format carries
	// +Inf and NaN as they are.
	self := s.b.Self()
	nodes := s.b.Nodes()
	stats := s.b.GossipStats()
	var p promWriter

	p.family("rpi_agent_info", "gauge", "Agent build information; the value is always 1.")
	p.sample("rpi_agent_info", 1, "node", self.Name, "version", s.version)

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
	p.family("rpi_verdicts_overruled_total", "counter", "Failure verdicts on peers set aside because the peer's heartbeat arrived after it was suspected.")
	p.sample("rpi_verdicts_overruled_total", float64(stats.VerdictsOverruled))
	p.family("rpi_readvertisements_total", "counter", "Times a peer holding this agent failed asked it to re-advertise itself.")
	p.sample("rpi_readvertisements_total", float64(stats.ReadvertisementsAsked))
	p.family("rpi_silence_verdicts_total", "counter", "Peers failed by this agent, ahead of memberlist, because their heartbeats fell silent.")
	p.sample("rpi_silence_verdicts_total", float64(stats.SilenceVerdicts))
	p.family("rpi_watcher_verdicts_total", "counter", "Peers failed by this agent, ahead of memberlist, on the silence verdict of one of their watchers.")
	p.sample("rpi_watcher_verdicts_total", float64(stats.WatcherVerdicts))
	p.family("rpi_gossip_rejected_total", "counter", "Gossip messages this agent refused, by reason: names or fields against the rules, bad signatures, keys other than the pinned one, leave intents with no pinned key, desired entries too far ahead of its clock.")
	for _, reason := range slices.Sorted(maps.Keys(stats.Rejected)) {
		p.sample("rpi_gossip_rejected_total", float64(stats.Rejected[reason]), "reason", reason)
	}
	p.family("rpi_key_conflicts", "gauge", "Node names this agent sees offered with another signing key than the one it pinned (GET /v1/conflicts).")
	p.sample("rpi_key_conflicts", float64(len(s.b.KeyConflicts())))
	s.limitMetrics(&p)

	current := make([]apitypes.Node, 0, len(nodes))
	for _, n := range nodes {
		if n.Status == apitypes.StatusAlive || n.Status == apitypes.StatusSuspect {
			current = append(current, n)
		}
	}
	gauge := func(name, help string, value func(apitypes.Monitoring) (float64, bool)) {
		p.family(name, "gauge", help)
		for _, n := range current {
			if v, ok := value(n.Monitoring); ok {
				p.sample(name, v, "node", n.Name)
			}
		}
	}
	always := func(f func(apitypes.Monitoring) float64) func(apitypes.Monitoring) (float64, bool) {
		return func(m apitypes.Monitoring) (float64, bool) { return f(m), true }
	}
	gauge("rpi_cpus", "Number of logical CPUs.", always(func(m apitypes.Monitoring) float64 { return float64(m.CPUs) }))
	gauge("rpi_cpu_percent", "CPU busy percentage over the last sample interval (0-100).", always(func(m apitypes.Monitoring) float64 { return m.CPUPercent }))
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
	gauge("rpi_disk_used_percent", "Root filesystem usage percentage (0-100).", always(func(m apitypes.Monitoring) float64 { return m.DiskUsedPercent }))
	gauge("rpi_uptime_seconds", "Seconds since the node booted.", always(func(m apitypes.Monitoring) float64 { return float64(m.UptimeS) }))

	h := w.Header()
	h.Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(p.buf.Bytes())
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

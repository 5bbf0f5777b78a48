package api

import (
	"encoding/json"
	"fmt"
	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"math"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

var (
	metricNameRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`)
	labelNameRE  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*`)
	helpRE       = regexp.MustCompile(`^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$`)
	typeRE       = regexp.MustCompile(`^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|summary|histogram)$`)
)

// parseExposition checks text line by line against the Prometheus text
// format (0.0.4) and returns its samples: every family has one HELP and one
// TYPE line before its samples, samples of a family are together, label
// values use only the allowed escapes, and no series appears twice.
func parseExposition(text string) ([]promSample, error) {
	if !strings.HasSuffix(text, "\n") {
		return nil, fmt.Errorf("exposition does not end with a line feed")
	}
	var samples []promSample
	typed := map[string]string{} // family name -> type
	helped := map[string]bool{}
	closed := map[string]bool{} // families whose samples are over
	seen := map[string]bool{}
	current := ""
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		n := i + 1
		if m := helpRE.FindStringSubmatch(line); m != nil {
			if helped[m[1]] {
				return nil, fmt.Errorf("line %d: second HELP for %s", n, m[1])
			}
			helped[m[1]] = true
			continue
		}
		if m := typeRE.FindStringSubmatch(line); m != nil {
			if typed[m[1]] != "" {
				return nil, fmt.Errorf("line %d: second TYPE for %s", n, m[1])
			}
			typed[m[1]] = m[2]
			continue
		}
		if strings.HasPrefix(line, "#") {
			return nil, fmt.Errorf("line %d: malformed comment %q", n, line)
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("line %d %q: %w", n, line, err)
		}
		family := familyOf(s.name, typed)
		if typed[family] == "" || !helped[family] {
			return nil, fmt.Errorf("line %d: sample of %s before its HELP and TYPE", n, s.name)
		}
		if family != current {
			if closed[family] {
				return nil, fmt.Errorf("line %d: samples of %s are not together", n, family)
			}
			if current != "" {
				closed[current] = true
			}
			current = family
		}
		key := s.name + fmt.Sprint(s.labels)
		if seen[key] {
			return nil, fmt.Errorf("line %d: duplicate series %s", n, key)
		}
		seen[key] = true
		samples = append(samples, s)
	}
	return samples, nil
}

// familyOf is the family a sample belongs to: summaries and histograms
// have _sum, _count (and _bucket) samples under their family's name.
func familyOf(name string, typed map[string]string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch typed[base] {
		case "histogram":
			return base
		case "summary":
			if suffix != "_bucket" {
				return base
			}
		}
	}
	return name
}

func parseSample(line string) (promSample, error) {
	s := promSample{labels: map[string]string{}}
	s.name = metricNameRE.FindString(line)
	if s.name == "" {
		return s, fmt.Errorf("no metric name")
	}
	rest := line[len(s.name):]
	if strings.HasPrefix(rest, "{") {
		rest = rest[1:]
		for {
			name := labelNameRE.FindString(rest)
			if name == "" || !strings.HasPrefix(rest[len(name):], `="`) {
				return s, fmt.Errorf("bad label at %q", rest)
			}
			rest = rest[len(name)+2:]
			var val strings.Builder
			for {
				if rest == "" {
					return s, fmt.Errorf("unterminated label value")
				}
				c := rest[0]
				rest = rest[1:]
				if c == '"' {
					break
				}
				if c == '\n' {
					return s, fmt.Errorf("raw line feed in label value")
				}
				if c == '\\' {
					if rest == "" {
						return s, fmt.Errorf("dangling backslash")
					}
					switch rest[0] {
					case '\\':
						val.WriteByte('\\')
					case '"':
						val.WriteByte('"')
					case 'n':
						val.WriteByte('\n')
					default:
						return s, fmt.Errorf("invalid escape \\%c", rest[0])
					}
					rest = rest[1:]
					continue
				}
				val.WriteByte(c)
			}
			if _, dup := s.labels[name]; dup {
				return s, fmt.Errorf("label %s twice", name)
			}
			s.labels[name] = val.String()
			if strings.HasPrefix(rest, ",") {
				rest = rest[1:]
				continue
			}
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			return s, fmt.Errorf("expected , or } at %q", rest)
		}
	}
	if !strings.HasPrefix(rest, " ") {
		return s, fmt.Errorf("no space before the value")
	}
	v, err := strconv.ParseFloat(rest[1:], 64)
	if err != nil {
		return s, fmt.Errorf("value: %w", err)
	}
	s.value = v
	return s, nil
}

// find returns the value of the series with exactly these labels.
func find(samples []promSample, name string, labels ...string) (float64, bool) {
	for _, s := range samples {
		if s.name != name || len(s.labels) != len(labels)/2 {
			continue
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if s.labels[labels[i]] != labels[i+1] {
				match = false
			}
		}
		if match {
			return s.value, true
		}
	}
	return 0, false
}

// nodeFigureNames are the monitoring families: one series per node.
var nodeFigureNames = []string{"rpi_cpus", "rpi_cpu_busy_ratio", "rpi_memory_used_bytes", "rpi_memory_total_bytes",
	"rpi_load1", "rpi_load5", "rpi_load15", "rpi_temperature_celsius", "rpi_disk_used_ratio", "rpi_uptime_seconds",
	"rpi_sample_timestamp_seconds"}

// scrape GETs path and parses it as an exposition.
func scrape(t *testing.T, url string) ([]promSample, string) {
	t.Helper()
	a := call(t, "GET", url, "", nil)
	if a.code != 200 || a.header.Get("Content-Type") != "text/plain; version=0.0.4; charset=utf-8" {
		t.Fatalf("GET %s = %d %q", url, a.code, a.header.Get("Content-Type"))
	}
	samples, err := parseExposition(a.body)
	if err != nil {
		t.Fatalf("GET %s: invalid exposition: %v\n%s", url, err, a.body)
	}
	return samples, a.body
}

type wantSample struct {
	name   string
	labels []string
	value  float64
}

func checkSamples(t *testing.T, samples []promSample, want []wantSample) {
	t.Helper()
	for _, w := range want {
		got, ok := find(samples, w.name, w.labels...)
		if !ok {
			t.Errorf("missing %s%q", w.name, w.labels)
		} else if math.Abs(got-w.value) > 1e-9*math.Max(1, math.Abs(w.value)) && got != w.value {
			t.Errorf("%s%q = %v, want %v", w.name, w.labels, got, w.value)
		}
	}
}

// TestMetrics checks that /metrics gives this agent's own figures once,
// unlabelled, and what only it knows about the others, but not their
// figures: N scraped agents give N series of each, not N².
func TestMetrics(t *testing.T) {
	nodes := testNodes()
	const weird = "we\"ird\\node\nname"
	nodes[1].Name = weird
	nodes[3].Phi = math.Inf(1) // certainly failed
	ts, f, _ := testServer(t, "", nodes...)
	f.stats = GossipStats{MessagesSent: 1200, MessagesReceived: 1100, BytesSent: 98765, BytesReceived: 87654, EventsDropped: 7, MessagesDropped: 11, VerdictsOverruled: 3, ReadvertisementsAsked: 2, SilenceVerdicts: 4, WatcherVerdicts: 5}
	f.stats.HealthScore = 2
	f.stats.LateRounds = map[string]uint64{"timer": 3, "send": 1, "receive": 0}
	f.stats.VerdictsSuppressed = 4
	f.stats.SlipBuckets, f.stats.SlipCounts, f.stats.SlipCount, f.stats.SlipSum = []float64{0.5, 1, 2}, []uint64{5, 8, 9}, 10, 7.5

	samples, body := scrape(t, ts.URL+"/metrics")
	sampled := float64(nodes[0].Monitoring.SampledAt.Unix())
	checkSamples(t, samples, []wantSample{
		{"rpi_agent_info", []string{"node", "pi-1", "version", "v1.2.3", "arch", "arm64", "model", "Raspberry Pi 4 Model B Rev 1.4"}, 1},
		{"rpi_members", []string{"status", "alive"}, 2},
		{"rpi_members", []string{"status", "suspect"}, 1},
		{"rpi_members", []string{"status", "failed"}, 1},
		{"rpi_members", []string{"status", "left"}, 0},
		{"rpi_phi", []string{"peer", weird}, 0.84},
		{"rpi_phi", []string{"peer", "pi-3"}, 6.1},
		{"rpi_phi", []string{"peer", "pi-4"}, math.Inf(1)},
		{"rpi_phi_threshold", nil, 8},
		{"rpi_gossip_messages_total", []string{"direction", "sent"}, 1200},
		{"rpi_gossip_messages_total", []string{"direction", "received"}, 1100},
		{"rpi_gossip_bytes_total", []string{"direction", "sent"}, 98765},
		{"rpi_gossip_bytes_total", []string{"direction", "received"}, 87654},
		{"rpi_events_dropped_total", nil, 7},
		{"rpi_gossip_messages_dropped_total", nil, 11},
		{"rpi_verdicts_overruled_total", nil, 3},
		{"rpi_readvertisements_total", nil, 2},
		{"rpi_silence_verdicts_total", nil, 4},
		{"rpi_watcher_verdicts_total", nil, 5},
		{"rpi_detector_health_score", nil, 2},
		{"rpi_detector_late_rounds_total", []string{"cause", "timer"}, 3},
		{"rpi_detector_late_rounds_total", []string{"cause", "send"}, 1},
		{"rpi_detector_late_rounds_total", []string{"cause", "receive"}, 0},
		{"rpi_detector_verdicts_suppressed_total", nil, 4},
		{"rpi_detector_timer_slip_ratio_bucket", []string{"le", "0.5"}, 5},
		{"rpi_detector_timer_slip_ratio_bucket", []string{"le", "1"}, 8},
		{"rpi_detector_timer_slip_ratio_bucket", []string{"le", "2"}, 9},
		{"rpi_detector_timer_slip_ratio_bucket", []string{"le", "+Inf"}, 10},
		{"rpi_detector_timer_slip_ratio_sum", nil, 7.5},
		{"rpi_detector_timer_slip_ratio_count", nil, 10},
		// pi-1's own figures, percentages as 0-1 ratios.
		{"rpi_cpus", nil, 4},
		{"rpi_cpu_busy_ratio", nil, 0.125},
		{"rpi_memory_used_bytes", nil, 1 << 30},
		{"rpi_memory_total_bytes", nil, 4 << 30},
		{"rpi_load1", nil, 0.52},
		{"rpi_load5", nil, 0.40},
		{"rpi_load15", nil, 0.31},
		{"rpi_temperature_celsius", nil, 48.3},
		{"rpi_disk_used_ratio", nil, 0.375},
		{"rpi_uptime_seconds", nil, 3600},
		{"rpi_sample_timestamp_seconds", nil, sampled},
	})
	for _, name := range nodeFigureNames {
		n := 0
		for _, s := range samples {
			if s.name == name {
				n++
				if len(s.labels) != 0 {
					t.Errorf("%s%v: own figures carry no labels; Prometheus adds the target's", name, s.labels)
				}
			}
		}
		if n != 1 {
			t.Errorf("%d series of %s on /metrics, want 1 (this node's)", n, name)
		}
	}
	for _, old := range []string{"rpi_cpu_percent", "rpi_disk_used_percent"} {
		if strings.Contains(body, old) {
			t.Errorf("/metrics still has %s, renamed to a _ratio", old)
		}
	}
	if _, ok := find(samples, "rpi_phi", "peer", "pi-1"); ok {
		t.Errorf("/metrics has a phi for the agent itself")
	}
	if !strings.Contains(body, `rpi_phi{peer="we\"ird\\node\nname"} 0.84`+"\n") {
		t.Errorf("label value not escaped as the format says:\n%s", body)
	}
	// The process and runtime metrics, from the client library.
	if _, ok := find(samples, "process_cpu_seconds_total"); !ok {
		t.Errorf("no process_cpu_seconds_total")
	}
	for _, name := range []string{"process_resident_memory_bytes", "process_open_fds", "go_goroutines", "go_memstats_heap_alloc_bytes"} {
		v, ok := find(samples, name)
		if ok && v == 0 && name == "process_resident_memory_bytes" && selfStatRSS(t) == 0 {
			// qemu-user fakes /proc/self/stat with an RSS of 0: the
			// library reports what the process is told.
			t.Logf("%s = 0, as /proc/self/stat says (emulated?)", name)
			continue
		}
		if !ok || v <= 0 {
			t.Errorf("%s = %v, %v; want a positive value", name, v, ok)
		}
	}

	// JSON cannot carry +Inf: the API still answers, with a finite phi.
	r := call(t, "GET", ts.URL+"/v1/nodes/pi-4", "", nil)
	var n apitypes.Node
	if err := json.Unmarshal([]byte(r.body), &n); r.code != 200 || err != nil || n.Phi != math.MaxFloat64 {
		t.Errorf("GET /v1/nodes/pi-4 with infinite phi = %d %v phi=%v", r.code, err, n.Phi)
	}
}

// TestClusterMetrics checks the opt-in cluster view: every current member's
// figures labelled with its name, none for failed nodes.
func TestClusterMetrics(t *testing.T) {
	nodes := testNodes()
	const weird = "we\"ird\\node\nname"
	nodes[1].Name = weird
	ts, _, _ := testServer(t, "", nodes...)

	samples, _ := scrape(t, ts.URL+"/metrics/cluster")
	checkSamples(t, samples, []wantSample{
		{"rpi_cpu_busy_ratio", []string{"node", "pi-1"}, 0.125},
		{"rpi_cpu_busy_ratio", []string{"node", weird}, 0.55},
		{"rpi_cpu_busy_ratio", []string{"node", "pi-3"}, 0.97},
		{"rpi_memory_used_bytes", []string{"node", weird}, 6 << 30},
		{"rpi_memory_total_bytes", []string{"node", "pi-1"}, 4 << 30},
		{"rpi_load1", []string{"node", "pi-3"}, 3.9},
		{"rpi_temperature_celsius", []string{"node", "pi-1"}, 48.3},
		{"rpi_disk_used_ratio", []string{"node", "pi-3"}, 0.9},
		{"rpi_sample_timestamp_seconds", []string{"node", "pi-3"}, float64(nodes[2].Monitoring.SampledAt.Unix())},
	})
	for _, name := range nodeFigureNames {
		got := map[string]bool{}
		for _, s := range samples {
			if s.name == name {
				got[s.labels["node"]] = true
			}
		}
		want := map[string]bool{"pi-1": true, weird: true, "pi-3": true}
		if name == "rpi_temperature_celsius" {
			delete(want, "pi-3") // no sensor
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s for nodes %v, want %v (alive and suspect, not failed)", name, got, want)
		}
	}
	if _, ok := find(samples, "process_resident_memory_bytes"); ok {
		t.Errorf("/metrics/cluster has the agent's own process metrics")
	}
}

// TestMetricsPromtool runs Prometheus' own linter over both endpoints.
func TestMetricsPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("skipping: promtool not found (Debian package prometheus; make deps installs it)")
	}
	nodes := testNodes()
	nodes[3].Phi = math.Inf(1)
	ts, f, _ := testServer(t, "", nodes...)
	f.stats.LateRounds = map[string]uint64{"timer": 3}
	f.stats.SlipBuckets, f.stats.SlipCounts, f.stats.SlipCount, f.stats.SlipSum = []float64{0.5, 1}, []uint64{5, 8}, 10, 7.5
	for _, path := range []string{"/metrics", "/metrics/cluster"} {
		a := call(t, "GET", ts.URL+path, "", nil)
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(a.body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics on %s: %v\n%s", path, err, out)
		}
	}
}

func TestParseExpositionRejects(t *testing.T) {
	for _, bad := range []string{
		"rpi_x 1\n", // no HELP/TYPE
		"# HELP rpi_x h\n# TYPE rpi_x gauge\nrpi_x{a=\"b\\t\"} 1\n",
		"# HELP rpi_x h\n# TYPE rpi_x gauge\nrpi_x{a=\"b} 1\n",
		"# HELP rpi_x h\n# TYPE rpi_x gauge\nrpi_x one\n",
		"# HELP rpi_x h\n# TYPE rpi_x gauge\nrpi_x 1\nrpi_x 2\n",
		"# HELP rpi_x h\n# TYPE rpi_x untyped\nrpi_x 1\n",
		"# HELP rpi_x h\n# TYPE rpi_x gauge\nrpi_x_sum 1\n",
	} {
		if _, err := parseExposition(bad); err == nil {
			t.Errorf("parser accepted %q", bad)
		}
	}
}

// selfStatRSS is the resident set size in pages that /proc/self/stat gives
// this process (field 24), which the client library's process collector
// reports.
func selfStatRSS(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	// The command name (field 2) may hold spaces; fields count from after it.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 22 {
		t.Fatalf("/proc/self/stat has %d fields after the name", len(fields))
	}
	rss, err := strconv.ParseInt(fields[21], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return rss
}

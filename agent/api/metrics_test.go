package api

import (
	"encoding/json"
	"fmt"
	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"math"
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
	typeRE       = regexp.MustCompile(`^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge)$`)
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
	typed := map[string]bool{}
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
			if typed[m[1]] {
				return nil, fmt.Errorf("line %d: second TYPE for %s", n, m[1])
			}
			typed[m[1]] = true
			continue
		}
		if strings.HasPrefix(line, "#") {
			return nil, fmt.Errorf("line %d: malformed comment %q", n, line)
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("line %d %q: %w", n, line, err)
		}
		if !typed[s.name] || !helped[s.name] {
			return nil, fmt.Errorf("line %d: sample of %s before its HELP and TYPE", n, s.name)
		}
		if s.name != current {
			if closed[s.name] {
				return nil, fmt.Errorf("line %d: samples of %s are not together", n, s.name)
			}
			if current != "" {
				closed[current] = true
			}
			current = s.name
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

func TestMetrics(t *testing.T) {
	nodes := testNodes()
	const weird = "we\"ird\\node\nname"
	nodes[1].Name = weird
	nodes[3].Phi = math.Inf(1) // certainly failed
	ts, f, _ := testServer(t, "", nodes...)
	f.stats = GossipStats{MessagesSent: 1200, MessagesReceived: 1100, BytesSent: 98765, BytesReceived: 87654, EventsDropped: 7, VerdictsOverruled: 3, ReadvertisementsAsked: 2, SilenceVerdicts: 4, WatcherVerdicts: 5}

	a := call(t, "GET", ts.URL+"/metrics", "", nil)
	if a.code != 200 || a.header.Get("Content-Type") != "text/plain; version=0.0.4; charset=utf-8" {
		t.Fatalf("GET /metrics = %d %q", a.code, a.header.Get("Content-Type"))
	}
	samples, err := parseExposition(a.body)
	if err != nil {
		t.Fatalf("invalid exposition: %v\n%s", err, a.body)
	}

	want := []struct {
		name   string
		labels []string
		value  float64
	}{
		{"rpi_agent_info", []string{"node", "pi-1", "version", "v1.2.3"}, 1},
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
		{"rpi_verdicts_overruled_total", nil, 3},
		{"rpi_readvertisements_total", nil, 2},
		{"rpi_silence_verdicts_total", nil, 4},
		{"rpi_watcher_verdicts_total", nil, 5},
		{"rpi_cpu_percent", []string{"node", "pi-1"}, 12.5},
		{"rpi_cpu_percent", []string{"node", "pi-3"}, 97},
		{"rpi_memory_used_bytes", []string{"node", weird}, 6 << 30},
		{"rpi_memory_total_bytes", []string{"node", "pi-1"}, 4 << 30},
		{"rpi_load1", []string{"node", "pi-1"}, 0.52},
		{"rpi_load5", []string{"node", "pi-1"}, 0.40},
		{"rpi_load15", []string{"node", "pi-1"}, 0.31},
		{"rpi_temperature_celsius", []string{"node", "pi-1"}, 48.3},
		{"rpi_disk_used_percent", []string{"node", "pi-3"}, 90},
	}
	for _, w := range want {
		got, ok := find(samples, w.name, w.labels...)
		if !ok {
			t.Errorf("missing %s%q", w.name, w.labels)
		} else if got != w.value {
			t.Errorf("%s%q = %v, want %v", w.name, w.labels, got, w.value)
		}
	}
	absent := []struct {
		name   string
		labels []string
	}{
		{"rpi_phi", []string{"peer", "pi-1"}},                 // no phi for ourselves
		{"rpi_temperature_celsius", []string{"node", "pi-3"}}, // no sensor
		{"rpi_cpu_percent", []string{"node", "pi-4"}},         // failed: stale sample
		{"rpi_temperature_celsius", []string{"node", "pi-4"}},
	}
	for _, w := range absent {
		if _, ok := find(samples, w.name, w.labels...); ok {
			t.Errorf("unexpected %s%q", w.name, w.labels)
		}
	}
	if !strings.Contains(a.body, `rpi_phi{peer="we\"ird\\node\nname"} 0.84`+"\n") {
		t.Errorf("label value not escaped as the format says:\n%s", a.body)
	}

	// JSON cannot carry +Inf: the API still answers, with a finite phi.
	r := call(t, "GET", ts.URL+"/v1/nodes/pi-4", "", nil)
	var n apitypes.Node
	if err := json.Unmarshal([]byte(r.body), &n); r.code != 200 || err != nil || n.Phi != math.MaxFloat64 {
		t.Errorf("GET /v1/nodes/pi-4 with infinite phi = %d %v phi=%v", r.code, err, n.Phi)
	}
}

func TestParseExpositionRejects(t *testing.T) {
	for _, bad := range []string{
		"rpi_x 1\n", // no HELP/TYPE
		"# HELP rpi_x h\n# TYPE rpi_x gauge\nrpi_x{a=\"b\\t\"} 1\n",
		"# HELP rpi_x h\n# TYPE rpi_x gauge\nrpi_x{a=\"b} 1\n",
		"# HELP rpi_x h\n# TYPE rpi_x gauge\nrpi_x one\n",
		"# HELP rpi_x h\n# TYPE rpi_x gauge\nrpi_x 1\nrpi_x 2\n",
		"# HELP rpi_x h\n# TYPE rpi_x summary\nrpi_x 1\n",
	} {
		if _, err := parseExposition(bad); err == nil {
			t.Errorf("parser accepted %q", bad)
		}
	}
}

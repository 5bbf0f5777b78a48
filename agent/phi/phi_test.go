package phi

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-4 {
		t.Errorf("%s = %.6f, want %.6f", what, got, want)
	}
}

// conf has no acceptable pause so the hand arithmetic below stays simple.
func conf() Config {
	return Config{Threshold: 8, WindowSize: 1000, MinStdDev: 100 * time.Millisecond, FirstHeartbeatEstimate: time.Second}
}

func TestPhiZeroBeforeFirstHeartbeat(t *testing.T) {
	d := New(conf())
	if p := d.Phi(at(100000)); p != 0 {
		t.Fatalf("phi before any heartbeat = %v, want 0", p)
	}
	if !d.Available(at(100000)) {
		t.Fatal("peer without heartbeats yet must count as available")
	}
}

func TestPhiBootstrapHandComputed(t *testing.T) {
	d := New(conf())
	d.Heartbeat(at(0))
	// The first heartbeat seeds the window with 750 ms and 1250 ms:
	// mean 1000 ms, population std dev sqrt((250² + 250²)/2) = 250 ms.

	// 1000 ms later: y = (1000-1000)/250 = 0, z = 0,
	// phi = log10(1 + e^0) = log10(2) = 0.301030.
	near(t, "phi(+1000ms)", d.Phi(at(1000)), 0.301030)

	// 750 ms: y = -1, z = -1*(1.5976 + 0.070566) = -1.668166,
	// e^z = 0.188617, phi = log10(1.188617) = 0.075033.
	near(t, "phi(+750ms)", d.Phi(at(750)), 0.075033)

	// 1500 ms: y = 2, z = 2*(1.5976 + 0.070566*4) = 3.759728,
	// e^z = 42.941, phi = log10(43.941) = 1.642828.
	near(t, "phi(+1500ms)", d.Phi(at(1500)), 1.642828)

	// 2000 ms: y = 4, z = 4*(1.5976 + 0.070566*16) = 10.906624,
	// e^z = 54536.42, phi = log10(54537.42) = 4.736695.
	near(t, "phi(+2000ms)", d.Phi(at(2000)), 4.736695)
}

func TestPhiMatchesAkkaFormula(t *testing.T) {
	// The stable form must equal the textbook expression wherever the
	// latter does not overflow.
	for _, y := range []float64{-3, -1, -0.25, 0, 0.5, 1, 2, 3, 5} {
		e := math.Exp(-y * (1.5976 + 0.070566*y*y))
		want := -math.Log10(1 - 1/(1+e))
		near(t, "phi(y)", phi(y*100+1000, 1000, 100), want)
	}
}

func TestAcceptablePauseShiftsMean(t *testing.T) {
	c := conf()
	c.AcceptablePause = 500 * time.Millisecond
	d := New(c)
	d.Heartbeat(at(0))
	// mean = 1000 + 500 = 1500 ms, std 250 ms: at 1500 ms y = 0, phi = log10 2.
	near(t, "phi(+1500ms)", d.Phi(at(1500)), 0.301030)
}

func TestWindowEvictionAndMinStdDev(t *testing.T) {
	c := conf()
	c.WindowSize = 3
	d := New(c)
	d.Heartbeat(at(0))    // window [750 1250]
	d.Heartbeat(at(1000)) // [750 1250 1000]
	d.Heartbeat(at(2000)) // 750 evicted: [1000 1250 1000]
	// mean 1083.33, std sqrt((83.33²*2 + 166.67²)/3) = 117.85.
	// At +1083.33 ms after the last heartbeat, y = 0: phi = log10 2.
	near(t, "phi(window of 3)", d.Phi(at(2000).Add(1083333333*time.Nanosecond)), 0.301030)

	d.Heartbeat(at(3000)) // 1250 evicted: [1000 1000 1000], std 0
	// std 0 is floored to MinStdDev = 100 ms; mean 1000. At +1200 ms:
	// y = (1200-1000)/100 = 2, phi = 1.642828 as in the bootstrap test.
	near(t, "phi(min std dev)", d.Phi(at(4200)), 1.642828)
}

func TestPhiGrowsMonotonicallyWithSilence(t *testing.T) {
	d := New(conf())
	for i := 0; i <= 10; i++ {
		d.Heartbeat(at(i * 1000))
	}
	prev := -1.0
	crossed := false
	for ms := 10000; ms <= 10000+3600*1000; ms += 250 {
		p := d.Phi(at(ms))
		if math.IsInf(p, 0) || math.IsNaN(p) {
			t.Fatalf("phi at +%d ms = %v, want a finite number", ms-10000, p)
		}
		if p < prev {
			t.Fatalf("phi fell from %v to %v at +%d ms", prev, p, ms-10000)
		}
		prev = p
		if !d.Available(at(ms)) {
			crossed = true
		}
	}
	if !crossed {
		t.Fatalf("phi never crossed threshold 8 in an hour of silence (last %v)", prev)
	}
	if prev < 1e6 {
		t.Fatalf("phi after an hour of silence = %v, want it still growing (> 1e6)", prev)
	}
}

func TestIntervalsAfterOutageNotRecorded(t *testing.T) {
	d := New(conf())
	d.Heartbeat(at(0))
	d.Heartbeat(at(1000)) // window [750 1250 1000]
	before := d.Phi(at(2000))
	d.Heartbeat(at(60000)) // the peer was unavailable: 59 s is not a sample
	near(t, "phi one interval after the outage", d.Phi(at(61000)), before)
}

func TestOutOfOrderHeartbeatIgnored(t *testing.T) {
	d := New(conf())
	d.Heartbeat(at(1000))
	d.Heartbeat(at(500))
	near(t, "phi(+1000ms after first)", d.Phi(at(2000)), 0.301030)
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	bad := map[string]func(*Config){
		"threshold":   func(c *Config) { c.Threshold = -1 },
		"window size": func(c *Config) { c.WindowSize = 0 },
		"min std dev": func(c *Config) { c.MinStdDev = 0 },
		"pause":       func(c *Config) { c.AcceptablePause = -time.Second },
		"estimate":    func(c *Config) { c.FirstHeartbeatEstimate = 0 },
	}
	for field, mutate := range bad {
		c := DefaultConfig()
		mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: Validate() = %v, want an error naming %q", field, err, field)
		}
	}
	c := DefaultConfig()
	c.Threshold = math.NaN()
	if c.Validate() == nil {
		t.Error("NaN threshold accepted")
	}
}

func TestNewDefaultsAndPanics(t *testing.T) {
	if got := New(Config{}).Threshold(); got != 8 {
		t.Fatalf("zero config threshold = %v, want default 8", got)
	}
	defer func() {
		r := recover()
		err, ok := r.(error)
		if !ok || !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("New(invalid) panicked with %v, want ErrInvalidConfig", r)
		}
	}()
	New(Config{Threshold: -1})
}

package monitor

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// recorder is a slog.Handler that keeps every record, for checking levels.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec)
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) count(level slog.Level, msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.records {
		if rec.Level == level && (msg == "" || rec.Message == msg) {
			n++
		}
	}
	return n
}

// copyTree copies a fixture tree into a temporary directory the test may
// modify.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func TestReadTemperaturePi4(t *testing.T) {
	c, err := ReadTemperature("testdata/pi4/sys")
	if err != nil {
		t.Fatal(err)
	}
	if !near(c, 48.312) {
		t.Fatalf("temperature = %v, want 48.312", c)
	}
}

func TestReadTemperatureAbsent(t *testing.T) {
	for _, root := range []string{"testdata/container/sys", filepath.Join(t.TempDir(), "no-such-sys")} {
		if _, err := ReadTemperature(root); !errors.Is(err, ErrNoData) {
			t.Errorf("ReadTemperature(%s) error = %v, want ErrNoData", root, err)
		}
	}
}

func writeZone(t *testing.T, sys string, n int, typ, temp string) {
	t.Helper()
	dir := filepath.Join(sys, "class", "thermal", "thermal_zone"+strconv.Itoa(n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if typ != "" {
		if err := os.WriteFile(filepath.Join(dir, "type"), []byte(typ+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "temp"), []byte(temp), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReadTemperatureZoneChoice(t *testing.T) {
	t.Run("cpu zone preferred", func(t *testing.T) {
		sys := t.TempDir()
		writeZone(t, sys, 0, "acpitz", "27800\n")
		writeZone(t, sys, 1, "x86_pkg_temp", "55000\n")
		if c, err := ReadTemperature(sys); err != nil || !near(c, 55) {
			t.Fatalf("got %v, %v; want 55 from x86_pkg_temp", c, err)
		}
	})
	t.Run("broken zone skipped", func(t *testing.T) {
		sys := t.TempDir()
		writeZone(t, sys, 0, "cpu-thermal", "garbage\n")
		writeZone(t, sys, 1, "gpu-thermal", "-1000\n")
		if c, err := ReadTemperature(sys); err != nil || !near(c, -1) {
			t.Fatalf("got %v, %v; want -1 from the readable zone", c, err)
		}
	})
	t.Run("all zones broken", func(t *testing.T) {
		sys := t.TempDir()
		writeZone(t, sys, 0, "cpu-thermal", "garbage\n")
		writeZone(t, sys, 1, "", "999999999\n")
		_, err := ReadTemperature(sys)
		if err == nil || errors.Is(err, ErrNoData) {
			t.Fatalf("error = %v; want a real error, not ErrNoData", err)
		}
		if !strings.Contains(err.Error(), "not a number") || !strings.Contains(err.Error(), "implausible") {
			t.Fatalf("error %q should say what is wrong with each zone", err)
		}
	})
}

func TestModel(t *testing.T) {
	if got := New(Config{SysfsRoot: "testdata/pi4/sys", ProcfsRoot: "testdata/pi4/proc"}).Model(); got != "Raspberry Pi 4 Model B Rev 1.4" {
		t.Errorf("Pi 4 model = %q", got)
	}
	if got := New(Config{SysfsRoot: "testdata/container/sys", ProcfsRoot: "testdata/container/proc"}).Model(); got != "" {
		t.Errorf("container model = %q, want empty", got)
	}
	// Without /proc/device-tree, the firmware path in sysfs is used.
	sys := t.TempDir()
	base := filepath.Join(sys, "firmware", "devicetree", "base")
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "model"), []byte("Raspberry Pi Zero 2 W Rev 1.0\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := New(Config{SysfsRoot: sys, ProcfsRoot: "testdata/container/proc"}).Model(); got != "Raspberry Pi Zero 2 W Rev 1.0" {
		t.Errorf("sysfs firmware model = %q", got)
	}
}

func TestSamplePi4Fixture(t *testing.T) {
	root := copyTree(t, "testdata/pi4")
	logs := &recorder{}
	m := New(Config{
		SysfsRoot:  filepath.Join(root, "sys"),
		ProcfsRoot: filepath.Join(root, "proc"),
		DiskPath:   root,
		Logger:     slog.New(logs),
	})
	before := time.Now()
	s, err := m.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(before); elapsed < firstWindow {
		t.Errorf("first sample took %v, want at least the %v CPU window", elapsed, firstWindow)
	}
	if s.CPUs != 4 {
		t.Errorf("CPUs = %d, want 4", s.CPUs)
	}
	if want := uint64(3882656 * 1024); s.MemTotal != want {
		t.Errorf("MemTotal = %d, want %d", s.MemTotal, want)
	}
	if want := uint64((3882656 - 3431096) * 1024); s.MemUsed != want {
		t.Errorf("MemUsed = %d, want %d (total - available)", s.MemUsed, want)
	}
	if !near(s.Load1, 0.52) || !near(s.Load5, 0.38) || !near(s.Load15, 0.21) {
		t.Errorf("load = %v %v %v, want 0.52 0.38 0.21", s.Load1, s.Load5, s.Load15)
	}
	if s.UptimeS != 86523 {
		t.Errorf("UptimeS = %d, want 86523", s.UptimeS)
	}
	if s.TempC == nil || !near(*s.TempC, 48.312) {
		t.Errorf("TempC = %v, want 48.312", s.TempC)
	}
	if s.CPUPercent != 0 {
		t.Errorf("CPUPercent = %v with unchanged counters, want 0", s.CPUPercent)
	}
	if s.DiskUsedPercent <= 0 || s.DiskUsedPercent > 100 {
		t.Errorf("DiskUsedPercent = %v", s.DiskUsedPercent)
	}
	if s.SampledAt.Before(before) || s.SampledAt.After(time.Now()) {
		t.Errorf("SampledAt = %v, not during the call", s.SampledAt)
	}

	// Advance the counters: +600 user, +300 system, +900 idle, +100 iowait,
	// +100 softirq ticks = 2000 ticks of which 1000 busy.
	stat := filepath.Join(root, "proc", "stat")
	orig, err := os.ReadFile(stat)
	if err != nil {
		t.Fatal(err)
	}
	next := strings.Replace(string(orig), "cpu  10000 0 5000 80000 1000 0 500 0 0 0", "cpu  10600 0 5300 80900 1100 0 600 0 0 0", 1)
	if err := os.WriteFile(stat, []byte(next), 0o644); err != nil {
		t.Fatal(err)
	}
	before = time.Now()
	s, err = m.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !near(s.CPUPercent, 50) {
		t.Errorf("CPUPercent = %v, want 50", s.CPUPercent)
	}
	if elapsed := time.Since(before); elapsed >= firstWindow {
		t.Errorf("second sample took %v: it should compare with the previous one, not wait", elapsed)
	}

	// Counters going backwards (a reset) must not produce nonsense.
	if err := os.WriteFile(stat, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err = m.Sample(context.Background()); err != nil || s.CPUPercent != 0 {
		t.Errorf("after a counter reset: CPUPercent = %v, err %v; want 0, nil", s.CPUPercent, err)
	}
	if n := logs.count(slog.LevelWarn, ""); n != 0 {
		t.Errorf("%d warnings for a healthy Pi", n)
	}
}

// TestSampleContainer: no thermal zone and no device tree, as inside a
// container. That is not an error: the sample is produced without a
// temperature and the absence is logged at debug level only.
func TestSampleContainer(t *testing.T) {
	logs := &recorder{}
	m := New(Config{
		SysfsRoot:  "testdata/container/sys",
		ProcfsRoot: "testdata/container/proc",
		DiskPath:   t.TempDir(),
		Logger:     slog.New(logs),
	})
	s, err := m.Sample(context.Background())
	if err != nil {
		t.Fatalf("missing hardware reported as an error: %v", err)
	}
	if s.TempC != nil {
		t.Errorf("TempC = %v, want nil", *s.TempC)
	}
	if s.CPUs != 4 || s.MemTotal == 0 {
		t.Errorf("rest of the sample missing: %+v", s)
	}
	if m.Model() != "" {
		t.Errorf("Model() = %q, want empty", m.Model())
	}
	if n := logs.count(slog.LevelDebug, "no temperature sensor"); n != 1 {
		t.Errorf("%d debug records about the missing sensor, want 1", n)
	}
	if n := logs.count(slog.LevelWarn, "") + logs.count(slog.LevelError, ""); n != 0 {
		t.Errorf("%d warnings/errors for legitimately absent hardware", n)
	}
}

func TestSampleBrokenSourceKeepsTheRest(t *testing.T) {
	m := New(Config{
		SysfsRoot:  "testdata/pi4/sys",
		ProcfsRoot: "testdata/pi4/proc",
		DiskPath:   filepath.Join(t.TempDir(), "no-such-disk"),
		Logger:     slog.New(&recorder{}),
	})
	s, err := m.Sample(context.Background())
	if err == nil || !strings.Contains(err.Error(), "read disk usage of") {
		t.Fatalf("error = %v, want one naming the disk", err)
	}
	if s.CPUs != 4 || s.MemTotal == 0 || s.TempC == nil || s.UptimeS == 0 {
		t.Fatalf("a broken disk gauge blanked other fields: %+v", s)
	}
}

func TestSampleCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m := New(Config{SysfsRoot: "testdata/pi4/sys", ProcfsRoot: "testdata/pi4/proc", DiskPath: t.TempDir()})
	if _, err := m.Sample(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v, want context.Canceled", err)
	}
}

// TestRealSample samples the machine running the test and checks the values
// are plausible.
func TestRealSample(t *testing.T) {
	m := New(Config{Logger: slog.New(&recorder{})})
	s, err := m.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sample: %+v model=%q", s, m.Model())
	switch {
	case s.CPUs < 1:
		t.Errorf("CPUs = %d", s.CPUs)
	case s.CPUPercent < 0 || s.CPUPercent > 100:
		t.Errorf("CPUPercent = %v", s.CPUPercent)
	case s.MemTotal == 0 || s.MemUsed == 0 || s.MemUsed > s.MemTotal:
		t.Errorf("memory used %d of %d", s.MemUsed, s.MemTotal)
	case s.Load1 < 0 || s.Load5 < 0 || s.Load15 < 0:
		t.Errorf("load %v %v %v", s.Load1, s.Load5, s.Load15)
	case s.DiskUsedPercent <= 0 || s.DiskUsedPercent > 100:
		t.Errorf("DiskUsedPercent = %v", s.DiskUsedPercent)
	case s.UptimeS == 0:
		t.Errorf("UptimeS = 0")
	case s.TempC != nil && (*s.TempC < -60 || *s.TempC > 200):
		t.Errorf("TempC = %v", *s.TempC)
	}
}

func TestRun(t *testing.T) {
	m := New(Config{
		SysfsRoot:  "testdata/pi4/sys",
		ProcfsRoot: "testdata/pi4/proc",
		DiskPath:   t.TempDir(),
		Interval:   10 * time.Millisecond,
		Logger:     slog.New(&recorder{}),
	})
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var samples []Sample
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx, func(s Sample) {
			mu.Lock()
			samples = append(samples, s)
			mu.Unlock()
		})
	}()
	testutil.WaitFor(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(samples) < 3 {
			return errors.New("fewer than 3 samples delivered")
		}
		return nil
	})
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(samples); i++ {
		if !samples[i].SampledAt.After(samples[i-1].SampledAt) {
			t.Fatalf("samples out of order: %v then %v", samples[i-1].SampledAt, samples[i].SampledAt)
		}
	}
}

// TestRunStopsDuringFirstWindow: cancelling while the first sample is still
// measuring returns at once and delivers nothing.
func TestRunStopsDuringFirstWindow(t *testing.T) {
	m := New(Config{SysfsRoot: "testdata/pi4/sys", ProcfsRoot: "testdata/pi4/proc", DiskPath: t.TempDir()})
	ctx, cancel := context.WithTimeout(context.Background(), firstWindow/10)
	defer cancel()
	delivered := false
	m.Run(ctx, func(Sample) { delivered = true })
	if delivered {
		t.Fatal("a sample was delivered after the context ended")
	}
}

// Package monitor samples the node's resources: CPU, memory, load, disk and
// uptime through gopsutil, plus the temperature and Raspberry Pi model from
// sysfs and the device tree where the hardware has them.
//
// All file system sources are read below injectable roots (as node_exporter's
// --path.procfs and --path.sysfs), so tests run against fixture trees and the
// agent can run in a container that mounts the host's /proc and /sys
// elsewhere.
package monitor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v3/common"
	"github.com/shirou/gopsutil/v3/cpu"
	"github.com/shirou/gopsutil/v3/disk"
	"github.com/shirou/gopsutil/v3/load"
	"github.com/shirou/gopsutil/v3/mem"
)

// ErrNoData means the hardware legitimately lacks a source, such as a
// thermal zone inside a container. It is not a failure: the field is left
// empty and the rest of the sample is produced.
var ErrNoData = errors.New("no data")

// DefaultInterval is how often Run samples unless Config.Interval says
// otherwise. Five seconds keeps the status page lively while costing a Pi
// Zero well under 1% CPU.
const DefaultInterval = 5 * time.Second

// firstWindow is the window over which the very first Sample measures CPU
// use, since there is no previous sample to compare with. Averages since boot
// would say nothing about now; 250 ms is long enough to span many scheduler
// ticks (USER_HZ is 100) and short enough not to delay start-up.
const firstWindow = 250 * time.Millisecond

// Sample is one measurement of the node's resources.
type Sample struct {
	// CPUs is the number of logical CPUs.
	CPUs int
	// CPUPercent is the share of CPU time spent busy (not idle, not waiting
	// for I/O) since the previous sample, 0..100 across all CPUs.
	CPUPercent float64
	// MemTotal and MemUsed are in bytes. Used excludes reclaimable caches:
	// it is MemTotal minus the kernel's MemAvailable estimate.
	MemTotal, MemUsed uint64
	// Load1, Load5 and Load15 are the kernel's load averages.
	Load1, Load5, Load15 float64
	// TempC is the SoC temperature in degrees Celsius, nil when the node has
	// no thermal sensor.
	TempC *float64
	// DiskUsedPercent is the used share of the file system holding
	// Config.DiskPath, 0..100.
	DiskUsedPercent float64
	// UptimeS is the time since boot in seconds.
	UptimeS uint64
	// SampledAt is when the sample was taken.
	SampledAt time.Time
}

// Config configures a Monitor. The zero value samples the running host.
type Config struct {
	// SysfsRoot is where sysfs is mounted; default "/sys". Temperatures are
	// read from SysfsRoot/class/thermal, and the model from
	// SysfsRoot/firmware/devicetree/base/model when procfs lacks it.
	SysfsRoot string
	// ProcfsRoot is where procfs is mounted; default "/proc". CPU times,
	// memory, load, uptime and the device tree (ProcfsRoot/device-tree/model)
	// are read below it.
	ProcfsRoot string
	// DiskPath is a path on the file system whose usage is reported;
	// default "/".
	DiskPath string
	// Interval is the time between samples taken by Run; default
	// DefaultInterval.
	Interval time.Duration
	// Logger receives warnings about sources that fail; default
	// slog.Default().
	Logger *slog.Logger
}

// Monitor takes resource samples. It is safe for concurrent use.
type Monitor struct {
	sysfs, procfs, diskPath string
	interval                time.Duration
	logger                  *slog.Logger

	mu sync.Mutex
	// prevCPU holds the CPU times of the previous sample, the start of the
	// next CPU% window; nil before the first sample.
	prevCPU *cpu.TimesStat
	// warned remembers sources already reported at warn level, so a
	// permanently broken source does not flood the log every interval.
	warned map[string]bool
}

// New returns a Monitor for c, filling in defaults.
func New(c Config) *Monitor {
	m := &Monitor{
		sysfs:    c.SysfsRoot,
		procfs:   c.ProcfsRoot,
		diskPath: c.DiskPath,
		interval: c.Interval,
		logger:   c.Logger,
		warned:   make(map[string]bool),
	}
	if m.sysfs == "" {
		m.sysfs = "/sys"
	}
	if m.procfs == "" {
		m.procfs = "/proc"
	}
	if m.diskPath == "" {
		m.diskPath = "/"
	}
	if m.interval <= 0 {
		m.interval = DefaultInterval
	}
	if m.logger == nil {
		m.logger = slog.Default()
	}
	return m
}

// Sample takes one sample. CPUPercent covers the time since the previous
// call; the first call measures over a short window (250 ms) instead, and so
// blocks for that long unless ctx ends first.
//
// A source that fails leaves its fields zero and is reported in the returned
// error (one line per source), but the rest of the sample is still filled in
// and returned: a broken disk gauge must not blank the CPU and memory. A
// missing thermal sensor is not an error (TempC is nil). Only a cancelled ctx
// returns an empty Sample.
func (m *Monitor) Sample(ctx context.Context) (Sample, error) {
	ctx = context.WithValue(ctx, common.EnvKey, common.EnvMap{
		common.HostProcEnvKey: m.procfs,
		common.HostSysEnvKey:  m.sysfs,
	})
	var s Sample
	var errs []error

	pct, err := m.cpuPercent(ctx)
	if ctx.Err() != nil {
		return Sample{}, fmt.Errorf("sample: %w", ctx.Err())
	}
	if err != nil {
		errs = append(errs, err)
	}
	s.CPUPercent = pct

	if n, err := cpu.CountsWithContext(ctx, true); err != nil {
		errs = append(errs, fmt.Errorf("count cpus: %w", err))
	} else {
		s.CPUs = n
	}

	if vm, err := mem.VirtualMemoryWithContext(ctx); err != nil {
		errs = append(errs, fmt.Errorf("read memory: %w", err))
	} else {
		s.MemTotal = vm.Total
		s.MemUsed = vm.Used
		if vm.Available > 0 && vm.Available <= vm.Total {
			s.MemUsed = vm.Total - vm.Available
		}
	}

	if avg, err := load.AvgWithContext(ctx); err != nil {
		errs = append(errs, fmt.Errorf("read load average: %w", err))
	} else {
		s.Load1, s.Load5, s.Load15 = avg.Load1, avg.Load5, avg.Load15
	}

	if up, err := readUptime(m.procfs); err != nil {
		errs = append(errs, err)
	} else {
		s.UptimeS = up
	}

	if u, err := disk.UsageWithContext(ctx, m.diskPath); err != nil {
		errs = append(errs, fmt.Errorf("read disk usage of %s: %w", m.diskPath, err))
	} else {
		s.DiskUsedPercent = u.UsedPercent
	}

	switch t, err := ReadTemperature(m.sysfs); {
	case err == nil:
		s.TempC = &t
		m.recovered("temperature")
	case errors.Is(err, ErrNoData):
		m.logger.Debug("no temperature sensor", "sysfs", m.sysfs)
	default:
		// A sensor that exists but cannot be read is worth a warning, but
		// it is not worth failing the sample over.
		m.warnOnce("temperature", "temperature not sampled", "err", err)
	}

	s.SampledAt = time.Now()
	return s, errors.Join(errs...)
}

// cpuPercent returns the busy share of CPU time since the previous call, or
// over firstWindow on the first call.
func (m *Monitor) cpuPercent(ctx context.Context) (float64, error) {
	cur, err := readCPUTimes(ctx)
	if err != nil {
		return 0, err
	}
	m.mu.Lock()
	prev := m.prevCPU
	m.mu.Unlock()
	if prev == nil {
		select {
		case <-time.After(firstWindow):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		prev = cur
		if cur, err = readCPUTimes(ctx); err != nil {
			return 0, err
		}
	}
	m.mu.Lock()
	m.prevCPU = cur
	m.mu.Unlock()
	return busyPercent(*prev, *cur), nil
}

func readCPUTimes(ctx context.Context) (*cpu.TimesStat, error) {
	times, err := cpu.TimesWithContext(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("read cpu times: %w", err)
	}
	if len(times) == 0 {
		return nil, errors.New("read cpu times: no aggregate cpu line")
	}
	return &times[0], nil
}

// busyPercent is the share of non-idle time between two readings of the
// aggregate CPU counters. Guest time is already counted in user time on
// Linux, so it is not added again. Counters that went backwards (a counter
// reset, or concurrent callers racing) give 0 rather than nonsense.
func busyPercent(prev, cur cpu.TimesStat) float64 {
	total := func(t cpu.TimesStat) float64 {
		return t.User + t.Nice + t.System + t.Idle + t.Iowait + t.Irq + t.Softirq + t.Steal
	}
	dTotal := total(cur) - total(prev)
	dIdle := (cur.Idle + cur.Iowait) - (prev.Idle + prev.Iowait)
	if dTotal <= 0 || dIdle < 0 || dIdle > dTotal {
		return 0
	}
	return 100 * (dTotal - dIdle) / dTotal
}

// readUptime reads the seconds since boot from procfs/uptime.
func readUptime(procfs string) (uint64, error) {
	path := filepath.Join(procfs, "uptime")
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read uptime: %w", err)
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return 0, fmt.Errorf("read uptime %s: empty file", path)
	}
	secs, err := strconv.ParseFloat(fields[0], 64)
	if err != nil || secs < 0 {
		return 0, fmt.Errorf("read uptime %s: bad value %q", path, fields[0])
	}
	return uint64(secs), nil
}

// Run samples now and then every Interval, handing each sample to fn, until
// ctx is done. Failed sources are logged at warn level (once per source) and
// the partial sample is still delivered. fn is called from Run's goroutine
// and should not block for long.
func (m *Monitor) Run(ctx context.Context, fn func(Sample)) {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		s, err := m.Sample(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			m.warnOnce("sample", "sample incomplete", "err", err)
		} else {
			m.recovered("sample")
		}
		fn(s)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// warnOnce logs msg at warn level the first time source key fails and at
// debug level while it keeps failing.
func (m *Monitor) warnOnce(key, msg string, args ...any) {
	m.mu.Lock()
	seen := m.warned[key]
	m.warned[key] = true
	m.mu.Unlock()
	if seen {
		m.logger.Debug(msg, args...)
		return
	}
	m.logger.Warn(msg, args...)
}

// recovered forgets a failure of source key, so its next failure warns
// again.
func (m *Monitor) recovered(key string) {
	m.mu.Lock()
	delete(m.warned, key)
	m.mu.Unlock()
}

// Model returns the board model from the device tree, such as "Raspberry Pi
// 4 Model B Rev 1.4", or "" when there is none (containers, most PCs).
func (m *Monitor) Model() string {
	for _, path := range []string{
		filepath.Join(m.procfs, "device-tree", "model"),
		filepath.Join(m.sysfs, "firmware", "devicetree", "base", "model"),
	} {
		data, err := os.ReadFile(path)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				m.logger.Debug("read board model", "path", path, "err", err)
			}
			continue
		}
		// Device-tree strings are NUL-terminated.
		if model := strings.TrimSpace(strings.TrimRight(string(data), "\x00")); model != "" {
			return model
		}
	}
	return ""
}

// ReadTemperature returns the SoC temperature in degrees Celsius from
// sysfsRoot/class/thermal/thermal_zone*/temp (millidegrees). When several
// zones exist, one whose type names the CPU or SoC is preferred (a Pi has a
// single "cpu-thermal" zone), otherwise the lowest-numbered readable zone.
// It returns ErrNoData when there is no thermal zone at all.
func ReadTemperature(sysfsRoot string) (float64, error) {
	zones, err := filepath.Glob(filepath.Join(sysfsRoot, "class", "thermal", "thermal_zone*"))
	if err != nil {
		return 0, fmt.Errorf("read temperature: %w", err)
	}
	if len(zones) == 0 {
		return 0, ErrNoData
	}
	sortZones(zones)
	// Preferred zones first, keeping numeric order within each group.
	ordered := make([]string, 0, len(zones))
	for _, pass := range []bool{true, false} {
		for _, z := range zones {
			if isCPUZone(z) == pass {
				ordered = append(ordered, z)
			}
		}
	}
	var errs []error
	for _, z := range ordered {
		t, err := readZone(z)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return t, nil
	}
	return 0, fmt.Errorf("read temperature: %w", errors.Join(errs...))
}

func isCPUZone(zone string) bool {
	data, err := os.ReadFile(filepath.Join(zone, "type"))
	if err != nil {
		return false
	}
	typ := strings.ToLower(strings.TrimSpace(string(data)))
	return strings.Contains(typ, "cpu") || strings.Contains(typ, "soc") || typ == "x86_pkg_temp"
}

// readZone reads one zone's temperature. Values outside what silicon can
// report are treated as a broken sensor.
func readZone(zone string) (float64, error) {
	path := filepath.Join(zone, "temp")
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	milli, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: not a number of millidegrees: %q", path, strings.TrimSpace(string(data)))
	}
	c := float64(milli) / 1000
	if c < -60 || c > 200 {
		return 0, fmt.Errorf("%s: implausible temperature %.1f°C", path, c)
	}
	return c, nil
}

// sortZones orders thermal_zoneN paths by N, so thermal_zone10 follows
// thermal_zone9.
func sortZones(zones []string) {
	num := func(z string) int {
		n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(z), "thermal_zone"))
		if err != nil {
			return math.MaxInt
		}
		return n
	}
	slices.SortStableFunc(zones, func(a, b string) int { return cmp.Compare(num(a), num(b)) })
}

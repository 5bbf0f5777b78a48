package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cpuCap is a cgroup of its own with a CPU bandwidth limit (CFS quota), in
// which the benchmark puts one agent process to starve it as a saturated
// Pi Zero would be. It uses the cgroup v2 cpu controller (cpu.max) where
// the cpu controller is enabled for the parent's children, and the v1 cpu
// hierarchy (cpu.cfs_quota_us) on hosts that still bind the controller
// there: both are the same CFS bandwidth control.
type cpuCap struct {
	dir    string // the cgroup we created
	parent string // where its processes go back to
	v2     bool
}

// cgroupRoots are where the cgroup filesystems are looked for; a test may
// not change them, the benchmark only ever reads these.
var cgroupRoots = struct{ v2, v2Hybrid, v1CPU string }{"/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/cpu"}

// newCPUCap creates a cgroup limited to quota of period (10 ms of 100 ms
// is 10 % of one core), named after name and this process. Close removes
// it.
func newCPUCap(name string, quota, period time.Duration) (*cpuCap, error) {
	if quota <= 0 || period <= 0 || quota > period*1000 {
		return nil, fmt.Errorf("cpu cap: quota %v of period %v is out of range", quota, period)
	}
	leaf := fmt.Sprintf("rpi-bench-%s-%d", name, os.Getpid())
	var problems []string
	for _, root := range []string{cgroupRoots.v2, cgroupRoots.v2Hybrid} {
		ctrl, err := os.ReadFile(filepath.Join(root, "cgroup.subtree_control"))
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s is not a cgroup2 mount", root))
			continue
		}
		if !hasWord(string(ctrl), "cpu") {
			problems = append(problems, fmt.Sprintf("cgroup2 at %s: the cpu controller is not enabled for its children (cgroup.subtree_control: %q)", root, strings.TrimSpace(string(ctrl))))
			continue
		}
		c := &cpuCap{dir: filepath.Join(root, leaf), parent: root, v2: true}
		if err := os.Mkdir(c.dir, 0o755); err != nil {
			return nil, fmt.Errorf("cpu cap: %w (run as root)", err)
		}
		if err := writeCgroup(c.dir, "cpu.max", fmt.Sprintf("%d %d", quota.Microseconds(), period.Microseconds())); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	v1 := cgroupRoots.v1CPU
	if _, err := os.Stat(filepath.Join(v1, "cpu.cfs_quota_us")); err != nil {
		problems = append(problems, fmt.Sprintf("no cgroup v1 cpu hierarchy at %s", v1))
		return nil, fmt.Errorf("cpu cap: no cgroup with CFS bandwidth control: %s; mount cgroup2 and enable its cpu controller (echo +cpu > /sys/fs/cgroup/cgroup.subtree_control)", strings.Join(problems, "; "))
	}
	c := &cpuCap{dir: filepath.Join(v1, leaf), parent: v1}
	if err := os.Mkdir(c.dir, 0o755); err != nil {
		return nil, fmt.Errorf("cpu cap: %w (run as root)", err)
	}
	err := writeCgroup(c.dir, "cpu.cfs_period_us", strconv.FormatInt(period.Microseconds(), 10))
	if err == nil {
		err = writeCgroup(c.dir, "cpu.cfs_quota_us", strconv.FormatInt(quota.Microseconds(), 10))
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// String names the cgroup and its limit for the report.
func (c *cpuCap) String() string {
	if c.v2 {
		return "cgroup v2 cpu.max, " + c.dir
	}
	return "cgroup v1 cpu.cfs_quota_us, " + c.dir
}

// Add moves process pid (all its threads) into the cgroup.
func (c *cpuCap) Add(pid int) error {
	return writeCgroup(c.dir, "cgroup.procs", strconv.Itoa(pid))
}

// Throttled returns how many CFS periods the cgroup was throttled in and
// for how long in all, from its cpu.stat.
func (c *cpuCap) Throttled() (periods uint64, total time.Duration, err error) {
	b, err := os.ReadFile(filepath.Join(c.dir, "cpu.stat"))
	if err != nil {
		return 0, 0, fmt.Errorf("cpu cap: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseUint(f[1], 10, 64)
		switch f[0] {
		case "nr_throttled":
			periods = v
		case "throttled_usec": // v2
			total = time.Duration(v) * time.Microsecond
		case "throttled_time": // v1, nanoseconds
			total = time.Duration(v)
		}
	}
	return periods, total, nil
}

// Close moves any process still in the cgroup back to the parent and
// removes the cgroup. It retries for a few seconds: a process that is
// exiting keeps the cgroup busy until it is reaped.
func (c *cpuCap) Close() error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, err := os.ReadFile(filepath.Join(c.dir, "cgroup.procs")); err == nil {
			for _, pid := range strings.Fields(string(b)) {
				writeCgroup(c.parent, "cgroup.procs", pid)
			}
		}
		err := os.Remove(c.dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cpu cap: remove %s: %w; remove it by hand (rmdir) once its processes are gone", c.dir, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func writeCgroup(dir, file, value string) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
		return fmt.Errorf("cpu cap: write %q to %s: %w", value, filepath.Join(dir, file), err)
	}
	return nil
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

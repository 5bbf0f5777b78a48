package bench

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// TestCPUCapThrottlesAndCleansUp puts a busy loop in a capped cgroup: the
// kernel must throttle it, and Close must leave no cgroup behind. It needs
// root and a cgroup with CFS bandwidth control, and is skipped without.
func TestCPUCapThrottlesAndCleansUp(t *testing.T) {
	cg, err := newCPUCap("test", 5*time.Millisecond, 100*time.Millisecond)
	if err != nil {
		t.Skipf("no cgroup to cap a process in: %v", err)
	}
	dir := cg.dir
	t.Cleanup(func() { cg.Close() })
	busy := exec.Command("sh", "-c", "while :; do :; done")
	if err := busy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		busy.Process.Kill()
		busy.Wait()
	})
	if err := cg.Add(busy.Process.Pid); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		n, d, err := cg.Throttled()
		if err != nil {
			return err
		}
		if n < 3 || d == 0 {
			return fmt.Errorf("throttled in %d periods (%v), want a busy loop throttled in most of them", n, d)
		}
		return nil
	})
	// The process is still running: Close must move it out first.
	if err := cg.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup %s still there after Close: %v", dir, err)
	}
}

func TestCPUCapRejectsABadQuota(t *testing.T) {
	if _, err := newCPUCap("bad", 0, 100*time.Millisecond); err == nil {
		t.Error("a zero quota was accepted")
	}
}

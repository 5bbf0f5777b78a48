package agent

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
)

// createOn builds (without starting) an agent on 127.0.2.<i> whose data
// directory is dir.
func createOn(t *testing.T, i int, dir string) (*Agent, error) {
	t.Helper()
	conf := DefaultConfig()
	conf.Name = "node-" + strconv.Itoa(i)
	conf.Bind = "127.0.2." + strconv.Itoa(i) + ":0"
	conf.HTTP = "127.0.2." + strconv.Itoa(i) + ":0"
	conf.MDNS = false
	conf.DataDir = dir
	conf.SSHHostKeys = ""
	profile, err := cluster.ProfileByName("test")
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a, err := Create(conf, logger, WithProfile(profile))
	if err == nil {
		t.Cleanup(func() { a.Shutdown() })
	}
	return a, err
}

// Two agents on one data directory would both answer writes and overwrite
// each other's meta-data.json: the second must refuse to start, naming the
// lock and its holder.
func TestSecondAgentOnDataDirIsRefused(t *testing.T) {
	first := startAgent(t, 31, nil)
	dir := first.conf.DataDir

	_, err := createOn(t, 32, dir)
	if err == nil {
		t.Fatalf("a second agent was created on %s, in use by %s", dir, first.Name())
	}
	lock := filepath.Join(dir, "agent.lock")
	for _, want := range []string{"data dir " + dir + " is in use by another rpi-agent", "pid " + strconv.Itoa(os.Getpid()), lock, "--data-dir"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}

	// The holder works on; once it shuts down the directory is free again.
	if _, err := os.Stat(lock); err != nil {
		t.Fatalf("lock file: %v", err)
	}
	if err := first.Shutdown(); err != nil {
		t.Fatal(err)
	}
	third, err := createOn(t, 33, dir)
	if err != nil {
		t.Fatalf("after the first agent shut down, the data dir is still refused: %v", err)
	}
	// A Create that fails after taking the lock gives it back.
	third.Shutdown()
	conflict, err := createOn(t, 34, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := createOn(t, 35, dir); err == nil {
		t.Fatal("a second agent was created while the lock is held by an agent never started")
	}
	conflict.Shutdown()
}

// A Create that fails after the lock was taken (here: the HTTP port is
// taken) releases it, so the next attempt is not refused for a lock nobody
// holds.
func TestFailedCreateReleasesLock(t *testing.T) {
	dir := t.TempDir()
	holder := startAgent(t, 36, nil)
	conf := DefaultConfig()
	conf.Name = "node-37"
	conf.Bind = "127.0.2.37:0"
	conf.HTTP = holder.HTTPAddr() // in use
	conf.MDNS = false
	conf.DataDir = dir
	conf.SSHHostKeys = ""
	if _, err := Create(conf, nil); err == nil || !strings.Contains(err.Error(), "listen http") {
		t.Fatalf("want a listen error, got %v", err)
	}
	if _, err := createOn(t, 37, dir); err != nil {
		t.Fatalf("a failed Create kept the lock: %v", err)
	}
}

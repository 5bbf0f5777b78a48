package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// LockFile is the file in the data directory an agent holds an exclusive
// flock on for as long as it runs; it contains the holder's PID.
const LockFile = "agent.lock"

// dirLock is a held data-directory lock.
type dirLock struct {
	f *os.File
}

// lockDataDir takes the data directory for this process, creating it (0755)
// if needed. Two agents on one directory would both answer writes and each
// rewrite meta-data.json from its own memory, losing the other's changes, so
// a second one is refused with an error naming the lock and its holder.
//
// flock rather than a PID file: the kernel drops the lock when the holder
// exits, however it exits, so a crashed agent never leaves a stale lock.
func lockDataDir(dir string) (*dirLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lock data dir: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock data dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s is in use by another rpi-agent (%s, lock %s): give each agent its own --data-dir",
				dir, holder(path), path)
		}
		return nil, fmt.Errorf("lock data dir %s: flock %s: %w", dir, path, err)
	}
	// The PID is only a hint for the message above; the flock is the lock.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dirLock{f: f}, nil
}

// holder describes the process holding the lock file at path, from the PID
// it wrote there.
func holder(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "pid unknown"
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		// Just locked, PID not written yet.
		return "pid unknown"
	}
	return "pid " + strconv.Itoa(pid)
}

// release gives the directory back. Safe on a nil lock and to call twice.
// The file stays: removing it would let a newcomer lock a fresh file while
// another waits on the old one.
func (l *dirLock) release() {
	if l == nil || l.f == nil {
		return
	}
	l.f.Truncate(0)
	l.f.Close() // closing drops the flock
	l.f = nil
}

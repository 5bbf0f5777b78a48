package sdnotify

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

func TestNotifyPathSocket(t *testing.T) {
	next := testutil.NotifySocket(t, filepath.Join(t.TempDir(), "notify"))
	ok, err := Notify(Ready)
	if !ok || err != nil {
		t.Fatalf("Notify = %v, %v; want true, nil", ok, err)
	}
	if got := next(); got != "READY=1" {
		t.Fatalf("got %q, want READY=1", got)
	}
}

func TestNotifyAbstractSocket(t *testing.T) {
	next := testutil.NotifySocket(t, fmt.Sprintf("@rpi-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if ok, err := Notify(Watchdog); !ok || err != nil {
		t.Fatalf("Notify = %v, %v; want true, nil", ok, err)
	}
	if got := next(); got != "WATCHDOG=1" {
		t.Fatalf("got %q, want WATCHDOG=1", got)
	}
}

func TestNotifyWithoutManager(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if ok, err := Notify(Ready); ok || err != nil {
		t.Fatalf("Notify without NOTIFY_SOCKET = %v, %v; want false, nil", ok, err)
	}
}

func TestNotifyBadSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "relative/notify")
	if _, err := Notify(Ready); err == nil || !strings.Contains(err.Error(), "neither a path nor an abstract name") {
		t.Fatalf("Notify with a relative socket: %v, want an error naming the problem", err)
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody-listens"))
	if _, err := Notify(Ready); err == nil {
		t.Fatal("Notify to a missing socket: no error")
	}
}

func TestWatchdogInterval(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
		err       bool
	}{
		{"", "", 0, false},
		{"30000000", "", 30 * time.Second, false},
		{"30000000", self, 30 * time.Second, false},
		{"30000000", "1", 0, false}, // another process's watchdog
		{"soon", "", 0, true},
		{"-5", "", 0, true},
	} {
		t.Setenv("WATCHDOG_USEC", tc.usec)
		t.Setenv("WATCHDOG_PID", tc.pid)
		got, err := WatchdogInterval()
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v, %v; want %v, error %v", tc.usec, tc.pid, got, err, tc.want, tc.err)
		}
	}
}

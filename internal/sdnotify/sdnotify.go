// Package sdnotify speaks systemd's notification protocol (sd_notify(3))
// without a library: a state line such as "READY=1" or "WATCHDOG=1" sent as
// one datagram to the unix socket named by $NOTIFY_SOCKET. Outside systemd
// (or in a unit that is not Type=notify) the variable is unset and every
// call is a no-op.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// States a service sends.
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
	Watchdog = "WATCHDOG=1"
)

// Notify sends state to the service manager. It reports false, with no
// error, when there is no service manager to tell ($NOTIFY_SOCKET unset).
// A socket name starting with '@' is in the abstract namespace.
func Notify(state string) (bool, error) {
	socket := os.Getenv("NOTIFY_SOCKET")
	if socket == "" {
		return false, nil
	}
	// Go's net package reads a leading '@' as the abstract namespace, as
	// systemd means it.
	if socket[0] != '/' && socket[0] != '@' {
		return false, fmt.Errorf("sd_notify %s: NOTIFY_SOCKET %q is neither a path nor an abstract name (@...)", state, socket)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("sd_notify %s: %w", state, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sd_notify %s: %w", state, err)
	}
	return true, nil
}

// WatchdogInterval returns the watchdog timeout systemd enforces on this
// process ($WATCHDOG_USEC, for $WATCHDOG_PID when that is set), or 0 when
// there is no watchdog. The process must send Watchdog well within it;
// systemd's advice is every half of it.
func WatchdogInterval() (time.Duration, error) {
	usec := os.Getenv("WATCHDOG_USEC")
	if usec == "" {
		return 0, nil
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0, nil // meant for another process (our parent's watchdog)
	}
	n, err := strconv.ParseInt(usec, 10, 64)
	if err != nil || n <= 0 {
		return 0, errors.New("sd_notify watchdog: WATCHDOG_USEC=" + strconv.Quote(usec) + " is not a positive number of microseconds")
	}
	return time.Duration(n) * time.Microsecond, nil
}

package testutil

import (
	"net"
	"testing"
	"time"
)

// NotifySocket stands in for systemd: it listens on a unixgram socket at
// name (a path, or an abstract name starting with '@'), points
// NOTIFY_SOCKET at it for the test, and returns a function that reads the
// next notification, failing the test after 10 s without one.
func NotifySocket(t testing.TB, name string) func() string {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return func() string {
		t.Helper()
		buf := make([]byte, 4096)
		if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
}

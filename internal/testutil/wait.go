// Package testutil holds helpers shared by the project's tests.
package testutil

import (
	"testing"
	"time"
)

// WaitFor calls cond until it returns nil or timeout passes, polling every
// interval (default 20 ms). On timeout it fails the test with the last error,
// which should say what was still missing.
func WaitFor(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := Poll(timeout, 0, cond); err != nil {
		t.Fatalf("condition not met after %v: %v", timeout, err)
	}
}

// Poll calls cond until it returns nil or timeout passes and returns the last
// error. interval 0 means 20 ms.
func Poll(timeout, interval time.Duration, cond func() error) error {
	if interval == 0 {
		interval = 20 * time.Millisecond
	}
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(interval)
	}
}

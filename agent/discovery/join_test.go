package discovery

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// flakyJoin fails its first failures calls, then contacts every address.
type flakyJoin struct {
	mu       sync.Mutex
	failures int
	calls    int
	got      [][]string
}

func (f *flakyJoin) join(addrs []string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.got = append(f.got, slices.Clone(addrs))
	if f.calls <= f.failures {
		return 0, errors.New("dial tcp: connection refused")
	}
	return len(addrs), nil
}

func TestRetryJoinSucceedsAfterFailures(t *testing.T) {
	f := &flakyJoin{failures: 3}
	addrs := []string{"10.0.0.1:7946", "10.0.0.2:7946"}
	if err := RetryJoin(context.Background(), addrs, time.Millisecond, 0, f.join, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	if f.calls != 4 {
		t.Fatalf("join called %d times, want 4 (3 failures, 1 success)", f.calls)
	}
	for _, got := range f.got {
		if !slices.Equal(got, addrs) {
			t.Fatalf("join called with %q, want every address %q each time", got, addrs)
		}
	}
}

func TestRetryJoinGivesUp(t *testing.T) {
	f := &flakyJoin{failures: 100}
	err := RetryJoin(context.Background(), []string{"10.0.0.1:7946"}, time.Millisecond, 3, f.join, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "gave up after 3 attempts") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("error = %v; want it to say it gave up after 3 attempts and why", err)
	}
	if f.calls != 3 {
		t.Fatalf("join called %d times, want 3", f.calls)
	}
}

func TestRetryJoinZeroContactedIsFailure(t *testing.T) {
	calls := 0
	join := func([]string) (int, error) { calls++; return 0, nil }
	err := RetryJoin(context.Background(), []string{"10.0.0.1:7946"}, time.Millisecond, 2, join, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "no address answered") || calls != 2 {
		t.Fatalf("error = %v after %d calls; want a failure after 2", err, calls)
	}
}

func TestRetryJoinCancelled(t *testing.T) {
	f := &flakyJoin{failures: 1 << 30}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RetryJoin(ctx, []string{"10.0.0.1:7946"}, time.Hour, 0, f.join, testLogger(t)) }()
	// Wait until the first attempt has failed and RetryJoin is waiting an
	// hour for the next.
	testutil.WaitFor(t, 5*time.Second, func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.calls != 1 {
			return errors.New("first attempt not made yet")
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RetryJoin did not return after cancel")
	}
}

func TestRetryJoinBadArguments(t *testing.T) {
	join := func([]string) (int, error) { return 1, nil }
	if err := RetryJoin(context.Background(), nil, 0, 0, join, nil); err == nil {
		t.Error("no addresses accepted")
	}
	if err := RetryJoin(context.Background(), []string{"a:1"}, 0, -1, join, nil); err == nil {
		t.Error("negative attempts accepted")
	}
	if err := RetryJoin(context.Background(), []string{"a:1"}, 0, 0, nil, nil); err == nil {
		t.Error("nil join accepted")
	}
}

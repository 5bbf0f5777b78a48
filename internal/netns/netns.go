// Package netns creates Linux network namespaces for tests, so tests can send
// real traffic (multicast included) between "hosts" without any packet
// leaving the machine. Namespaces and their links are removed when the test
// ends, also when it fails.
//
// It needs root and iproute2's ip command; Require skips the test otherwise.
package netns

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// NS is a network namespace created by a test.
type NS struct {
	// Name is the namespace name, as given to "ip netns".
	Name string

	mu     sync.Mutex
	nextIf int
}

// Require skips t unless network namespaces can be created: the test runs as
// root and the ip command is installed.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespace tests need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("network namespace tests need the ip command (iproute2)")
	}
}

// Create makes namespace name with its loopback up and deletes it when the
// test ends. A namespace of the same name left over from a crashed run is
// removed first. Use names with a prefix of your own test (and the process
// id where tests may run concurrently).
func Create(t testing.TB, name string) *NS {
	t.Helper()
	Require(t)
	_ = exec.Command("ip", "netns", "delete", name).Run()
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Logf("delete network namespace %s: %v: %s", name, err, out)
		}
	})
	ns := &NS{Name: name}
	ns.Run(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Link connects a and b with a veth pair, gives the ends the addresses ipA
// and ipB (CIDR form, "10.201.0.1/24"), brings them up with multicast on,
// and returns the interface names in a and in b. The pair is created
// directly inside the namespaces, so no interface appears in the host's
// namespace even for a moment; it goes away with the namespaces.
func Link(t testing.TB, a, b *NS, ipA, ipB string) (ifA, ifB string) {
	t.Helper()
	ifA, ifB = a.newIf(), b.newIf()
	run(t, "ip", "-n", a.Name, "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", b.Name)
	for _, end := range []struct {
		ns        *NS
		ifi, cidr string
	}{{a, ifA, ipA}, {b, ifB, ipB}} {
		end.ns.Run(t, "ip", "addr", "add", end.cidr, "dev", end.ifi)
		end.ns.Run(t, "ip", "link", "set", end.ifi, "up", "multicast", "on")
	}
	return ifA, ifB
}

func (ns *NS) newIf() string {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	ns.nextIf++
	return fmt.Sprintf("veth%d", ns.nextIf-1)
}

// Command returns a command that runs name inside the namespace, stopped
// when ctx is done (see exec.CommandContext; set Cancel for a gentler
// signal than SIGKILL).
func (ns *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Run runs name inside the namespace and returns its output, failing t if
// it fails.
func (ns *NS) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

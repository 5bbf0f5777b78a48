package cluster

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/rpi-cluster/rpi-cluster/agent/identity"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// unpluggable is a real NetTransport that can be cut off the network, as
// a Pi is while its DHCP client has dropped the old lease and has no new
// one yet: nothing goes out, nothing comes in.
type unpluggable struct {
	*NetTransport
	off      atomic.Bool
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	stop     chan struct{}
	once     sync.Once
}

var errUnplugged = errors.New("network is unreachable (unplugged by the test)")

func newUnpluggable(t *testing.T) *unpluggable {
	t.Helper()
	nt, err := NewNetTransport("0.0.0.0", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	u := &unpluggable{NetTransport: nt, packetCh: make(chan *memberlist.Packet), streamCh: make(chan net.Conn), stop: make(chan struct{})}
	go func() {
		for {
			select {
			case p := <-nt.PacketCh():
				if u.off.Load() {
					continue
				}
				select {
				case u.packetCh <- p:
				case <-u.stop:
					return
				}
			case <-u.stop:
				return
			}
		}
	}()
	go func() {
		for {
			select {
			case c := <-nt.StreamCh():
				if u.off.Load() {
					c.Close()
					continue
				}
				select {
				case u.streamCh <- c:
				case <-u.stop:
					c.Close()
					return
				}
			case <-u.stop:
				return
			}
		}
	}()
	return u
}

func (u *unpluggable) PacketCh() <-chan *memberlist.Packet { return u.packetCh }
func (u *unpluggable) StreamCh() <-chan net.Conn           { return u.streamCh }

func (u *unpluggable) WriteTo(b []byte, addr string) (time.Time, error) {
	if u.off.Load() {
		return time.Time{}, errUnplugged
	}
	return u.NetTransport.WriteTo(b, addr)
}

func (u *unpluggable) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if u.off.Load() {
		return nil, errUnplugged
	}
	return u.NetTransport.DialTimeout(addr, timeout)
}

func (u *unpluggable) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return u.WriteTo(b, a.Addr)
}

func (u *unpluggable) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return u.DialTimeout(a.Addr, timeout)
}

func (u *unpluggable) Shutdown() error {
	u.once.Do(func() { close(u.stop) })
	return u.NetTransport.Shutdown()
}

// A node that loses its address, is failed by its peers meanwhile, and
// comes back at another one (a DHCP client that dropped the old lease
// before it got the new one) is listed alive at the new address by every
// peer at once: its signed move notice lets them take the name at the new
// address although they hold it failed, without waiting for
// DeadNodeReclaimTime.
func TestReaddressAfterGapWhileFailed(t *testing.T) {
	// memberlist holds a failed name for the lan profile's times: it
	// takes it at another address after DeadNodeReclaimTime, and forgets
	// it after GossipToTheDeadTime.
	lan, _ := ProfileByName("lan")
	reclaim := lan.DeadNodeReclaimTime
	lanReclaim := func(c *Config) {
		c.Profile.DeadNodeReclaimTime, c.Profile.GossipToTheDeadTime = lan.DeadNodeReclaimTime, lan.GossipToTheDeadTime
	}
	u := newUnpluggable(t)
	a := startNode(t, "a", "127.0.1.91", lanReclaim)
	b := startNode(t, "b", "127.0.1.92", lanReclaim)
	m := startNode(t, "mover", "", advertising("127.0.1.93"), lanReclaim, func(c *Config) { c.Transport = u })
	formCluster(t, a, b, m)
	peers := []*Cluster{a, b}
	testutil.WaitFor(t, waitTimeout, expect(peers, "mover", atAddr("127.0.1.93")))

	u.off.Store(true)
	testutil.WaitFor(t, waitTimeout, expect(peers, "mover", status(StatusFailed)))
	u.off.Store(false)
	start := time.Now()
	if err := m.Readdress("127.0.1.94"); err != nil {
		t.Fatal(err)
	}
	// A move, with the node's key, within a few gossip rounds: far less
	// than the reclaim time memberlist would otherwise wait for.
	within := time.Second
	testutil.WaitFor(t, lan.GossipToTheDeadTime+waitTimeout, expect(peers, "mover", atAddr("127.0.1.94")))
	took := time.Since(start)
	t.Logf("every peer lists the node alive at its new address %v after it came back", took.Round(time.Millisecond))
	if took > within {
		t.Fatalf("peers took %v to list the node back at its new address, want within %v (DeadNodeReclaimTime is %v)", took.Round(time.Millisecond), within, reclaim)
	}
	testutil.WaitFor(t, waitTimeout, allAlive([]*Cluster{a, b, m}, 3))
}

// The name of a failed node is still held at its address for
// DeadNodeReclaimTime against a node that comes with no move notice: one
// signed with another key (a second card with the same name) is refused
// and listed as a name conflict.
func TestFailedNameHeldWithoutMoveNotice(t *testing.T) {
	lan, _ := ProfileByName("lan")
	lanReclaim := func(c *Config) { c.Profile.DeadNodeReclaimTime = lan.DeadNodeReclaimTime }
	a := startNode(t, "a", "127.0.1.95", lanReclaim)
	v := startNode(t, "v", "127.0.1.96", lanReclaim)
	formCluster(t, a, v)
	old := addr(v)
	v.Shutdown()
	testutil.WaitFor(t, waitTimeout, expect([]*Cluster{a}, "v", status(StatusFailed)))

	other, _ := identity.Generate()
	imp := startNode(t, "v", "127.0.1.97", lanReclaim, func(c *Config) { c.Key = other })
	_, joinErr := imp.Join([]string{addr(a)})
	testutil.WaitFor(t, waitTimeout, func() error {
		for _, c := range a.Conflicts() {
			if c.Name == "v" && c.ExistingAddr == old && c.OtherAddr == addr(imp) {
				return nil
			}
		}
		return fmt.Errorf("no name conflict listed for v (join error %v, conflicts %v)", joinErr, a.Conflicts())
	})
	m, _ := a.Member("v")
	if m.Status != StatusFailed || hostPort(m.Addr, m.GossipPort) != old {
		t.Fatalf("a lists v %s at %s, want failed at %s: the name was taken without a move notice", m.Status, hostPort(m.Addr, m.GossipPort), old)
	}
}

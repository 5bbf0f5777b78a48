package cluster

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/identity"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// advertising binds a node to every interface and advertises ip, as the
// agent does with its default bind 0.0.0.0.
func advertising(ip string) nodeOpt {
	return func(c *Config) { c.BindAddr, c.AdvertiseAddr = "0.0.0.0", ip }
}

// atAddr checks a member's address and that its record, signed by its
// owner, carries that address.
func atAddr(ip string) func(Member) error {
	return func(m Member) error {
		if m.Status != StatusAlive {
			return fmt.Errorf("status %s, want alive", m.Status)
		}
		if m.Addr != ip {
			return fmt.Errorf("at %s, want %s", m.Addr, ip)
		}
		body, _, ok := m.SignedRecord()
		if !ok {
			return fmt.Errorf("no record")
		}
		var r Record
		if err := json.Unmarshal(body, &r); err != nil {
			return err
		}
		if r.Addr != ip {
			return fmt.Errorf("record says %s, want %s", r.Addr, ip)
		}
		return nil
	}
}

// A node whose address changes (a DHCP renewal, a container reconnected)
// moves: every peer lists it at the new address within a few gossip
// rounds, with its record signed at the new address, and never reports it
// failed or left.
func TestReaddressMovesNode(t *testing.T) {
	a := startNode(t, "a", "127.0.1.61")
	b := startNode(t, "b", "127.0.1.62")
	m := startNode(t, "mover", "", advertising("127.0.1.63"))
	formCluster(t, a, b, m)
	peers := []*Cluster{a, b}
	testutil.WaitFor(t, waitTimeout, expect(peers, "mover", atAddr("127.0.1.63")))

	type seen struct {
		observer string
		ev       Event
	}
	events := make(chan seen, 256)
	for _, o := range peers {
		ch, cancel := o.Subscribe(64)
		t.Cleanup(cancel)
		go func() {
			for ev := range ch {
				if ev.Member.Name == "mover" {
					events <- seen{o.conf.NodeName, ev}
				}
			}
		}()
	}

	start := time.Now()
	if err := m.Readdress("127.0.1.64"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, expect(peers, "mover", atAddr("127.0.1.64")))
	t.Logf("every peer lists the node at its new address %v after the move began", time.Since(start).Round(time.Millisecond))
	if ip, _ := m.LocalAddr(); ip != "127.0.1.64" {
		t.Fatalf("mover says it is at %s, want 127.0.1.64", ip)
	}

	// A record change made at the new address reaches every peer.
	m.UpdateSelf(func(r *Record) { r.Services = []string{"web"} })
	testutil.WaitFor(t, 5*time.Second, expect(peers, "mover", func(mm Member) error {
		if !slices.Equal(mm.Services, []string{"web"}) {
			return fmt.Errorf("services %v, want [web]", mm.Services)
		}
		return atAddr("127.0.1.64")(mm)
	}))
	// The node sees its peers alive, and they stay that way: no
	// flapping after the move.
	testutil.WaitFor(t, waitTimeout, allAlive([]*Cluster{a, b, m}, 3))
	deadline := time.After(2 * m.det.Timing().MinSuspicion)
	for {
		select {
		case s := <-events:
			if s.ev.Type == EventFail || s.ev.Type == EventLeave || s.ev.Member.Status != StatusAlive {
				t.Fatalf("%s reported the moving node %s (status %s)", s.observer, s.ev.Type, s.ev.Member.Status)
			}
			continue
		case <-deadline:
		}
		break
	}
	if err := allAlive([]*Cluster{a, b, m}, 3)(); err != nil {
		t.Fatal(err)
	}
}

// Only the node can move its name: a move notice signed by another key is
// refused, and a second node claiming the name at another address is
// still refused after a move.
func TestReaddressRefusesImpostor(t *testing.T) {
	a := startNode(t, "a", "127.0.1.65")
	m := startNode(t, "mover", "", advertising("127.0.1.66"))
	formCluster(t, a, m)
	testutil.WaitFor(t, waitTimeout, expect([]*Cluster{a}, "mover", atAddr("127.0.1.66")))

	other, _ := identity.Generate()
	body, _ := json.Marshal(leaveIntent{Name: "mover", Version: nowVersion(), To: "127.0.1.67:7946"})
	before := a.Stats().Rejected[rejectBadSignature.String()]
	a.handleMsg(append([]byte{msgMove}, seal(other, identity.PurposeLeave, body)...))
	if got := a.Stats().Rejected[rejectBadSignature.String()]; got != before+1 {
		t.Fatalf("forged move notice: %d bad signatures counted, want %d", got, before+1)
	}
	a.mu.Lock()
	moving := a.peers["mover"].movingTo
	a.mu.Unlock()
	if moving != "" {
		t.Fatalf("forged move notice accepted: moving to %s", moving)
	}

	if err := m.Readdress("127.0.1.68"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, expect([]*Cluster{a}, "mover", atAddr("127.0.1.68")))
	imp := startNode(t, "mover", "127.0.1.69")
	// Refused either way: by its alive message while the move is fresh,
	// as a name conflict after.
	_, joinErr := imp.Join([]string{addr(a)})
	testutil.WaitFor(t, 5*time.Second, func() error {
		if joinErr != nil {
			return nil
		}
		for _, c := range a.Conflicts() {
			if c.Name == "mover" {
				return nil
			}
		}
		return fmt.Errorf("impostor joined without an error and no name conflict is listed")
	})
	t.Logf("impostor refused: join error %v, conflicts %v", joinErr, a.Conflicts())
	if err := expect([]*Cluster{a}, "mover", atAddr("127.0.1.68"))(); err != nil {
		t.Fatal(err)
	}
}

// A node that announces a move and dies on the way is failed once the
// move's grace is over, not held alive for good.
func TestMoveThatNeverArrivesFails(t *testing.T) {
	a := startNode(t, "a", "127.0.1.75")
	m := startNode(t, "mover", "", advertising("127.0.1.76"))
	formCluster(t, a, m)
	testutil.WaitFor(t, waitTimeout, expect([]*Cluster{a}, "mover", atAddr("127.0.1.76")))

	_, port := m.LocalAddr()
	m.mu.Lock()
	body, _ := json.Marshal(leaveIntent{Name: "mover", Version: m.self.Version, To: hostPort("127.0.1.77", port)})
	m.mu.Unlock()
	a.handleMsg(append([]byte{msgMove}, seal(m.key, identity.PurposeLeave, body)...))
	if err := m.ml.Load().Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	m.Shutdown()
	// Held alive through the move's leave...
	testutil.WaitFor(t, waitTimeout, func() error {
		if n := a.ml.Load().NumMembers(); n != 1 {
			return fmt.Errorf("memberlist of a lists %d alive, want 1 once the mover's leave arrived", n)
		}
		return nil
	})
	if err := expect([]*Cluster{a}, "mover", status(StatusAlive))(); err != nil {
		t.Fatalf("during the move: %v", err)
	}
	// ...and failed when it does not arrive within the grace.
	testutil.WaitFor(t, moveGrace+waitTimeout, expect([]*Cluster{a}, "mover", status(StatusFailed)))
}

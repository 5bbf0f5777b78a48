package cluster

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"golang.org/x/crypto/ssh"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// rogue is a memberlist member that holds the cluster's gossip key (it is
// on every SD card, so one stolen Pi gives it away) but none of the honest
// nodes' signing keys. It speaks the wire format directly: whatever it
// sends, and whatever push-pull state it offers, is crafted by the test.
type rogue struct {
	ml   *memberlist.Memberlist
	meta []byte
	mu   sync.Mutex
	// state is what it answers in push-pull.
	state []byte
}

var _ memberlist.Delegate = (*rogue)(nil)

func (r *rogue) NodeMeta(int) []byte                    { return r.meta }
func (r *rogue) NotifyMsg([]byte)                       {}
func (r *rogue) GetBroadcasts(int, int) [][]byte        { return nil }
func (r *rogue) MergeRemoteState(buf []byte, join bool) {}
func (r *rogue) LocalState(bool) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

var testGossipKey = []byte("0123456789abcdef")

// startRogue starts a rogue member named name on ip, with the cluster's
// gossip key and metadata, joined to to.
func startRogue(t *testing.T, name, ip string, to *Cluster) *rogue {
	t.Helper()
	p, _ := ProfileByName("test")
	m, err := encodeMeta(meta{Proto: protoVersion, Cluster: "rpi", HTTPPort: 8080})
	if err != nil {
		t.Fatal(err)
	}
	r := &rogue{meta: m}
	mc := memberlist.DefaultLocalConfig()
	mc.Name = name
	mc.BindAddr = ip
	mc.BindPort = 0
	mc.ProbeInterval, mc.ProbeTimeout = p.ProbeInterval, p.ProbeTimeout
	mc.GossipInterval, mc.PushPullInterval = p.GossipInterval, p.PushPullInterval
	mc.TCPTimeout = p.TCPTimeout
	mc.Delegate = r
	mc.Logger = log.New(io.Discard, "", 0)
	kr, err := memberlist.NewKeyring(nil, testGossipKey)
	if err != nil {
		t.Fatal(err)
	}
	mc.Keyring, mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = kr, true, true
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatalf("rogue %s: %v", name, err)
	}
	r.ml = ml
	t.Cleanup(func() { ml.Shutdown() })
	if to != nil {
		if _, err := ml.Join([]string{addr(to)}); err != nil {
			t.Logf("rogue %q joins: %v", name, err)
		}
	}
	return r
}

// send delivers msg to each node as a direct user message.
func (r *rogue) send(t *testing.T, msg []byte, to ...*Cluster) {
	t.Helper()
	for _, c := range to {
		ip, port := c.LocalAddr()
		if err := r.ml.SendReliable(memberNode(c.conf.NodeName, ip, port), msg); err != nil {
			t.Fatalf("rogue sends to %s: %v", c.conf.NodeName, err)
		}
	}
}

// push offers state to each node in a push-pull exchange.
func (r *rogue) push(t *testing.T, state []byte, to ...*Cluster) {
	t.Helper()
	r.mu.Lock()
	r.state = state
	r.mu.Unlock()
	for _, c := range to {
		if _, err := r.ml.Join([]string{addr(c)}); err != nil {
			t.Fatalf("rogue push-pull with %s: %v", c.conf.NodeName, err)
		}
	}
}

// badNames are names no boundary may let through.
var badNames = []string{"evil ansible_connection=local", "a=b", "s1,127.0.20.1", "a\nb", "x\x1b[31m", strings.Repeat("n", 300)}

// badServices are service names no boundary may let through.
var badServices = []string{"<script>x</script>", "../../etc/passwd", strings.Repeat("s", 300), "a b"}

// sshHostKey makes an SSH host key line, as a rogue would plant.
func sshHostKey(t *testing.T) string { return sshHostKeyB(t) }

func sshHostKeyB(t testing.TB) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

// Wire encodings as a member crafts them: signature ‖ JSON, signed by k.
func recordMsg(t *testing.T, k *identity.Key, r Record) []byte {
	t.Helper()
	signed, err := signRecord(k, r)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{msgRecord}, signed...)
}

func sealedMsg(t *testing.T, typ byte, k *identity.Key, purpose string, v any) []byte {
	t.Helper()
	body, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{typ}, seal(k, purpose, body)...)
}

func desiredMsg(t *testing.T, k *identity.Key, d Desired) []byte {
	return sealedMsg(t, msgDesired, k, identity.PurposeDesired, d)
}

// counted runs attack and waits until each node has counted it under
// reason (a Rejected label, or "malformed").
func counted(t *testing.T, reason string, nodes []*Cluster, attack func()) {
	t.Helper()
	get := func(c *Cluster) uint64 {
		s := c.Stats()
		if reason == "malformed" {
			return s.MalformedMessages
		}
		return s.Rejected[reason]
	}
	before := make([]uint64, len(nodes))
	for i, c := range nodes {
		before[i] = get(c)
	}
	attack()
	testutil.WaitFor(t, waitTimeout, func() error {
		for i, c := range nodes {
			if get(c) == before[i] {
				return fmt.Errorf("%s has not counted it as %s", c.conf.NodeName, reason)
			}
		}
		return nil
	})
}

// A rogue member holding the gossip key forges records and desired
// entries for other nodes and invents invalid names: none of it reaches an
// honest node's view, and each is counted.
func TestRogueMemberCannotSpeakForOthers(t *testing.T) {
	v1 := startNode(t, "v1", "127.0.9.11", withKey(testGossipKey))
	v2 := startNode(t, "v2", "127.0.9.12", withKey(testGossipKey))
	v3 := startNode(t, "v3", "127.0.9.13", withKey(testGossipKey), withServices("db"))
	honest := formCluster(t, v1, v2, v3)
	targets := []*Cluster{v1, v2}
	events := collect(v1)
	r := startRogue(t, "rogue", "127.0.9.19", v1)
	testutil.WaitFor(t, waitTimeout, expect(honest, "rogue", status(StatusAlive)))
	rk, _ := identity.Generate()

	// Forged records for v3: new services and SSH key, a version one past
	// its own, then the end of the version range.
	real := v3.Self()
	forged := real.Record.Clone()
	forged.Services = []string{"pwned"}
	forged.SSHHostKeys = []string{sshHostKey(t)}
	forged.Version = real.Version + 1
	counted(t, "malformed", targets, func() { // unsigned, as gossip was
		b, _ := json.Marshal(forged)
		r.send(t, append([]byte{msgRecord}, b...), targets...)
	})
	counted(t, "bad_signature", targets, func() { // v3's key, the rogue's signature
		b, _ := signRecord(rk, forged)
		r.send(t, append([]byte{msgRecord}, b...), targets...)
	})
	counted(t, "bad_signature", targets, func() { // v3's own signed record, its version changed
		body, sig, _ := real.SignedRecord()
		v := fmt.Sprintf(`"v":%d`, real.Version)
		changed := []byte(strings.Replace(string(body), v, fmt.Sprintf(`"v":%d`, uint64(math.MaxUint64)), 1))
		if !strings.Contains(string(body), v) {
			t.Fatalf("no version in %s", body)
		}
		r.send(t, append(append([]byte{msgRecord}, sig...), changed...), targets...)
	})
	forged.IdentityKey = rk.Public()
	counted(t, "key_conflict", targets, func() { r.send(t, recordMsg(t, rk, forged), targets...) })
	forged.Version = math.MaxUint64
	counted(t, "key_conflict", targets, func() { r.send(t, recordMsg(t, rk, forged), targets...) })
	counted(t, "key_conflict", targets, func() {
		state, _ := encodeJSON(msgState, pushPullState{Cluster: "rpi", Records: [][]byte{recordMsg(t, rk, forged)[1:]}})
		r.push(t, state, targets...)
	})
	for _, o := range targets {
		ks := o.KeyConflicts()
		if len(ks) != 1 || ks[0].Name != "v3" || !identity.Equal(ks[0].Offered, rk.Public()) || !identity.Equal(ks[0].Pinned, v3.pub) || ks[0].Count < 3 {
			t.Errorf("%s lists key conflicts %+v, want v3 pinned to its key, offered the rogue's, 3 times or more", o.conf.NodeName, ks)
		}
	}
	testutil.WaitFor(t, waitTimeout, func() error {
		events.mu.Lock()
		defer events.mu.Unlock()
		for _, ev := range events.events {
			if ev.Type == EventConflict && ev.Conflict.Name == "v3" {
				return nil
			}
		}
		return errors.New("no conflict event for v3")
	})

	// Desired entries at the end of the range, in v1's name and the
	// rogue's own, in v1's name with the rogue's key, and for services
	// and writers no API would accept.
	frozen := Desired{Service: "web", Replicas: 7, Version: math.MaxUint64, UpdatedBy: "v1", UpdatedAt: time.Now(), WriterKey: rk.Public()}
	counted(t, "clock_ahead", honest, func() { r.send(t, desiredMsg(t, rk, frozen), honest...) })
	frozen.UpdatedBy = "rogue"
	counted(t, "clock_ahead", honest, func() {
		state, _ := encodeJSON(msgState, pushPullState{Cluster: "rpi", Desired: [][]byte{desiredMsg(t, rk, frozen)[1:]}})
		r.push(t, state, honest...)
	})
	inV1 := Desired{Service: "web", Replicas: 7, Version: nowVersion(), UpdatedBy: "v1", UpdatedAt: time.Now(), WriterKey: rk.Public()}
	counted(t, "key_conflict", []*Cluster{v2, v3}, func() { r.send(t, desiredMsg(t, rk, inV1), v2, v3) })
	counted(t, "key_conflict", []*Cluster{v1}, func() { r.send(t, desiredMsg(t, rk, inV1), v1) })
	for _, s := range badServices {
		counted(t, "invalid_service", honest, func() {
			r.send(t, desiredMsg(t, rk, Desired{Service: s, Replicas: 1, Version: nowVersion(), UpdatedBy: "rogue", UpdatedAt: time.Now(), WriterKey: rk.Public()}), honest...)
		})
	}
	for _, name := range badNames {
		counted(t, "invalid_name", honest, func() {
			r.send(t, desiredMsg(t, rk, Desired{Service: "web", Replicas: 1, Version: nowVersion(), UpdatedBy: name, UpdatedAt: time.Now(), WriterKey: rk.Public()}), honest...)
		})
	}

	// Records, heartbeats, silence reports and members with names no node
	// may have, and the rogue's own record with services, SSH host keys
	// and labels no API would accept.
	own := Record{Name: "rogue", Addr: "127.0.9.19", GossipPort: int(r.ml.LocalNode().Port), Version: nowVersion(), IdentityKey: rk.Public()}
	for _, s := range badServices {
		rec := own
		rec.Services = []string{"web", s}
		counted(t, "invalid_service", honest, func() { r.send(t, recordMsg(t, rk, rec), honest...) })
	}
	for _, bad := range []func(*Record){
		func(r *Record) { r.SSHHostKeys = []string{sshHostKey(t) + "\nv1 " + sshHostKey(t)} },
		func(r *Record) { r.SSHHostKeys = []string{"not a key"} },
		func(r *Record) { r.Model = "Pi\x1b]0;pwned\x07" },
		func(r *Record) { r.AgentVersion = strings.Repeat("v", 300) },
		func(r *Record) { r.Addr = "127.0.0.1 ansible_host=evil" },
	} {
		rec := own
		bad(&rec)
		counted(t, "invalid_field", honest, func() { r.send(t, recordMsg(t, rk, rec), honest...) })
	}
	for i, name := range badNames {
		rec := own
		rec.Name = name
		counted(t, "invalid_name", honest, func() { r.send(t, recordMsg(t, rk, rec), honest...) })
		counted(t, "invalid_name", honest, func() { r.send(t, encodeHeartbeat(name, "127.0.9.19:7946", 1, time.Second), honest...) })
		counted(t, "invalid_name", honest, func() { r.send(t, encodeNames(msgSilent, "rogue", []string{"v1", name}), honest...) })
		counted(t, "invalid_name", honest, func() { startRogue(t, name, fmt.Sprintf("127.0.9.%d", 20+i), v1) })
	}
	counted(t, "invalid_field", honest, func() { r.send(t, encodeHeartbeat("rogue", "evil:host", 1, time.Second), honest...) })

	barrier(t, v1, honest)
	for _, o := range targets {
		m, _ := o.Member("v3")
		if slices.Contains(m.Services, "pwned") || m.Version == math.MaxUint64 || !slices.Equal(m.SSHHostKeys, real.SSHHostKeys) {
			t.Errorf("%s sees v3 with services %v, keys %v, version %d: a forged record was applied", o.conf.NodeName, m.Services, m.SSHHostKeys, m.Version)
		}
	}
	for _, o := range honest {
		for _, m := range o.Members() {
			if err := checkRecordFields(m.Record); m.Status != StatusFailed && m.Version != 0 && err != nil {
				t.Errorf("%s lists %s: %v", o.conf.NodeName, apitypes.Quote(m.Name), err)
			}
			if apitypes.ValidateNodeName(m.Name) != nil {
				t.Errorf("%s lists a member named %s", o.conf.NodeName, apitypes.Quote(m.Name))
			}
		}
		for _, d := range o.Desired() {
			if d.Service == "web" || slices.Contains(badServices, d.Service) {
				t.Errorf("%s holds desired state %+v", o.conf.NodeName, d)
			}
		}
	}

	// v3's own later writes still spread, and an honest desired write
	// takes effect.
	v3.UpdateSelf(func(r *Record) { r.Services = []string{"db", "cache"} })
	testutil.WaitFor(t, waitTimeout, expect(honest, "v3", func(m Member) error {
		if !slices.Equal(m.Services, []string{"db", "cache"}) {
			return fmt.Errorf("services %v, want [db cache]", m.Services)
		}
		return nil
	}))
	want, err := v2.SetDesired("web", 2)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, waitTimeout, desiredEverywhere(honest, want))
}

// A desired entry the rogue signs as itself, as far ahead as the receivers
// allow, wins for now; the next honest write still wins over it.
func TestRogueDesiredCannotFreezeTheCount(t *testing.T) {
	v1 := startNode(t, "f1", "127.0.9.31", withKey(testGossipKey))
	v2 := startNode(t, "f2", "127.0.9.32", withKey(testGossipKey))
	honest := formCluster(t, v1, v2)
	r := startRogue(t, "rogue", "127.0.9.39", v1)
	rk, _ := identity.Generate()
	ahead := Desired{Service: "web", Replicas: 9, Version: uint64(time.Now().Add(maxDesiredAhead - time.Minute).UnixNano()), UpdatedBy: "rogue", UpdatedAt: time.Now(), WriterKey: rk.Public()}
	r.send(t, desiredMsg(t, rk, ahead), honest...)
	testutil.WaitFor(t, waitTimeout, desiredEverywhere(honest, ahead))
	want, err := v1.SetDesired("web", 2)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, waitTimeout, desiredEverywhere(honest, want))
}

// A forged leave intent for a live node does not turn its later failure
// into a leave: its failure handlers still run.
func TestRogueLeaveForLiveNodeIsRefused(t *testing.T) {
	v1 := startNode(t, "l1", "127.0.9.41", withKey(testGossipKey))
	v2 := startNode(t, "l2", "127.0.9.42", withKey(testGossipKey))
	v3 := startNode(t, "l3", "127.0.9.43", withKey(testGossipKey))
	formCluster(t, v1, v2, v3)
	targets := []*Cluster{v1, v2}
	r := startRogue(t, "rogue", "127.0.9.49", v1)
	testutil.WaitFor(t, waitTimeout, expect(targets, "rogue", status(StatusAlive)))
	rk, _ := identity.Generate()

	counted(t, "malformed", targets, func() { // unsigned, as gossip was
		b, _ := json.Marshal(leaveIntent{Name: "l3", Version: v3.Self().Version})
		r.send(t, append([]byte{msgLeave}, b...), targets...)
	})
	counted(t, "bad_signature", targets, func() {
		r.send(t, sealedMsg(t, msgLeave, rk, identity.PurposeLeave, leaveIntent{Name: "l3", Version: v3.Self().Version}), targets...)
	})
	counted(t, "bad_signature", targets, func() {
		r.send(t, sealedMsg(t, msgLeaveDirect, rk, identity.PurposeLeave, leaveIntent{Name: "l3", Version: math.MaxUint64}), targets...)
	})
	counted(t, "bad_signature", targets, func() {
		l := sealedMsg(t, msgLeave, rk, identity.PurposeLeave, leaveIntent{Name: "l3", Version: math.MaxUint64})
		state, _ := encodeJSON(msgState, pushPullState{Cluster: "rpi", Left: [][]byte{l[1:]}})
		r.push(t, state, targets...)
	})
	counted(t, "unknown_key", targets, func() {
		r.send(t, sealedMsg(t, msgLeave, rk, identity.PurposeLeave, leaveIntent{Name: "ghost", Version: 1}), targets...)
	})
	for _, name := range badNames {
		counted(t, "invalid_name", targets, func() {
			r.send(t, sealedMsg(t, msgLeave, rk, identity.PurposeLeave, leaveIntent{Name: name, Version: 1}), targets...)
		})
	}

	v3.Shutdown() // dies without leaving
	testutil.WaitFor(t, waitTimeout, expect(targets, "l3", func(m Member) error {
		if m.Status == StatusAlive || m.Status == StatusSuspect {
			return fmt.Errorf("status %s, want it gone", m.Status)
		}
		return nil
	}))
	for _, o := range targets {
		if m, _ := o.Member("l3"); m.Status != StatusFailed {
			t.Errorf("%s says l3 %s after it died: want failed (the leave was forged)", o.conf.NodeName, m.Status)
		}
	}
}

// An honest leave still reads as a leave everywhere, by gossip and by
// push-pull: the signed intent is checked against the pinned key.
func TestSignedLeaveIsHonoured(t *testing.T) {
	nodes := formCluster(t, startNode(t, "g1", "127.0.9.51"), startNode(t, "g2", "127.0.9.52"), startNode(t, "g3", "127.0.9.53"))
	if err := nodes[2].Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	nodes[2].Shutdown()
	testutil.WaitFor(t, waitTimeout, expect(nodes[:2], "g3", status(StatusLeft)))
	s, err := decodeState(nodes[0].handleLocalState(false))
	if err != nil || len(s.Left) != 1 {
		t.Fatalf("push-pull state carries leave intents %d, %v; want g3's", len(s.Left), err)
	}
	if name, ok := nodes[1].handleSignedLeave(s.Left[0]); !ok || name != "g3" {
		t.Fatalf("g3's signed intent, as push-pull carries it, does not check out: %q %v", name, ok)
	}
}

// Pins outlive a restart (same pins file), a reinstalled node's new key is
// refused and listed as a conflict until Rekey accepts it.
func TestPinsPersistAndRekey(t *testing.T) {
	dir := t.TempDir()
	ka, _ := identity.Generate()
	openPins := func() *identity.Pins {
		p, err := identity.OpenPins(filepath.Join(dir, "pins.json"))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	withIdentity := func(k *identity.Key, p *identity.Pins) nodeOpt {
		return func(c *Config) { c.Key, c.Pins = k, p }
	}
	a := startNode(t, "p1", "127.0.9.61", withIdentity(ka, openPins()))
	b := startNode(t, "p2", "127.0.9.62", withServices("db"))
	formCluster(t, a, b)
	testutil.WaitFor(t, waitTimeout, expect([]*Cluster{a}, "p2", func(m Member) error {
		if !identity.Equal(m.IdentityKey, b.pub) {
			return errors.New("no record yet")
		}
		return nil
	}))
	if err := a.pins.Flush(); err != nil {
		t.Fatal(err)
	}
	a.Shutdown()
	b.Shutdown()

	// p1 restarts with its pins; p2 comes back with a new key (its card
	// was reinstalled).
	a = startNode(t, "p1", "127.0.9.61", withIdentity(ka, openPins()))
	kb, _ := identity.Generate()
	b = startNode(t, "p2", "127.0.9.62", withServices("db"), withIdentity(kb, nil))
	join(t, b, a)
	testutil.WaitFor(t, waitTimeout, func() error {
		ks := a.KeyConflicts()
		if len(ks) != 1 || ks[0].Name != "p2" || !identity.Equal(ks[0].Offered, b.pub) {
			return fmt.Errorf("p1 lists key conflicts %+v, want p2 offered its new key", ks)
		}
		return nil
	})
	if m, _ := a.Member("p2"); m.Signed != nil || slices.Contains(m.Services, "db") {
		t.Fatalf("p1 applied p2's record signed by an unpinned key: %+v", m)
	}
	if _, err := a.Rekey("p1"); err == nil {
		t.Fatal("Rekey of the node's own name succeeded")
	}
	if _, err := a.Rekey("nobody"); !errors.Is(err, ErrNoKeyConflict) {
		t.Fatalf("Rekey without a conflict: %v, want ErrNoKeyConflict", err)
	}
	if _, err := a.Rekey("p2"); err != nil {
		t.Fatal(err)
	}
	if ks := a.KeyConflicts(); len(ks) != 0 {
		t.Fatalf("conflicts left after Rekey: %+v", ks)
	}
	b.UpdateSelf(func(r *Record) { r.Monitoring.Load1 = 1 })
	testutil.WaitFor(t, waitTimeout, expect([]*Cluster{a}, "p2", func(m Member) error {
		if !slices.Contains(m.Services, "db") || !identity.Equal(m.IdentityKey, b.pub) {
			return fmt.Errorf("services %v key %x: the new key's record is not applied", m.Services, m.IdentityKey)
		}
		return nil
	}))
	if got, _ := openPins().Lookup("p2"); !identity.Equal(got, b.pub) {
		t.Fatal("Rekey did not save the new pin")
	}
}

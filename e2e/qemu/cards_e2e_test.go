//go:build e2e

package qemu_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
	"github.com/rpi-cluster/rpi-cluster/e2e/qemu"
	"github.com/rpi-cluster/rpi-cluster/e2e/vcluster"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// card is one emulated Pi of the scenario: its card file, its machine
// (replaced at each boot) and what the cluster knows it by.
type card struct {
	n    int
	file string
	mac  string
	tap  string
	name string // the name first boot gives it: rpi- + the MAC's last three octets
	addr netip.Addr
	vm   *qemu.VM
}

func (c *card) url() string { return "http://" + netip.AddrPortFrom(c.addr, 8080).String() }

// scenario holds what every step needs.
type scenario struct {
	t       *testing.T
	ctx     context.Context
	dir     string
	bin     string
	net     *qemu.Network
	cards   []*card
	key     string // the workstation's private key
	wsCfg   string // the workstation config rpi-image wrote
	token   string
	kh      string // known_hosts written by rpi-inventory known-hosts
	invPath string // the dynamic inventory as Ansible runs it
}

// TestEmulatedCards boots the SD image as a user makes it: rpi-image build
// on a Pi-shaped Debian arm64 base, three cards written from the one image,
// each booted in qemu-system-aarch64 from its own boot partition, with
// addresses from DHCP on a LAN made in this (isolated) network namespace.
//
// Needs RPI_PI_BASE (the base image, see `rpi-vcluster pi-base`) and the
// builds of `make build cross` in RPI_BIN (default ../../bin); run by `make
// test-emulated` under `unshare --net`.
func TestEmulatedCards(t *testing.T) {
	base := os.Getenv("RPI_PI_BASE")
	if base == "" {
		t.Skip("RPI_PI_BASE not set: run `make test-emulated` (it builds the pi base image and runs this in an isolated network namespace)")
	}
	if err := qemu.Isolated(); err != nil {
		t.Fatal(err)
	}
	bin := os.Getenv("RPI_BIN")
	if bin == "" {
		bin = "../../bin"
	}
	bin, _ = filepath.Abs(bin)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	t.Cleanup(cancel)
	s := &scenario{t: t, ctx: ctx, dir: t.TempDir(), bin: bin}

	// The user's side: a key pair, then rpi-image build exactly as the
	// README has it.
	ws := filepath.Join(s.dir, "workstation")
	var err error
	if s.key, err = vcluster.EnsureSSHKey(ws); err != nil {
		t.Fatal(err)
	}
	s.wsCfg = filepath.Join(ws, "config.yaml")
	cluster := filepath.Join(s.dir, "cluster.img")
	start := time.Now()
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "rpi-image"), "build", "--base", base, "--out", cluster,
		"--ssh-key", s.key+".pub", "--agent-dir", bin, "--config-out", s.wsCfg).CombinedOutput()
	if err != nil {
		t.Fatalf("rpi-image build: %v\n%s", err, out)
	}
	t.Logf("phase: rpi-image build on the pi base: %s", time.Since(start).Round(100*time.Millisecond))
	s.token = workstationToken(t, s.wsCfg)
	files, err := qemu.WriteCards(cluster, s.dir, 3)
	if err != nil {
		t.Fatal(err)
	}

	s.net, err = qemu.NewNetwork(ctx, s.dir, "rpibr0", netip.MustParsePrefix("10.77.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dnsmasq log:\n%s", s.net.Log())
		}
		s.net.Close()
	})
	for i, f := range files {
		c := &card{n: i + 1, file: f, mac: fmt.Sprintf("52:54:00:5e:00:%02x", i+1), tap: fmt.Sprintf("rpitap%d", i+1)}
		c.name = fmt.Sprintf("rpi-5e00%02x", i+1)
		if c.addr, err = s.net.Reserve(c.mac, 10+c.n); err != nil {
			t.Fatal(err)
		}
		if err := s.net.AddTap(ctx, c.tap); err != nil {
			t.Fatal(err)
		}
		s.cards = append(s.cards, c)
	}
	t.Cleanup(func() {
		for _, c := range s.cards {
			if c.vm != nil && c.vm.Running() {
				c.vm.Kill()
			}
			if t.Failed() && c.vm != nil {
				t.Logf("%s console (last lines):\n%s", c.name, c.vm.ConsoleTail(40))
			}
		}
	})

	// Power on all three together, as a rack of Pis is.
	for _, c := range s.cards {
		s.boot(c)
	}
	s.waitAliveEverywhere(s.cards, s.cards, 12*time.Minute, "first boot")

	// From here on SSH checks host keys against those gossiped.
	s.writeKnownHosts()
	s.firstBootIdentity()
	s.discoveredByMDNS()
	s.ansiblePing("all")
	s.hardenedUnit(s.cards[0])
	s.addressChange(s.cards[2])
	s.powerCut(s.cards[1])
	s.poweroff(s.cards[0])
}

// boot powers a card on.
func (s *scenario) boot(c *card) {
	s.t.Helper()
	vm, err := qemu.Boot(s.ctx, qemu.VMConfig{Name: c.name, Card: c.file, MAC: c.mac, Tap: c.tap, Dir: s.dir})
	if err != nil {
		s.t.Fatal(err)
	}
	c.vm = vm
}

func (s *scenario) client(c *card) *client.Client {
	cl, err := client.New(c.url(), s.token)
	if err != nil {
		s.t.Fatal(err)
	}
	return cl
}

// views asks each card's agent for its /v1/nodes.
func (s *scenario) views(observers []*card) map[*card][]apitypes.Node {
	out := map[*card][]apitypes.Node{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, o := range observers {
		wg.Add(1)
		go func(o *card) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
			defer cancel()
			nodes, err := s.client(o).Nodes(ctx)
			if err == nil {
				mu.Lock()
				out[o] = nodes
				mu.Unlock()
			}
		}(o)
	}
	wg.Wait()
	return out
}

func find(view []apitypes.Node, name string) (apitypes.Node, bool) {
	for _, n := range view {
		if n.Name == name {
			return n, true
		}
	}
	return apitypes.Node{}, false
}

// waitAliveEverywhere waits until every card in cards is alive, at its
// address, in the view of every card in cards, and logs for each card of
// booted the time from its power-on to that moment.
func (s *scenario) waitAliveEverywhere(cards, booted []*card, timeout time.Duration, phase string) {
	s.t.Helper()
	done := map[*card]time.Duration{}
	deadline := time.Now().Add(timeout)
	for len(done) < len(cards) {
		views := s.views(cards)
		for _, c := range cards {
			if _, ok := done[c]; ok {
				continue
			}
			everywhere := len(views) == len(cards)
			for _, o := range cards {
				n, ok := find(views[o], c.name)
				if !ok || n.Status != apitypes.StatusAlive || n.Address != c.addr.String() {
					everywhere = false
				}
			}
			if everywhere {
				done[c] = time.Since(c.vm.Started())
				if !contains(booted, c) {
					continue
				}
				s.t.Logf("%s: %s: power-on to alive on every peer: %s", phase, c.name, done[c].Round(100*time.Millisecond))
			}
		}
		if len(done) == len(cards) {
			return
		}
		for _, c := range cards {
			if !c.vm.Running() {
				s.t.Fatalf("%s: %s powered off unexpectedly; console:\n%s", phase, c.name, c.vm.ConsoleTail(40))
			}
		}
		if time.Now().After(deadline) {
			var missing []string
			for _, c := range cards {
				if _, ok := done[c]; !ok {
					missing = append(missing, fmt.Sprintf("%s (%s)", c.name, c.addr))
				}
			}
			s.t.Fatalf("%s: after %s, not alive on every peer: %s; views: %s", phase, timeout, strings.Join(missing, ", "), describe(views))
		}
		time.Sleep(time.Second)
	}
}

func describe(views map[*card][]apitypes.Node) string {
	var b strings.Builder
	for o, view := range views {
		fmt.Fprintf(&b, "\n  %s sees:", o.name)
		for _, n := range view {
			fmt.Fprintf(&b, " %s@%s=%s", n.Name, n.Address, n.Status)
		}
	}
	return b.String()
}

// ssh runs a command on a card as the login user, with the workstation key
// only and host keys checked against known_hosts.
func (s *scenario) ssh(c *card, command string) (string, error) {
	if s.kh == "" {
		return "", errors.New("ssh before known_hosts was written from gossip")
	}
	kh := s.kh
	args := []string{"-i", s.key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "PasswordAuthentication=no",
		"-o", "ConnectTimeout=20", "-o", "UserKnownHostsFile=" + kh, "-o", "StrictHostKeyChecking=yes",
		"-o", "LogLevel=ERROR", vcluster.DefaultSSHUser + "@" + c.addr.String(), command}
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ssh", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ssh %s %q: %w: %s", c.name, command, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func (s *scenario) mustSSH(c *card, command string) string {
	s.t.Helper()
	out, err := s.ssh(c, command)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// identity is what must differ between cards written from one image.
type identity struct {
	hostname, machineID, hostKey, nodeKey string
}

func (s *scenario) identityOf(c *card) identity {
	s.t.Helper()
	out := s.mustSSH(c, "cat /etc/hostname /etc/machine-id; ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub")
	f := strings.Fields(out)
	if len(f) < 4 {
		s.t.Fatalf("%s: identity files: %q", c.name, out)
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	self, err := s.client(c).Self(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	return identity{hostname: f[0], machineID: f[1], hostKey: f[3], nodeKey: self.IdentityKey}
}

// firstBootIdentity: each card's first boot gave it a hostname, machine-id,
// SSH host keys and node key of its own.
func (s *scenario) firstBootIdentity() {
	s.t.Helper()
	seen := map[string]string{}
	for _, c := range s.cards {
		id := s.identityOf(c)
		if id.hostname != c.name {
			s.t.Errorf("%s: hostname %q, want %q (rpi- and the MAC's last three octets)", c.name, id.hostname, c.name)
		}
		if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id.machineID) {
			s.t.Errorf("%s: machine-id %q is not 32 hex digits", c.name, id.machineID)
		}
		if id.nodeKey == "" {
			s.t.Errorf("%s: the agent reports no node key", c.name)
		}
		for kind, v := range map[string]string{"hostname": id.hostname, "machine-id": id.machineID, "SSH host key": id.hostKey, "node key": id.nodeKey} {
			if other, dup := seen[kind+"="+v]; dup {
				s.t.Errorf("%s and %s share the %s %s: first boot did not make it unique", other, c.name, kind, v)
			}
			seen[kind+"="+v] = c.name
		}
		s.t.Logf("%s: machine-id %s, ssh host key %s, node key %s", c.name, id.machineID, id.hostKey, id.nodeKey)
	}
}

// discoveredByMDNS: the cards found each other with nothing configured to
// join: the image's agent.yaml has no join address.
func (s *scenario) discoveredByMDNS() {
	s.t.Helper()
	cfg := s.mustSSH(s.cards[0], "sudo cat /etc/rpi-cluster/agent.yaml")
	if regexp.MustCompile(`(?m)^\s*join\s*:`).MatchString(cfg) {
		s.t.Errorf("the image's agent.yaml configures join addresses; discovery must be by mDNS alone:\n%s", cfg)
	}
	if regexp.MustCompile(`(?m)^\s*mdns\s*:\s*false`).MatchString(cfg) {
		s.t.Errorf("the image's agent.yaml turns mDNS off:\n%s", cfg)
	}
}

// inventory runs rpi-inventory against the first running card's agent.
func (s *scenario) inventory(args ...string) (string, error) {
	var agents []string
	for _, c := range s.cards {
		if c.vm != nil && c.vm.Running() {
			agents = append(agents, c.url())
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, "rpi-inventory"), append([]string{"--config", s.wsCfg, "--agent", strings.Join(agents, ",")}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("rpi-inventory %s: %w: %s", strings.Join(args, " "), err, ee.Stderr)
		}
		return "", fmt.Errorf("rpi-inventory %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// writeKnownHosts takes the host keys from gossip, as a user does.
func (s *scenario) writeKnownHosts() {
	s.t.Helper()
	kh := filepath.Join(s.dir, "workstation", "known_hosts")
	if _, err := s.inventory("known-hosts", "-o", kh); err != nil {
		s.t.Fatal(err)
	}
	s.kh = kh
	data, _ := os.ReadFile(kh)
	for _, c := range s.cards {
		if !strings.Contains(string(data), c.name) {
			s.t.Errorf("known_hosts from gossip has no key for %s:\n%s", c.name, data)
		}
	}
	inv := filepath.Join(s.dir, "workstation", "inventory.sh")
	script := fmt.Sprintf("#!/bin/sh\nexec %s --config %s --agent %s \"$@\"\n", filepath.Join(s.bin, "rpi-inventory"), s.wsCfg, "\"$RPI_AGENTS\"")
	if err := os.WriteFile(inv, []byte(script), 0o755); err != nil {
		s.t.Fatal(err)
	}
	s.invPath = inv
}

// ansiblePing runs `ansible -m ping` on pattern with rpi-inventory as the
// inventory, over SSH with the key only and host keys from gossip.
func (s *scenario) ansiblePing(pattern string) {
	s.t.Helper()
	var agents []string
	for _, c := range s.cards {
		if c.vm != nil && c.vm.Running() {
			agents = append(agents, c.url())
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ansible", pattern, "-i", s.invPath, "-m", "ping", "-u", vcluster.DefaultSSHUser,
		"--private-key", s.key, "-e", "ansible_python_interpreter=/usr/bin/python3",
		// With "=": a separate value starting with "-" is taken for an option.
		"--ssh-common-args=-o IdentitiesOnly=yes -o PasswordAuthentication=no -o UserKnownHostsFile="+s.kh+" -o StrictHostKeyChecking=yes")
	cmd.Env = append(os.Environ(), "RPI_AGENTS="+strings.Join(agents, ","), "ANSIBLE_HOST_KEY_CHECKING=True",
		"ANSIBLE_TIMEOUT=60", "ANSIBLE_LOCAL_TEMP="+filepath.Join(s.dir, "ansible-tmp"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("ansible %s -m ping: %v\n%s", pattern, err, out)
	}
	if n := strings.Count(string(out), "SUCCESS"); pattern == "all" && n != len(s.cards) {
		s.t.Fatalf("ansible all -m ping: %d SUCCESS, want %d:\n%s", n, len(s.cards), out)
	}
	s.t.Logf("phase: ansible %s -m ping (keys only, host keys from gossip): %s", pattern, time.Since(start).Round(100*time.Millisecond))
}

// hardenedUnit: the agent runs under the unit as written, rated at most
// 2.0 by systemd-analyze security, and verify finds nothing in the units.
func (s *scenario) hardenedUnit(c *card) {
	s.t.Helper()
	if out, err := s.ssh(c, "sudo systemd-analyze verify /etc/systemd/system/rpi-agent.service /etc/systemd/system/rpi-firstboot.service 2>&1"); err != nil || strings.TrimSpace(out) != "" {
		s.t.Errorf("systemd-analyze verify on the image's units in %s: %v\n%s", c.name, err, out)
	}
	sec := s.mustSSH(c, "sudo systemd-analyze security --no-pager rpi-agent.service")
	m := regexp.MustCompile(`Overall exposure level for rpi-agent.service: ([0-9.]+)`).FindStringSubmatch(sec)
	if m == nil {
		s.t.Fatalf("systemd-analyze security printed no exposure:\n%s", sec)
	}
	if exposure, _ := strconv.ParseFloat(m[1], 64); exposure > 2.0 {
		s.t.Errorf("rpi-agent.service exposure %s in %s, want at most 2.0:\n%s", m[1], c.name, sec)
	}
	s.t.Logf("%s: systemd-analyze security rpi-agent.service: %s", c.name, m[1])
	state := s.mustSSH(c, "systemctl show -p ActiveState,NRestarts,User rpi-agent.service")
	if !strings.Contains(state, "ActiveState=active") || !strings.Contains(state, "NRestarts=0") || !strings.Contains(state, "User=rpi-agent") {
		s.t.Errorf("%s: rpi-agent.service is not running steadily as rpi-agent under its unit:\n%s", c.name, state)
	}
}

func (s *scenario) others(c *card) []*card {
	var out []*card
	for _, o := range s.cards {
		if o != c && o.vm != nil && o.vm.Running() {
			out = append(out, o)
		}
	}
	return out
}

// waitStatus waits until every observer lists name with status (and, when
// addr is valid, at addr), and returns how long that took from start.
func (s *scenario) waitStatus(observers []*card, name, status string, addr netip.Addr, start time.Time, timeout time.Duration) time.Duration {
	s.t.Helper()
	var last map[*card][]apitypes.Node
	err := testutil.Poll(timeout, 250*time.Millisecond, func() error {
		last = s.views(observers)
		for _, o := range observers {
			n, ok := find(last[o], name)
			if !ok || n.Status != status || (addr.IsValid() && n.Address != addr.String()) {
				return errors.New("not yet")
			}
		}
		return nil
	})
	if err != nil {
		want := status
		if addr.IsValid() {
			want += " at " + addr.String()
		}
		s.t.Fatalf("after %s, not every peer sees %s %s; views: %s", timeout, name, want, describe(last))
	}
	return time.Since(start)
}

// addressChange: the card's DHCP reservation moves, the card renews, and
// every peer lists it under its name at the new address within seconds,
// never failed for longer than one detection period; the inventory gives
// the new ansible_host and Ansible reaches it there.
func (s *scenario) addressChange(c *card) {
	s.t.Helper()
	lan, _ := cluster.ProfileByName("lan")
	detection := time.Duration(lan.SuspicionMult) * lan.ProbeInterval
	peers := s.others(c)

	var mu sync.Mutex
	notAlive := map[*card]time.Time{}
	var longest time.Duration
	var sightings []string
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			views := s.views(peers)
			now := time.Now()
			mu.Lock()
			for o, view := range views {
				n, ok := find(view, c.name)
				if !ok {
					continue
				}
				if n.Status == apitypes.StatusAlive {
					delete(notAlive, o)
					continue
				}
				if _, ok := notAlive[o]; !ok {
					notAlive[o] = now
				}
				longest = max(longest, now.Sub(notAlive[o]))
				sightings = append(sightings, fmt.Sprintf("%s: %s saw %s %s at %s", now.Format("15:04:05.000"), o.name, c.name, n.Status, n.Address))
			}
			mu.Unlock()
		}
	}()

	old := c.addr
	addr, err := s.net.Reserve(c.mac, 20+c.n)
	if err != nil {
		s.t.Fatal(err)
	}
	// The DHCP client starts over (as after a link flap): it asks for its
	// old address, is refused, and takes the new one. `networkctl renew`
	// is not enough here: the server's refusal of a renewal is broadcast,
	// and systemd-networkd, renewing from a socket bound to its address,
	// never hears it (seen in dnsmasq's log: DHCPNAK twice, then silence
	// until the lease runs out). The command cuts this very SSH session's
	// address, so it runs detached.
	s.mustSSH(c, "sudo systemd-run --quiet --on-active=1 networkctl reconfigure eth0")
	start := time.Now()
	c.addr = addr
	took := s.waitStatus(peers, c.name, apitypes.StatusAlive, addr, start, 2*time.Minute)
	close(stop)
	<-watched
	s.t.Logf("address change: %s moved %s → %s by DHCP; alive at the new address on every peer after %s (from the renewal command)", c.name, old, addr, took.Round(100*time.Millisecond))
	s.t.Logf("address change: longest a peer showed %s not alive: %s (one detection period: %s)", c.name, longest.Round(10*time.Millisecond), detection)
	slow := longest > detection
	if slow {
		s.t.Errorf("a peer showed %s not alive for %s, longer than one detection period (%s); the renewal command ran at %s:\n%s",
			c.name, longest, detection, start.Format("15:04:05.000"), strings.Join(sightings, "\n"))
	}

	hostvars, err := s.inventory("--host", c.name)
	if err != nil {
		s.t.Fatal(err)
	}
	var hv struct {
		AnsibleHost string `json:"ansible_host"`
	}
	if err := json.Unmarshal([]byte(hostvars), &hv); err != nil || hv.AnsibleHost != addr.String() {
		s.t.Fatalf("rpi-inventory --host %s: ansible_host %q, want %s (%v)\n%s", c.name, hv.AnsibleHost, addr, err, hostvars)
	}
	// The host keys are the card's, now at its new address.
	s.writeKnownHosts()
	if slow {
		// What the card's DHCP client and agent did, in the card's time.
		journal, _ := s.ssh(c, "journalctl -o short-precise --no-pager -n 60 -u systemd-networkd -u rpi-agent")
		s.t.Logf("%s journal:\n%s", c.name, journal)
	}
	s.ansiblePing(c.name)
}

// powerCut: a card killed without shutdown is failed on the others; booted
// again it has the same name, node key and meta-data.json, and first boot
// did not run again.
func (s *scenario) powerCut(c *card) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	const service = "emulated_probe"
	if _, err := s.client(c).AddService(ctx, service); err != nil {
		s.t.Fatal(err)
	}
	before := s.identityOf(c)
	marker := s.mustSSH(c, "cat /var/lib/rpi-cluster/firstboot.done")
	metaBefore := s.mustSSH(c, "sudo cat /var/lib/rpi-agent/meta-data.json")
	if !strings.Contains(metaBefore, service) {
		s.t.Fatalf("%s: meta-data.json lacks %s after adding it: %s", c.name, service, metaBefore)
	}
	peers := s.others(c)

	c.vm.Kill()
	cut := time.Now()
	took := s.waitStatus(peers, c.name, apitypes.StatusFailed, netip.Addr{}, cut, 2*time.Minute)
	s.t.Logf("power cut: %s (qemu killed) failed on every peer after %s", c.name, took.Round(100*time.Millisecond))

	s.boot(c)
	s.waitAliveEverywhere(s.cards, []*card{c}, 8*time.Minute, "boot after the power cut")
	after := s.identityOf(c)
	if after != before {
		s.t.Errorf("%s: identity changed across a power cut:\n before %+v\n after  %+v", c.name, before, after)
	}
	if m := s.mustSSH(c, "cat /var/lib/rpi-cluster/firstboot.done"); m != marker {
		s.t.Errorf("%s: first boot ran again after a power cut: marker %q, was %q", c.name, m, marker)
	}
	if r := s.mustSSH(c, "systemctl show -p ConditionResult --value rpi-firstboot.service"); strings.TrimSpace(r) != "no" {
		s.t.Errorf("%s: rpi-firstboot.service ran on the second boot (ConditionResult=%s), want it skipped", c.name, strings.TrimSpace(r))
	}
	var meta struct {
		Services []string `json:"services"`
	}
	metaAfter := s.mustSSH(c, "sudo cat /var/lib/rpi-agent/meta-data.json")
	if err := json.Unmarshal([]byte(metaAfter), &meta); err != nil || metaAfter != metaBefore {
		s.t.Errorf("%s: meta-data.json after the power cut: %q (%v), before: %q", c.name, metaAfter, err, metaBefore)
	}
	for _, o := range s.others(c) {
		views := s.views([]*card{o})
		if n, ok := find(views[o], c.name); !ok || !contains(n.Services, service) {
			s.t.Errorf("%s does not list %s running %s after its power cut: %+v", o.name, c.name, service, n)
		}
	}
}

func contains[T comparable](list []T, v T) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// poweroff: `systemctl poweroff` on a card makes it leave: the others list
// it left, and the machine powers off.
func (s *scenario) poweroff(c *card) {
	s.t.Helper()
	peers := s.others(c)
	_, _ = s.ssh(c, "sudo systemctl poweroff") // the session may end before ssh reports success
	start := time.Now()
	took := s.waitStatus(peers, c.name, apitypes.StatusLeft, netip.Addr{}, start, 2*time.Minute)
	s.t.Logf("poweroff: %s left on every peer after %s", c.name, took.Round(100*time.Millisecond))
	if err := c.vm.WaitOff(2 * time.Minute); err != nil {
		s.t.Errorf("%s: %v", c.name, err)
	}
}

// workstationToken reads the API token from the workstation config
// rpi-image wrote.
func workstationToken(t *testing.T, path string) string {
	t.Helper()
	cfg, err := client.LoadWorkstationConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cfg.APIToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

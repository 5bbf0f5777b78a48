package discovery

import (
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/grandcat/zeroconf"
)

func TestTXTRoundTrip(t *testing.T) {
	self := Peer{Instance: "pi-kitchen", Cluster: "home", Version: "v0.3.0+abc", Addrs: []net.IP{net.ParseIP("10.0.0.7")}, GossipPort: 7946, HTTPPort: 8080}
	txt := encodeTXT(self)
	if want := []string{"v=1", "cluster=home", "http=8080", "version=v0.3.0+abc"}; !slices.Equal(txt, want) {
		t.Fatalf("TXT = %q, want %q", txt, want)
	}
	e := zeroconf.NewServiceEntry(escapeInstance(self.Instance), ServiceType, Domain)
	e.Port = self.GossipPort
	// Newer agents may add keys; a value may contain '='.
	e.Text = append(txt, "future=x=y", "novalue")
	e.AddrIPv4 = []net.IP{net.ParseIP("10.0.0.7")}
	e.AddrIPv6 = []net.IP{net.ParseIP("fe80::7")}
	p, ok := peerFromEntry(e)
	if !ok {
		t.Fatal("entry rejected")
	}
	if p.Instance != self.Instance || p.Cluster != self.Cluster || p.Version != self.Version ||
		p.HTTPPort != 8080 || p.GossipPort != 7946 || p.GossipAddr() != "10.0.0.7:7946" || len(p.Addrs) != 2 {
		t.Fatalf("peer = %+v, want it to match %+v", p, self)
	}
	if _, ok := peerFromEntry(zeroconf.NewServiceEntry("x", ServiceType, Domain)); ok {
		t.Error("entry without a port accepted")
	}
}

func TestInstanceEscaping(t *testing.T) {
	for _, name := range []string{"pi-a", "pi.lan", `we\ird name`, "büro-pi"} {
		esc := escapeInstance(name)
		if strings.Count(esc, ".") != strings.Count(esc, `\.`) {
			t.Errorf("escapeInstance(%q) = %q leaves a label separator", name, esc)
		}
		if got := unescapeInstance(esc); got != name {
			t.Errorf("unescape(escape(%q)) = %q", name, got)
		}
	}
	// Decimal escapes as miekg/dns prints non-printable bytes.
	if got := unescapeInstance(`pi\032one`); got != "pi one" {
		t.Errorf(`unescapeInstance("pi\032one") = %q`, got)
	}
}

func TestHostLabel(t *testing.T) {
	cases := map[string]string{
		"pi-a":                  "pi-a",
		"Pi_Kitchen.lan":        "pi-kitchen-lan",
		"---":                   "node",
		strings.Repeat("a", 80): strings.Repeat("a", 63),
	}
	for in, want := range cases {
		if got := hostLabel(in); got != want {
			t.Errorf("hostLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAdvertisedIPs(t *testing.T) {
	got := advertisedIPs([]net.IP{net.IPv4zero, net.ParseIP("10.0.0.7")}, nil)
	if !slices.Equal(got, []string{"10.0.0.7"}) {
		t.Errorf("specific address: %q", got)
	}
	// Unspecified only: fall back to the interfaces' addresses (none here).
	if got := advertisedIPs([]net.IP{net.IPv4zero}, nil); len(got) != 0 {
		t.Errorf("no interfaces: %q", got)
	}
}

func TestInterfacesErrors(t *testing.T) {
	_, err := Interfaces("rpit-nope0")
	if err == nil || !strings.Contains(err.Error(), `"rpit-nope0" does not exist`) || !strings.Contains(err.Error(), "this machine has:") {
		t.Errorf("missing interface: %v; want it named, with the available ones", err)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil || lo.Flags&net.FlagMulticast != 0 {
		t.Skip("no non-multicast loopback interface named lo here")
	}
	if _, err := Interfaces("lo"); err == nil || !strings.Contains(err.Error(), "cannot do multicast") {
		t.Errorf("loopback: %v; want a multicast error", err)
	}
}

package mdns

import (
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/grandcat/zeroconf"
)

func TestTXTRoundTrip(t *testing.T) {
	self := Peer{Instance: "pi-kitchen", Cluster: "home", Version: "v0.3.0+abc", Addrs: []net.IP{net.ParseIP("10.0.0.7")}, GossipPort: 7946, HTTPPort: 8080}
	txt := EncodeTXT(self)
	if want := []string{"v=1", "cluster=home", "http=8080", "version=v0.3.0+abc"}; !slices.Equal(txt, want) {
		t.Fatalf("TXT = %q, want %q", txt, want)
	}
	e := zeroconf.NewServiceEntry(EscapeInstance(self.Instance), ServiceType, Domain)
	e.Port = self.GossipPort
	// Newer agents may add keys; a value may contain '='.
	e.Text = append(txt, "future=x=y", "novalue")
	e.AddrIPv4 = []net.IP{net.ParseIP("10.0.0.7")}
	e.AddrIPv6 = []net.IP{net.ParseIP("fe80::7")}
	p, ok := PeerFromEntry(e)
	if !ok {
		t.Fatal("entry rejected")
	}
	if p.Instance != self.Instance || p.Cluster != self.Cluster || p.Version != self.Version ||
		p.HTTPPort != 8080 || p.GossipPort != 7946 || p.GossipAddr() != "10.0.0.7:7946" || len(p.Addrs) != 2 {
		t.Fatalf("peer = %+v, want it to match %+v", p, self)
	}
	if _, ok := PeerFromEntry(zeroconf.NewServiceEntry("x", ServiceType, Domain)); ok {
		t.Error("entry without a port accepted")
	}
}

func TestInstanceEscaping(t *testing.T) {
	for _, name := range []string{"pi-a", "pi.lan", `we\ird name`, "büro-pi"} {
		esc := EscapeInstance(name)
		if strings.Count(esc, ".") != strings.Count(esc, `\.`) {
			t.Errorf("EscapeInstance(%q) = %q leaves a label separator", name, esc)
		}
		if got := UnescapeInstance(esc); got != name {
			t.Errorf("unescape(escape(%q)) = %q", name, got)
		}
	}
	// Decimal escapes as miekg/dns prints non-printable bytes.
	if got := UnescapeInstance(`pi\032one`); got != "pi one" {
		t.Errorf(`UnescapeInstance("pi\032one") = %q`, got)
	}
}

func TestAPIURLs(t *testing.T) {
	p := Peer{Addrs: []net.IP{net.ParseIP("10.0.0.7"), net.IPv4zero, net.ParseIP("fe80::7")}}
	want := []string{"http://10.0.0.7:8080", "http://[fe80::7]:8080"}
	if got := p.APIURLs(); !slices.Equal(got, want) {
		t.Errorf("APIURLs = %q, want %q", got, want)
	}
	p.HTTPPort = 9090
	if got := p.APIURLs(); got[0] != "http://10.0.0.7:9090" {
		t.Errorf("with http=9090: %q", got)
	}
}

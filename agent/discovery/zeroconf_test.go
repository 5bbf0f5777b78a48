package discovery

import (
	"net"
	"slices"
	"strings"
	"testing"
)

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

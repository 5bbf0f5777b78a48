package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grandcat/zeroconf"

	"github.com/rpi-cluster/rpi-cluster/internal/netns"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// envWebBrowse makes TestWebBrowseHelper browse _http._tcp on the named
// interface for a second and print what it heard.
const envWebBrowse = "RPIT_DISC_WEB_BROWSE"

// webEntry is an _http._tcp answer as TestWebBrowseHelper prints it.
type webEntry struct {
	Instance string
	Port     int
	Text     []string
	Addrs    []string
}

// TestWebBrowseHelper is what a phone's service browser does: list
// _http._tcp. It does nothing unless started by TestStatusPageAnnounced.
func TestWebBrowseHelper(t *testing.T) {
	iface := os.Getenv(envWebBrowse)
	if iface == "" {
		return
	}
	ifaces, err := Interfaces(iface)
	if err != nil {
		t.Fatal(err)
	}
	r, err := zeroconf.NewResolver(zeroconf.SelectIfaces(ifaces), zeroconf.SelectIPTraffic(zeroconf.IPv4))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	entries := make(chan *zeroconf.ServiceEntry, 16)
	if err := r.Browse(ctx, HTTPServiceType, Domain, entries); err != nil {
		t.Fatal(err)
	}
	for e := range entries {
		w := webEntry{Instance: unescapeInstance(e.Instance), Port: e.Port, Text: e.Text}
		for _, ip := range e.AddrIPv4 {
			w.Addrs = append(w.Addrs, ip.String())
		}
		b, _ := json.Marshal(w)
		fmt.Printf("WEB %s\n", b)
	}
}

// TestStatusPageAnnounced: a node's status page is announced as
// _http._tcp, with its HTTP port and "path=/", and found from another
// network namespace by a plain DNS-SD browse.
func TestStatusPageAnnounced(t *testing.T) {
	if testing.Short() {
		t.Skip("real mDNS test skipped in -short mode")
	}
	netns.Require(t)
	pid := strconv.Itoa(os.Getpid())
	nsA := netns.Create(t, "rpit-web-"+pid+"-a")
	nsB := netns.Create(t, "rpit-web-"+pid+"-b")
	ifA, ifB := netns.Link(t, nsA, nsB, "10.203.0.1/24", "10.203.0.2/24")
	a := startHelper(t, nsA, "node-a", "test", ifA, "10.203.0.1", 7946) // page on 8946

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want := webEntry{Instance: "node-a", Port: 8946, Text: []string{"path=/", "cluster=test"}, Addrs: []string{"10.203.0.1"}}
	testutil.WaitFor(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := nsB.Command(ctx, exe, "-test.run=^TestWebBrowseHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), envWebBrowse+"="+ifB)
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("browse %s in %s: %v\n%s", HTTPServiceType, nsB.Name, err, out)
		}
		var heard []webEntry
		for line := range strings.Lines(string(out)) {
			if j, ok := strings.CutPrefix(strings.TrimSpace(line), "WEB "); ok {
				var w webEntry
				if err := json.Unmarshal([]byte(j), &w); err != nil {
					return err
				}
				heard = append(heard, w)
				if w.Instance == want.Instance && w.Port == want.Port && slices.Equal(w.Text, want.Text) && slices.Equal(w.Addrs, want.Addrs) {
					return nil
				}
			}
		}
		return fmt.Errorf("browsing %s heard %+v, want %+v", HTTPServiceType, heard, want)
	})
	a.wait(t)
}

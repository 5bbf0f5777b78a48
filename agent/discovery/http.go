package discovery

import (
	"fmt"
	"net"

	"github.com/grandcat/zeroconf"
)

// HTTPServiceType is the DNS-SD type of web pages: the status page is
// announced under it too, so a phone's service browser or
// "avahi-browse _http._tcp" lists every node's page, as printers and NAS
// boxes are listed.
const HTTPServiceType = "_http._tcp"

// advertiseHTTP announces self's status page as _http._tcp on the same
// host name and addresses as its gossip advertisement. The instance is the
// node name; the TXT record carries "path=/" (the DNS-SD convention for
// _http._tcp, RFC 6763 and dns-sd.org) and the cluster name. It returns a
// function that withdraws the announcement, a no-op when self has no HTTP
// port.
func advertiseHTTP(self Peer, host string, ips []string, ifaces []net.Interface) (stop func(), err error) {
	if self.HTTPPort <= 0 {
		return func() {}, nil
	}
	srv, err := zeroconf.RegisterProxy(escapeInstance(self.Instance), HTTPServiceType, Domain,
		self.HTTPPort, host, ips, []string{"path=/", "cluster=" + self.Cluster}, ifaces)
	if err != nil {
		return nil, fmt.Errorf("advertise the status page of %s as %s on %s: %w", self.Instance, HTTPServiceType, ifaceNames(ifaces), err)
	}
	return srv.Shutdown, nil
}

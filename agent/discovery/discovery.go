// Package discovery finds the other agents of a cluster: it advertises this
// node over mDNS (service _rpi-cluster._tcp), browses for peers of the same
// cluster and joins them in debounced batches. Where multicast does not
// work, RetryJoin joins static addresses with retries.
//
// mDNS sits behind the small MDNS interface so tests can inject peers
// in-process; NewZeroconf is the real implementation.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"
)

// DNS-SD names under which agents advertise themselves.
const (
	ServiceType = "_rpi-cluster._tcp"
	Domain      = "local."
)

// TXTSchema is the version of the TXT record layout ("v=1"). Readers ignore
// keys they do not know, so adding keys does not need a new version.
const TXTSchema = "1"

// DefaultQuiet is how long discovery waits after the last newly found peer
// before joining the batch. mDNS answers from a LAN arrive within a few
// hundred milliseconds of a query, so one second gathers a whole burst into
// one join while still feeling instant at boot.
const DefaultQuiet = time.Second

// maxQuietFactor bounds how long a steady trickle of answers can postpone a
// join: at most this many quiet periods after the first peer of a batch.
const maxQuietFactor = 5

// Peer is an agent as announced over mDNS.
type Peer struct {
	// Instance is the DNS-SD instance name: the node name.
	Instance string
	// Cluster is the cluster name from the TXT record; peers of another
	// cluster are never joined.
	Cluster string
	// Version is the agent version from the TXT record.
	Version string
	// Addrs are the node's addresses, IPv4 first.
	Addrs []net.IP
	// GossipPort is the SRV port: memberlist's port.
	GossipPort int
	// HTTPPort is the agent's API port from the TXT record.
	HTTPPort int
}

// GossipAddr is the "ip:port" to join: the first IPv4 address with the
// gossip port, or the first address of any kind when there is no IPv4
// address; "" when there is no usable address.
func (p Peer) GossipAddr() string {
	var ip net.IP
	for _, a := range p.Addrs {
		if a4 := a.To4(); a4 != nil && !a4.IsUnspecified() {
			ip = a4
			break
		}
	}
	if ip == nil {
		for _, a := range p.Addrs {
			if len(a) == net.IPv6len && !a.IsUnspecified() {
				ip = a
				break
			}
		}
	}
	if ip == nil || p.GossipPort <= 0 {
		return ""
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(p.GossipPort))
}

// MDNS advertises this node and browses for others. Implementations must
// make both calls return once ctx is done.
type MDNS interface {
	// Advertise announces self on ifaces until ctx is done, then withdraws
	// the announcement (an mDNS goodbye) and returns nil. An error means the
	// announcement could not be made at all.
	Advertise(ctx context.Context, self Peer, ifaces []net.Interface) error
	// Browse reports peers found on ifaces to found until ctx is done, then
	// returns nil. It re-queries periodically so late-comers are found; the
	// same peer may be reported many times. found must not block for long.
	Browse(ctx context.Context, ifaces []net.Interface, found func(Peer)) error
}

// Config configures a Discovery.
type Config struct {
	// Self is this node as it is advertised. Instance, Cluster and
	// GossipPort are required. Addrs may be empty or unspecified (0.0.0.0),
	// in which case the addresses of the interfaces are advertised.
	Self Peer
	// Interface is the network interface to use; "" means every interface
	// that is up and multicast-capable.
	Interface string
	// Quiet is the debounce period: joins wait until no new peer has been
	// found for this long, then join the whole batch at once (as serf's
	// mdns.go does). Default DefaultQuiet.
	Quiet time.Duration
	// Join joins the gossip cluster through addrs ("ip:port") and returns
	// how many were contacted. Required. It is called from one goroutine at a
	// time, never concurrently with itself.
	Join func(addrs []string) (int, error)
	// IsMember reports whether gossipAddr is already a live member, so
	// known peers are not joined again. Optional.
	IsMember func(gossipAddr string) bool
	// Logger receives discovery events; default slog.Default().
	Logger *slog.Logger
}

// Discovery advertises this node over mDNS and joins the peers it finds.
// Create it with New, start it with Start and stop it with Shutdown.
type Discovery struct {
	self     Peer
	selfIPs  []net.IP // Self's specific (not unspecified) addresses
	iface    string
	quiet    time.Duration
	join     func([]string) (int, error)
	isMember func(string) bool
	logger   *slog.Logger
	mdns     MDNS

	// ifaces is resolved from iface by Start unless already set.
	ifaces []net.Interface

	mu       sync.Mutex
	pending  map[string]Peer // by gossip address, waiting for the quiet period
	started  bool
	shutdown bool

	kick   chan struct{} // a peer was added to pending
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New checks c and builds a Discovery that uses m for mDNS. Nothing is sent
// until Start.
func New(c Config, m MDNS) (*Discovery, error) {
	switch {
	case m == nil:
		return nil, errors.New("discovery: no mDNS implementation given")
	case c.Self.Instance == "":
		return nil, errors.New("discovery: Self.Instance (the node name) is empty")
	case c.Self.Cluster == "":
		return nil, errors.New("discovery: Self.Cluster is empty")
	case c.Self.GossipPort <= 0 || c.Self.GossipPort > 65535:
		return nil, fmt.Errorf("discovery: Self.GossipPort %d is not a port", c.Self.GossipPort)
	case c.Join == nil:
		return nil, errors.New("discovery: no Join function given")
	case c.Quiet < 0:
		return nil, fmt.Errorf("discovery: Quiet %v is negative", c.Quiet)
	}
	d := &Discovery{
		self:     c.Self,
		iface:    c.Interface,
		quiet:    c.Quiet,
		join:     c.Join,
		isMember: c.IsMember,
		logger:   c.Logger,
		mdns:     m,
		pending:  make(map[string]Peer),
		kick:     make(chan struct{}, 1),
	}
	if d.quiet == 0 {
		d.quiet = DefaultQuiet
	}
	if d.logger == nil {
		d.logger = slog.Default()
	}
	for _, ip := range c.Self.Addrs {
		if ip != nil && !ip.IsUnspecified() {
			d.selfIPs = append(d.selfIPs, ip)
		}
	}
	return d, nil
}

// Start resolves the interfaces and starts advertising, browsing and
// joining in the background. It fails when the interface does not exist or
// cannot do multicast.
func (d *Discovery) Start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.shutdown {
		return errors.New("start discovery: already shut down")
	}
	if d.started {
		return errors.New("start discovery: already started")
	}
	if d.ifaces == nil {
		ifaces, err := Interfaces(d.iface)
		if err != nil {
			return fmt.Errorf("start discovery: %w", err)
		}
		d.ifaces = ifaces
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.started = true

	names := make([]string, len(d.ifaces))
	for i, ifi := range d.ifaces {
		names[i] = ifi.Name
	}
	d.logger.Info("mdns discovery started", "service", ServiceType, "instance", d.self.Instance,
		"cluster", d.self.Cluster, "interfaces", names)

	d.wg.Add(3)
	go func() {
		defer d.wg.Done()
		d.retry(ctx, "advertise", func() error { return d.mdns.Advertise(ctx, d.self, d.ifaces) })
	}()
	go func() {
		defer d.wg.Done()
		d.retry(ctx, "browse", func() error { return d.mdns.Browse(ctx, d.ifaces, d.handlePeer) })
	}()
	go func() {
		defer d.wg.Done()
		d.joinLoop(ctx)
	}()
	return nil
}

// retry runs fn until ctx is done, restarting it with backoff when it fails
// early (an interface that is not ready at boot, say).
func (d *Discovery) retry(ctx context.Context, what string, fn func() error) {
	backoff := time.Second
	for {
		err := fn()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("stopped unexpectedly")
		}
		d.logger.Warn("mdns "+what+" failed, retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// Shutdown stops advertising (sending an mDNS goodbye), browsing and
// joining, and waits for every goroutine to end. A join in progress is
// allowed to finish. It is safe to call more than once, and before Start.
func (d *Discovery) Shutdown() {
	d.mu.Lock()
	if d.shutdown {
		d.mu.Unlock()
		return
	}
	d.shutdown = true
	cancel := d.cancel
	d.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	d.wg.Wait()
}

// handlePeer is the Browse callback: it filters p and queues it for the
// next join. It never blocks.
func (d *Discovery) handlePeer(p Peer) {
	if p.Cluster != d.self.Cluster {
		d.logger.Debug("ignoring peer of another cluster", "peer", p.Instance, "cluster", p.Cluster)
		return
	}
	if d.isSelf(p) {
		return
	}
	addr := p.GossipAddr()
	if addr == "" {
		d.logger.Debug("ignoring peer without a usable address", "peer", p.Instance)
		return
	}
	if p.Instance == d.self.Instance {
		// Same name, another address: let the cluster see and report the
		// conflict rather than hiding it here.
		d.logger.Warn("another node advertises this node's name", "name", p.Instance, "addr", addr)
	}
	if d.isMember != nil && d.isMember(addr) {
		return
	}
	d.mu.Lock()
	_, known := d.pending[addr]
	d.pending[addr] = p
	d.mu.Unlock()
	if known {
		return
	}
	d.logger.Debug("found peer", "peer", p.Instance, "addr", addr, "version", p.Version)
	select {
	case d.kick <- struct{}{}:
	default: // a kick is already waiting; it covers this peer too
	}
}

// isSelf reports whether p is this node's own announcement: same gossip
// port on one of our addresses, or, when our addresses are unknown, the same
// instance name.
func (d *Discovery) isSelf(p Peer) bool {
	if len(d.selfIPs) == 0 {
		return p.Instance == d.self.Instance
	}
	if p.GossipPort != d.self.GossipPort {
		return false
	}
	for _, a := range p.Addrs {
		if slices.ContainsFunc(d.selfIPs, a.Equal) {
			return true
		}
	}
	return false
}

// joinLoop waits for peers, lets a burst of them settle for the quiet
// period, then joins them in one call.
func (d *Discovery) joinLoop(ctx context.Context) {
	var quiet, deadline *time.Timer
	var quietC, deadlineC <-chan time.Time
	stop := func() {
		if quiet != nil {
			quiet.Stop()
		}
		if deadline != nil {
			deadline.Stop()
		}
		quietC, deadlineC = nil, nil
	}
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
			if quiet == nil {
				quiet = time.NewTimer(d.quiet)
			} else {
				quiet.Reset(d.quiet)
			}
			quietC = quiet.C
			if deadlineC == nil {
				deadline = time.NewTimer(maxQuietFactor * d.quiet)
				deadlineC = deadline.C
			}
		case <-quietC:
			stop()
			d.flush()
		case <-deadlineC:
			stop()
			d.flush()
		}
	}
}

// flush joins every pending peer that is not a member by now, in one call.
func (d *Discovery) flush() {
	d.mu.Lock()
	batch := d.pending
	d.pending = make(map[string]Peer)
	d.mu.Unlock()

	addrs := make([]string, 0, len(batch))
	names := make([]string, 0, len(batch))
	for addr, p := range batch {
		if d.isMember != nil && d.isMember(addr) {
			continue
		}
		addrs = append(addrs, addr)
		names = append(names, p.Instance)
	}
	if len(addrs) == 0 {
		return
	}
	sort.Strings(addrs)
	sort.Strings(names)
	n, err := d.join(addrs)
	switch {
	case n == 0:
		// The peers are re-announced on the next browse round, which
		// retries the join.
		d.logger.Warn("could not join peers found over mdns", "peers", names, "addrs", addrs, "err", err)
	case err != nil:
		d.logger.Info("joined some peers found over mdns", "peers", names, "contacted", n, "err", err)
	default:
		d.logger.Info("joined peers found over mdns", "peers", names, "contacted", n)
	}
}

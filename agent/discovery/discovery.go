// Package discovery finds the other agents of a cluster: it advertises this
// node over mDNS (service _rpi-cluster._tcp), browses for peers of the same
// cluster and joins them in debounced batches. Where multicast does not
// work, RetryJoin joins static addresses with retries.
//
// mDNS sits behind the small MDNS interface so tests can inject peers
// in-process; NewZeroconf is the real implementation.
package discovery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/mdns"
)

// DNS-SD names under which agents advertise themselves, and the TXT
// record's schema: internal/mdns holds them, shared with the tools.
const (
	ServiceType = mdns.ServiceType
	Domain      = mdns.Domain
	TXTSchema   = mdns.TXTSchema
)

// DefaultQuiet is how long discovery waits after the last newly found peer
// before joining the batch. mDNS answers from a LAN arrive within a few
// hundred milliseconds of a query, so one second gathers a whole burst into
// one join while still feeling instant at boot.
const DefaultQuiet = time.Second

// maxQuietFactor bounds how long a steady trickle of answers can postpone a
// join: at most this many quiet periods after the first peer of a batch.
const maxQuietFactor = 5

// Peer is an agent as announced over mDNS.
type Peer = mdns.Peer

// MDNS advertises this node and browses for others. Implementations must
// make both calls return once ctx is done.
type MDNS interface {
	// Advertise announces self on ifaces until ctx is done, then withdraws
	// the announcement (an mDNS goodbye) and returns nil. An error means the
	// announcement could not be made at all.
	Advertise(ctx context.Context, self Peer, ifaces []net.Interface) error
	// Browse is one browse round: it queries once on ifaces and reports the
	// answers, and any announcements heard, to found until ctx is done, then
	// returns nil. The same peer may be reported many times. An error means
	// the round could not be started (or could not go on); a nil return
	// before ctx is done counts as a failure too. found must not block for
	// long.
	Browse(ctx context.Context, ifaces []net.Interface, found func(Peer)) error
}

// Retry and interface-check defaults.
const (
	// DefaultBackoff is the first wait before retrying a failed advertise
	// or browse attempt, or before looking again for a missing interface.
	DefaultBackoff = time.Second
	// maxBackoffFactor caps the back-off: waits double from Backoff up to
	// this many times it (30 s by default).
	maxBackoffFactor = 30
	// DefaultInterfaceCheck is how often the interfaces in use are re-read.
	// Reading them is a netlink dump or two, cheap enough to notice a
	// replugged adapter or a reconnected Wi-Fi within seconds.
	DefaultInterfaceCheck = 2 * time.Second
)

// Browse rounds: zeroconf's resolver stops querying once it has one answer,
// so discovery runs browse rounds of growing length, each starting with a
// fresh query on freshly resolved interfaces. Answers to a query come
// within a second; announcements of nodes that start later are heard during
// any round. Rounds grow to maxRound so a settled cluster sends one query per
// half minute, and start again from minRound when the interfaces change.
const (
	minRound = time.Second
	maxRound = 30 * time.Second
)

// Config configures a Discovery.
type Config struct {
	// Self is this node as it is advertised. Instance, Cluster and
	// GossipPort are required. Addrs may be empty or unspecified (0.0.0.0),
	// in which case the addresses of the interfaces are advertised.
	Self Peer
	// Interface is the network interface to use, by name; "" means every
	// interface that is up and multicast-capable. It is resolved afresh for
	// every browse round and advertisement, so an interface that appears
	// later, or is deleted and re-created (a replugged USB adapter, a
	// reconnected Wi-Fi, a container's re-attached network), is picked up;
	// while it is missing or down discovery waits for it.
	Interface string
	// Quiet is the debounce period: joins wait until no new peer has been
	// found for this long, then join the whole batch at once (as serf's
	// mdns.go does). Default DefaultQuiet.
	Quiet time.Duration
	// Backoff is the first wait before retrying a failed advertise or browse
	// attempt, or before looking again for a missing or down interface.
	// Waits double with every further failure up to 30 × Backoff, and start
	// again from Backoff once an attempt works. Default DefaultBackoff
	// (so waits grow from 1 s to 30 s).
	Backoff time.Duration
	// InterfaceCheck is how often the interfaces are re-read while
	// advertising and browsing. When the set changes (an interface is gone,
	// down, re-created with a new index, or has other addresses), the
	// advertisement is restarted on the new set, which announces the node
	// again, and a new browse round starts on it. Default
	// DefaultInterfaceCheck.
	InterfaceCheck time.Duration
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
	// self is what is advertised; its Addrs, and selfIPs (its specific,
	// not unspecified, addresses) change with SetAddrs: read them with mu
	// held.
	self     Peer
	selfIPs  []net.IP
	iface    string
	quiet    time.Duration
	backoff  time.Duration
	check    time.Duration
	join     func([]string) (int, error)
	isMember func(string) bool
	logger   *slog.Logger
	mdns     MDNS

	// resolve returns the interfaces to use now: Interfaces(iface), or a
	// fake in tests.
	resolve func() ([]net.Interface, error)
	// minRound and maxRound bound the length of browse rounds.
	minRound, maxRound time.Duration

	mu       sync.Mutex
	pending  map[string]Peer // by gossip address, waiting for the quiet period
	started  bool
	shutdown bool
	ifaceOut bool // the interfaces could not be resolved last time we looked
	// addrGen counts SetAddrs calls: part of the key the advertisement
	// is watched against, so a new address is advertised at once.
	addrGen uint64

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
	case c.Backoff < 0:
		return nil, fmt.Errorf("discovery: Backoff %v is negative", c.Backoff)
	case c.InterfaceCheck < 0:
		return nil, fmt.Errorf("discovery: InterfaceCheck %v is negative", c.InterfaceCheck)
	}
	d := &Discovery{
		self:     c.Self,
		iface:    c.Interface,
		quiet:    cmp.Or(c.Quiet, DefaultQuiet),
		backoff:  cmp.Or(c.Backoff, DefaultBackoff),
		check:    cmp.Or(c.InterfaceCheck, DefaultInterfaceCheck),
		join:     c.Join,
		isMember: c.IsMember,
		logger:   cmp.Or(c.Logger, slog.Default()),
		mdns:     m,
		minRound: minRound,
		maxRound: maxRound,
		pending:  make(map[string]Peer),
		kick:     make(chan struct{}, 1),
	}
	d.resolve = func() ([]net.Interface, error) { return Interfaces(d.iface) }
	d.setAddrsLocked(c.Self.Addrs)
	return d, nil
}

// SetAddrs replaces the gossip addresses this node advertises, when its
// address changed: the advertisement is renewed with them within
// InterfaceCheck, and answers from them are recognised as this node's.
func (d *Discovery) SetAddrs(addrs []net.IP) {
	d.mu.Lock()
	d.setAddrsLocked(addrs)
	d.addrGen++
	d.mu.Unlock()
	d.logger.Info("advertising a new address", "addrs", addrs)
}

func (d *Discovery) setAddrsLocked(addrs []net.IP) {
	d.self.Addrs = slices.Clone(addrs)
	d.selfIPs = nil
	for _, ip := range addrs {
		if ip != nil && !ip.IsUnspecified() {
			d.selfIPs = append(d.selfIPs, ip)
		}
	}
}

// watchKey identifies what the advertisement was made for: the
// interfaces and this node's addresses.
func (d *Discovery) watchKey(ifaces []net.Interface) string {
	d.mu.Lock()
	gen := d.addrGen
	d.mu.Unlock()
	return ifaceKey(ifaces) + " addrs#" + strconv.FormatUint(gen, 10)
}

// selfNow is this node's advertisement as it is now.
func (d *Discovery) selfNow() Peer {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.self
	p.Addrs = slices.Clone(p.Addrs)
	return p
}

// Start starts advertising, browsing and joining in the background. The
// interfaces are resolved by each attempt, not here: when the configured
// interface is missing or down, discovery logs what is wrong once and waits
// for it.
func (d *Discovery) Start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.shutdown {
		return errors.New("start discovery: already shut down")
	}
	if d.started {
		return errors.New("start discovery: already started")
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.started = true

	iface := d.iface
	if iface == "" {
		iface = "all multicast interfaces"
	}
	d.logger.Info("mdns discovery started", "service", ServiceType, "instance", d.self.Instance,
		"cluster", d.self.Cluster, "interface", iface)

	d.wg.Add(3)
	go func() {
		defer d.wg.Done()
		d.advertiseLoop(ctx)
	}()
	go func() {
		defer d.wg.Done()
		d.browseLoop(ctx)
	}()
	go func() {
		defer d.wg.Done()
		d.joinLoop(ctx)
	}()
	return nil
}

// advertiseLoop advertises this node until ctx is done: on the interfaces as
// they are now, again on the new set whenever they change, and after a
// back-off when advertising fails.
func (d *Discovery) advertiseLoop(ctx context.Context) {
	bo := d.newBackoff()
	for {
		ifaces, key, ok := d.awaitInterfaces(ctx, bo)
		if !ok {
			return
		}
		started := time.Now()
		changed, err := d.runWatched(ctx, key, func(ctx context.Context) error {
			return d.mdns.Advertise(ctx, d.selfNow(), ifaces)
		})
		switch {
		case ctx.Err() != nil:
			return
		case changed:
			d.logger.Info("network interfaces or this node's address changed, advertising again", "was", describeIfaces(ifaces))
			bo.reset()
			continue
		case err == nil:
			err = errors.New("advertisement ended by itself")
		}
		if time.Since(started) >= bo.max {
			bo.reset() // it worked for a good while before failing
		}
		wait := bo.next()
		d.logger.Warn("mdns advertise failed, retrying", "err", err, "in", wait)
		if !sleep(ctx, wait) {
			return
		}
	}
}

// browseLoop runs browse rounds until ctx is done, each on the interfaces as
// they are at its start. A round is cut short when the interfaces change;
// a failed round is retried after a back-off.
func (d *Discovery) browseLoop(ctx context.Context) {
	bo := d.newBackoff()
	round := d.minRound
	for {
		ifaces, key, ok := d.awaitInterfaces(ctx, bo)
		if !ok {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, round)
		changed, err := d.runWatched(rctx, key, func(ctx context.Context) error {
			return d.mdns.Browse(ctx, ifaces, d.handlePeer)
		})
		roundOver := rctx.Err() != nil
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case changed:
			d.logger.Info("network interfaces changed, browsing again", "was", describeIfaces(ifaces))
			bo.reset()
			round = d.minRound
			continue
		case err == nil && roundOver:
			bo.reset()
			round = min(2*round, d.maxRound)
			continue
		case err == nil:
			err = errors.New("browse round ended early")
		}
		wait := bo.next()
		d.logger.Warn("mdns browse failed, retrying", "err", err, "in", wait)
		if !sleep(ctx, wait) {
			return
		}
	}
}

// awaitInterfaces resolves the interfaces afresh and returns them with their
// key. While they are missing or down it waits with back-off and looks
// again. It returns false once ctx is done.
func (d *Discovery) awaitInterfaces(ctx context.Context, bo *backoff) ([]net.Interface, string, bool) {
	for {
		ifaces, err := d.resolve()
		if err == nil {
			d.noteInterfaces(ifaces, nil, 0)
			return ifaces, d.watchKey(ifaces), true
		}
		wait := bo.next()
		d.noteInterfaces(nil, err, wait)
		if !sleep(ctx, wait) {
			return nil, "", false
		}
	}
}

// noteInterfaces logs the availability of the interfaces: the start of an
// outage at warn, its repeats at debug, its end at info. The advertise and
// browse loops share the state, so an outage is reported once.
func (d *Discovery) noteInterfaces(ifaces []net.Interface, err error, wait time.Duration) {
	d.mu.Lock()
	wasOut := d.ifaceOut
	d.ifaceOut = err != nil
	d.mu.Unlock()
	switch {
	case err != nil && !wasOut:
		d.logger.Warn("mdns paused: waiting for the network interface", "err", err, "retry_in", wait)
	case err != nil:
		d.logger.Debug("mdns still waiting for the network interface", "err", err, "retry_in", wait)
	case wasOut:
		d.logger.Info("mdns network interface available again", "interfaces", describeIfaces(ifaces))
	}
}

// runWatched runs attempt until it returns or ctx is done, re-reading the
// interfaces every InterfaceCheck. When they no longer match key, it cancels
// the attempt, waits for it to return and reports changed. attempt must
// return once its context is done.
func (d *Discovery) runWatched(ctx context.Context, key string, attempt func(context.Context) error) (changed bool, err error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- attempt(actx) }()
	tick := time.NewTicker(d.check)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return false, err
		case <-tick.C:
			if ifaces, err := d.resolve(); err == nil && d.watchKey(ifaces) == key {
				continue
			}
			cancel()
			<-done
			return true, nil
		}
	}
}

// ifaceKey identifies a resolved interface set: another index (a re-created
// interface), other flags or other addresses give another key.
func ifaceKey(ifaces []net.Interface) string {
	parts := make([]string, 0, len(ifaces))
	for _, ifi := range ifaces {
		var addrs []string
		if as, err := ifi.Addrs(); err != nil {
			addrs = []string{"?"}
		} else {
			for _, a := range as {
				addrs = append(addrs, a.String())
			}
		}
		sort.Strings(addrs)
		parts = append(parts, fmt.Sprintf("%s#%d[%v]%s", ifi.Name, ifi.Index, ifi.Flags, strings.Join(addrs, ",")))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// describeIfaces names interfaces with their index for logs: "eth0#134".
func describeIfaces(ifaces []net.Interface) []string {
	out := make([]string, len(ifaces))
	for i, ifi := range ifaces {
		out[i] = ifi.Name + "#" + strconv.Itoa(ifi.Index)
	}
	return out
}

// backoff is a capped exponential back-off: base, 2×base, 4×base … max.
type backoff struct {
	base, max, cur time.Duration
}

func (d *Discovery) newBackoff() *backoff {
	return &backoff{base: d.backoff, max: maxBackoffFactor * d.backoff, cur: d.backoff}
}

// next returns the wait before the next attempt and doubles the one after.
func (b *backoff) next() time.Duration {
	w := b.cur
	b.cur = min(2*b.cur, b.max)
	return w
}

// reset starts again from base, after an attempt that worked.
func (b *backoff) reset() { b.cur = b.base }

// sleep waits for d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
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
	d.mu.Lock()
	defer d.mu.Unlock()
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

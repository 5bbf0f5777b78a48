// Package agent is the rpi-agent daemon: it wires configuration, discovery,
// monitoring and the node's metadata around the cluster library and serves
// the HTTP API. The cluster library (agent/cluster) knows nothing of flags or
// HTTP; this package is where they meet.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/api"
	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
	"github.com/rpi-cluster/rpi-cluster/agent/discovery"
	"github.com/rpi-cluster/rpi-cluster/agent/hooks"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
	"github.com/rpi-cluster/rpi-cluster/agent/metadata"
	"github.com/rpi-cluster/rpi-cluster/agent/monitor"
	"github.com/rpi-cluster/rpi-cluster/internal/version"
)

// Agent is one running rpi-agent. Create builds it without starting
// anything, Start brings it up, Leave departs the cluster gracefully and
// Shutdown stops everything; Shutdown is safe to call more than once.
type Agent struct {
	conf   *Config
	logger *slog.Logger

	cluster *cluster.Cluster
	store   *metadata.Store
	monitor *monitor.Monitor
	disc    *discovery.Discovery
	api     *api.Server
	// hooks runs the configured event handlers; nil when there are none.
	hooks *hooks.Runner
	// hooksCancel ends the cluster subscription that feeds hooks.
	hooksCancel func()
	// history keeps every node's recent samples for the page (history.go).
	history       *api.History
	historyCancel func()

	// mdns is the mDNS implementation; tests replace it to inject peers.
	mdns discovery.MDNS
	// profile overrides conf.Profile when set (tests use the fast profile).
	profile *cluster.Profile
	// sysfsRoot replaces /sys for the monitor (tests give a thermal zone).
	sysfsRoot string
	// interfaces lists the host's interfaces (tests replace it); nil:
	// the system's. addressPoll replaces the package's (tests).
	interfaces  Interfaces
	addressPoll time.Duration

	httpLn  net.Listener
	httpSrv *http.Server

	// dataLock is this process's hold on conf.DataDir, from Create to
	// Shutdown.
	dataLock *dirLock
	// pins are the peers' keys this node trusts, saved in the data dir
	// by flushPins and at Shutdown.
	pins *identity.Pins

	// reloadMu serialises Reload; apiToken is the token in force.
	reloadMu sync.Mutex
	apiToken string

	// svcMu serialises metadata writes with the record update that follows,
	// so the gossiped services always match the file.
	svcMu sync.Mutex

	// watchdog tells systemd the agent is ready and alive.
	watchdog *watchdog

	ctx          context.Context
	cancel       context.CancelFunc
	wg           sync.WaitGroup
	shutdownLock sync.Mutex
	shutdown     bool
}

// Option adjusts an agent at creation, for tests and embedding.
type Option func(*Agent)

// WithMDNS replaces the real mDNS implementation.
func WithMDNS(m discovery.MDNS) Option { return func(a *Agent) { a.mdns = m } }

// WithProfile replaces the named timing profile, e.g. with the fast "test"
// profile in in-process tests.
func WithProfile(p cluster.Profile) Option {
	return func(a *Agent) { a.profile = &p }
}

// Create validates conf and builds an agent. It locks the data directory
// (another agent on it stops this one here), opens the metadata store (a
// corrupt meta-data.json stops the agent here, with the file untouched) but
// does not listen or join yet.
func Create(conf *Config, logger *slog.Logger, opts ...Option) (_ *Agent, err error) {
	if err := conf.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	a := &Agent{conf: conf, logger: logger}
	for _, o := range opts {
		o(a)
	}

	// Both need the network up: WaitForNetwork waits for it.
	ifaces, _ := a.listInterfaces()()
	name := conf.Name
	if name == "" {
		hostname, _ := os.Hostname()
		n, err := DefaultNodeName(hostname, netIfaces(ifaces))
		if err != nil {
			return nil, err
		}
		name = n
	}

	// Nothing in the data directory is read or written before this.
	lock, err := lockDataDir(conf.DataDir)
	if err != nil {
		return nil, err
	}
	a.dataLock = lock
	defer func() {
		if err != nil {
			lock.release()
		}
	}()

	store, err := metadata.Open(conf.DataDir)
	if err != nil {
		return nil, fmt.Errorf("open metadata: %w", err)
	}
	a.store = store
	nodeKey, pins, err := loadIdentity(conf.DataDir, logger)
	if err != nil {
		return nil, err
	}
	a.pins = pins

	profile := a.profile
	if profile == nil {
		p, err := cluster.ProfileByName(conf.Profile)
		if err != nil {
			return nil, err
		}
		profile = &p
	}
	if conf.PhiThreshold > 0 {
		profile.Phi.Threshold = conf.PhiThreshold
	}

	bindHost, bindPort, _ := splitHostPort(conf.Bind, 7946)
	var advHost string
	var advPort int
	if conf.Advertise != "" {
		advHost, advPort, _ = splitHostPort(conf.Advertise, 0)
	} else if followsAddress(conf) {
		ip := ChooseAddress(ifaces)
		if ip == nil {
			return nil, errors.New("create agent: no network interface that is up has an IPv4 address to advertise: wait for the network (rpi-agent does) or set advertise")
		}
		advHost = ip.String()
	}
	key, _ := conf.SecretKey()
	hostKeys, err := readHostKeys(conf.SSHHostKeys)
	if err != nil {
		logger.Warn("ssh host keys not gossiped", "err", err)
	}

	a.monitor = monitor.New(monitor.Config{Interval: conf.MonitorInterval, SysfsRoot: a.sysfsRoot, Logger: logger.With("part", "monitor")})

	httpHost, httpPort, _ := splitHostPort(conf.HTTP, 8080)
	ln, err := net.Listen("tcp", net.JoinHostPort(httpHost, strconv.Itoa(httpPort)))
	if err != nil {
		return nil, fmt.Errorf("listen http %s: %w (is another agent running? set http)", conf.HTTP, err)
	}
	a.httpLn = ln
	actualHTTPPort := ln.Addr().(*net.TCPAddr).Port

	c, err := cluster.Create(&cluster.Config{
		NodeName:        name,
		ClusterName:     conf.Cluster,
		BindAddr:        bindHost,
		BindPort:        bindPort,
		AdvertiseAddr:   advHost,
		AdvertisePort:   advPort,
		HTTPPort:        actualHTTPPort,
		Profile:         *profile,
		SecretKey:       key,
		Key:             nodeKey,
		Pins:            pins,
		Logger:          logger.With("part", "cluster"),
		ReapFailedAfter: conf.ReapFailedAfter,
		ReapLeftAfter:   conf.ReapLeftAfter,
		Services:        store.Services(),
		SSHHostKeys:     hostKeys,
		AgentVersion:    version.String(),
		Arch:            runtime.GOARCH,
		Model:           a.monitor.Model(),
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	a.cluster = c

	if len(conf.EventHandlers) > 0 {
		r, err := hooks.New(hooks.Config{
			Hooks:    conf.EventHandlers,
			Timeout:  conf.EventHandlerTimeout,
			SelfName: name,
			Cluster:  conf.Cluster,
			Logger:   logger.With("part", "hooks"),
		})
		if err != nil {
			ln.Close()
			return nil, err
		}
		a.hooks = r
	}

	if a.history == nil {
		a.history = api.NewHistory(0, 0)
	}
	a.api = api.NewServer(backend{a}, api.Options{
		History:     a.history,
		Token:       conf.APIToken,
		PlainGossip: conf.Encrypt == "",
		Version:     version.String(),
		Cluster:     conf.Cluster,
		Logger:      logger.With("part", "api"),
	})
	a.apiToken = conf.APIToken
	// The API's own server and listener bound time, headers and
	// connections: anyone on the LAN reaches this port.
	a.httpSrv = a.api.HTTPServer()
	a.httpLn = a.api.LimitListener(ln)
	return a, nil
}

// Start brings the agent up: gossip, the HTTP API, monitoring, mDNS and the
// static joins. It returns once everything listens; joining goes on in the
// background.
func (a *Agent) Start() error {
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.watchdog = newWatchdog(a.conf.MonitorInterval, a.logger.With("part", "watchdog"))
	// Subscribe before gossip starts, so hooks see the first joins.
	var hookEvents <-chan cluster.Event
	if a.hooks != nil {
		hookEvents, a.hooksCancel = a.cluster.Subscribe(256)
	}
	a.startHistory()
	if err := a.cluster.Start(); err != nil {
		if a.hooksCancel != nil {
			a.hooksCancel()
		}
		a.historyCancel()
		a.httpLn.Close()
		return fmt.Errorf("start gossip: %w", err)
	}
	if a.hooks != nil {
		a.hooks.Start()
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.dispatchHooks(hookEvents)
		}()
	}
	ip, port := a.cluster.LocalAddr()
	a.logger.Info("gossip started", "name", a.cluster.Self().Name, "addr", net.JoinHostPort(ip, strconv.Itoa(port)),
		"cluster", a.conf.Cluster, "encrypted", a.conf.Encrypt != "", "profile", a.conf.Profile)

	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.httpSrv.Serve(a.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.logger.Error("http server stopped", "err", err)
		}
	}()
	a.logger.Info("api listening", "url", "http://"+a.HTTPAddr())
	a.logWarnings()

	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.monitor.Run(a.ctx, a.recordSample)
	}()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.flushPins(a.ctx)
	}()

	if a.conf.MDNS {
		m := a.mdns
		if m == nil {
			m = discovery.NewZeroconf(a.logger.With("part", "mdns"))
		}
		self := a.cluster.Self()
		d, err := discovery.New(discovery.Config{
			Self: discovery.Peer{
				Instance:   self.Name,
				Cluster:    a.conf.Cluster,
				Version:    version.String(),
				Addrs:      []net.IP{net.ParseIP(ip)},
				GossipPort: port,
				HTTPPort:   self.HTTPPort,
			},
			Interface: a.conf.Interface,
			Join:      a.cluster.Join,
			IsMember:  a.isMember,
			Logger:    a.logger.With("part", "discovery"),
		}, m)
		if err != nil {
			a.Shutdown()
			return fmt.Errorf("mdns: %w", err)
		}
		if err := d.Start(); err != nil {
			a.Shutdown()
			return fmt.Errorf("mdns: %w", err)
		}
		a.disc = d
	}

	if len(a.conf.Join) > 0 {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			err := discovery.RetryJoin(a.ctx, a.conf.Join, a.conf.RetryJoinInterval, a.conf.RetryJoinMax, a.cluster.Join, a.logger.With("part", "join"))
			if err != nil && a.ctx.Err() == nil {
				a.logger.Error("could not join any of the configured peers", "join", a.conf.Join, "err", err)
			}
		}()
	}
	if followsAddress(a.conf) {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.followAddress(a.ctx)
		}()
	}
	a.watchdog.start(a.ctx, &a.wg)
	return nil
}

// dispatchHooks hands membership events to the hook runner until the
// subscription closes (Shutdown). Submit never blocks, and the cluster
// drops events for a full subscription, so gossip never waits on hooks.
func (a *Agent) dispatchHooks(events <-chan cluster.Event) {
	for ev := range events {
		if hev, ok := toHookEvent(ev); ok {
			a.hooks.Submit(hev)
		}
	}
}

// toHookEvent turns a cluster membership event into a hook event; false
// for events hooks do not handle (desired-state changes).
func toHookEvent(ev cluster.Event) (hooks.Event, bool) {
	var typ string
	switch ev.Type {
	case cluster.EventJoin:
		typ = hooks.MemberJoin
	case cluster.EventLeave:
		typ = hooks.MemberLeave
	case cluster.EventFail:
		typ = hooks.MemberFailed
	case cluster.EventUpdate:
		typ = hooks.MemberUpdate
	case cluster.EventReap:
		typ = hooks.MemberReap
	default:
		return hooks.Event{}, false
	}
	m := ev.Member
	return hooks.Event{
		Type: typ,
		Node: hooks.Node{
			Name:       m.Name,
			Address:    m.Addr,
			GossipPort: m.GossipPort,
			HTTPPort:   m.HTTPPort,
			Status:     m.Status,
			Services:   slices.Clone(m.Services),
		},
		Time: ev.Time,
		// Version is 0 until the node's gossiped record has arrived.
		HasRecord: m.Version != 0,
	}, true
}

// isMember reports whether a gossip address belongs to a live member already,
// so mDNS answers for known peers do not cause joins.
func (a *Agent) isMember(gossipAddr string) bool {
	for _, m := range a.cluster.Members() {
		if m.Status != cluster.StatusAlive && m.Status != cluster.StatusSuspect {
			continue
		}
		if net.JoinHostPort(m.Addr, strconv.Itoa(m.GossipPort)) == gossipAddr {
			return true
		}
	}
	return false
}

// recordSample puts a monitoring sample into this node's gossiped record.
func (a *Agent) recordSample(s monitor.Sample) {
	defer a.watchdog.beat()
	a.cluster.UpdateSelf(func(r *cluster.Record) {
		r.Monitoring = cluster.Monitoring{
			CPUs:            s.CPUs,
			CPUPercent:      s.CPUPercent,
			MemTotal:        s.MemTotal,
			MemUsed:         s.MemUsed,
			Load1:           s.Load1,
			Load5:           s.Load5,
			Load15:          s.Load15,
			TempC:           s.TempC,
			DiskUsedPercent: s.DiskUsedPercent,
			UptimeS:         s.UptimeS,
			SampledAt:       s.SampledAt,
		}
	})
}

// logWarnings logs what the agent leaves open to the LAN and how to close
// it, the same words as /healthz and the page.
func (a *Agent) logWarnings() {
	for _, w := range a.api.Warnings() {
		a.logger.Warn("insecure configuration", "warning", w)
	}
}

// reloadable are the settings Reload applies while running; log_level is
// applied by the command line, which owns the logger.
var reloadable = map[string]bool{"api_token": true, "ssh_host_keys": true, "log_level": true}

// Reload applies conf, a newly loaded configuration, as far as it can while
// running: the API token (the next request needs the new one) and the SSH
// host keys. A changed setting that only takes effect on restart is logged
// as such, never silently ignored. An invalid conf changes nothing and is
// returned as an error.
func (a *Agent) Reload(conf *Config) error {
	if err := conf.Validate(); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()

	if keys := changedSettings(a.conf, conf, reloadable); len(keys) > 0 {
		a.logger.Warn("reload: changed settings apply only after a restart; running on with the old values",
			"settings", strings.Join(keys, ", "))
	}
	if conf.APIToken != a.apiToken {
		a.api.SetToken(conf.APIToken)
		a.apiToken = conf.APIToken
		a.logger.Info("reload: api_token changed; writes need the new one", "token_set", conf.APIToken != "")
		a.logWarnings()
	}
	keys, err := readHostKeys(conf.SSHHostKeys)
	if err != nil {
		a.logger.Warn("reload: ssh host keys kept as they were", "err", err)
		return nil
	}
	a.cluster.UpdateSelf(func(r *cluster.Record) { r.SSHHostKeys = keys })
	a.logger.Info("reloaded", "ssh_host_keys", len(keys))
	return nil
}

// changedSettings names the config keys (YAML names) whose values differ
// between old and new, leaving out skip. Done field by field over the
// struct so a setting added later is covered without a list to keep.
func changedSettings(old, new *Config, skip map[string]bool) []string {
	ov, nv := reflect.ValueOf(old).Elem(), reflect.ValueOf(new).Elem()
	var keys []string
	for i := range ov.NumField() {
		key, _, _ := strings.Cut(ov.Type().Field(i).Tag.Get("yaml"), ",")
		if key == "" || key == "-" || skip[key] {
			continue
		}
		if !reflect.DeepEqual(ov.Field(i).Interface(), nv.Field(i).Interface()) {
			keys = append(keys, key)
		}
	}
	return keys
}

// HTTPAddr is the address the API listens on, e.g. "127.0.0.1:8080".
func (a *Agent) HTTPAddr() string { return a.httpLn.Addr().String() }

// Cluster exposes the underlying cluster, for tests and benchmarks.
func (a *Agent) Cluster() *cluster.Cluster { return a.cluster }

// Name is this node's name.
func (a *Agent) Name() string { return a.cluster.Self().Name }

// Leave tells the cluster this node is going away, so peers mark it left
// rather than failed, then stops announcing it over mDNS.
func (a *Agent) Leave(timeout time.Duration) error {
	if a.disc != nil {
		a.disc.Shutdown()
	}
	return a.cluster.Leave(timeout)
}

// Shutdown stops the agent without leaving: peers will see it fail. Call
// Leave first for a graceful exit. Safe to call many times.
func (a *Agent) Shutdown() error {
	a.shutdownLock.Lock()
	defer a.shutdownLock.Unlock()
	if a.shutdown {
		return nil
	}
	a.shutdown = true

	// Stop listeners before channels: the API's event streams end first so
	// the HTTP server's graceful shutdown does not wait on them.
	if a.disc != nil {
		a.disc.Shutdown()
	}
	a.api.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := a.httpSrv.Shutdown(ctx); err != nil {
		a.httpSrv.Close()
	}
	a.httpLn.Close() // in case Start never served it
	if a.cancel != nil {
		a.cancel()
	}
	if a.hooks != nil {
		// Kills a handler still running; the dispatcher ends when the
		// subscription closes.
		a.hooks.Shutdown()
		if a.hooksCancel != nil {
			a.hooksCancel()
		}
	}
	err := a.cluster.Shutdown()
	a.wg.Wait()
	if ferr := a.pins.Flush(); ferr != nil {
		a.logger.Error("cannot save pinned node keys", "err", ferr)
	}
	a.dataLock.release()
	return err
}

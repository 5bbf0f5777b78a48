package agent

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
	"github.com/rpi-cluster/rpi-cluster/agent/hooks"
)

// DefaultConfigPath is where the agent looks for its config file when
// --config is not given. A missing file at the default path is not an error;
// a missing file that was asked for explicitly is.
const DefaultConfigPath = "/etc/rpi-cluster/agent.yaml"

// Config is the agent's configuration. Every field is a key of the YAML config
// file, a flag and an RPI_ environment variable; they are applied in that
// order over DefaultConfig, later layers winning. Unknown keys are an error.
type Config struct {
	// Name is this node's name in the cluster. Default: the hostname, unless
	// it is a factory default ("raspberrypi", "localhost"), in which case
	// "rpi-" and the last three octets of the primary MAC, so that cards
	// cloned from one image never collide.
	Name string `yaml:"name"`

	// Cluster is the cluster's name. Agents only join, and mDNS only
	// considers, peers with the same cluster name.
	Cluster string `yaml:"cluster"`

	// Bind is the gossip address, HOST:PORT, for both UDP and TCP.
	Bind string `yaml:"bind"`

	// Advertise is the address peers use to reach this node, when it differs
	// from what Bind would give (NAT, several interfaces). Empty: derived
	// from Bind, or, when Bind is 0.0.0.0, a private IPv4 of an interface
	// that is up, waited for at start and followed when it changes (see
	// address.go).
	Advertise string `yaml:"advertise"`

	// HTTP is the API and status page address, HOST:PORT or :PORT.
	HTTP string `yaml:"http"`

	// Join lists gossip addresses (HOST or HOST:PORT) to join at start and
	// to keep retrying until one answers, for networks without multicast.
	Join []string `yaml:"join"`

	// RetryJoinInterval is the pause between attempts to join Join.
	RetryJoinInterval time.Duration `yaml:"retry_join_interval"`

	// RetryJoinMax bounds the join attempts; 0 retries until one succeeds.
	RetryJoinMax int `yaml:"retry_join_max"`

	// MDNS turns mDNS advertising and browsing (_rpi-cluster._tcp) on.
	MDNS bool `yaml:"mdns"`

	// Interface restricts mDNS to one network interface (e.g. eth0). Empty:
	// every up, multicast-capable interface.
	Interface string `yaml:"interface"`

	// DataDir holds meta-data.json, the services this node runs.
	DataDir string `yaml:"data_dir"`

	// Encrypt is the gossip encryption key, base64 of 16, 24 or 32 bytes
	// (AES-128/192/256-GCM); `rpi-agent keygen` makes one. Every agent of a
	// cluster needs the same key; an agent without it cannot join.
	Encrypt string `yaml:"encrypt"`

	// APIToken, when set, is required as "Authorization: Bearer <token>"
	// on every API write.
	APIToken string `yaml:"api_token"`

	// EncryptFile and APITokenFile name files holding the key and the token
	// instead, readable by the agent's user and not by every user, so the
	// secrets need not be in this file, a command line or the environment.
	// The command line resolves them (rereading them on SIGHUP); setting a
	// secret and its file in the same layer is an error.
	EncryptFile  string `yaml:"encrypt_file"`
	APITokenFile string `yaml:"api_token_file"`

	// Profile names the gossip timing profile: lan (default), local, wan,
	// memberlist-lan.
	Profile string `yaml:"profile"`

	// PhiThreshold is the suspicion level above which a peer is considered
	// unavailable by the phi accrual detector. 0 keeps the profile's value.
	PhiThreshold float64 `yaml:"phi_threshold"`

	// MonitorInterval is how often CPU, memory and load are sampled and
	// gossiped.
	MonitorInterval time.Duration `yaml:"monitor_interval"`

	// SSHHostKeys is a glob of SSH host public keys to gossip, so that
	// workstations can write known_hosts instead of disabling checking.
	SSHHostKeys string `yaml:"ssh_host_keys"`

	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`

	// EventHandlers are commands run when members join, leave, fail or
	// change (services, address), like Serf's event handlers: each entry
	// has an event (member-join, member-leave, member-failed, member-reap,
	// member-update or "*"), an optional service (only for nodes running
	// it) and a command, run with /bin/sh -c. The event is in RPI_EVENT,
	// RPI_NODE_NAME, RPI_NODE_ADDR, RPI_NODE_STATUS, RPI_NODE_SERVICES,
	// RPI_SELF_NAME and RPI_CLUSTER, and as JSON on stdin. Handlers run one
	// at a time; when they fall behind, events are dropped and counted,
	// never delaying gossip. Config file only.
	EventHandlers []hooks.Hook `yaml:"event_handlers"`

	// EventHandlerTimeout bounds each handler run; the handler's process
	// group is killed when it is reached.
	EventHandlerTimeout time.Duration `yaml:"event_handler_timeout"`

	// ReapFailedAfter is how long a failed node stays listed before it is
	// removed from this agent's view (Serf's reconnect_timeout): a Pi that
	// was unplugged for less comes back in its place. ReapLeftAfter is the
	// same for a node that left gracefully, which is not expected back.
	// `rpi-agent force-leave NAME` removes a failed node at once.
	ReapFailedAfter time.Duration `yaml:"reap_failed_after"`
	ReapLeftAfter   time.Duration `yaml:"reap_left_after"`
}

// DefaultConfig returns the configuration used where nothing else is said.
func DefaultConfig() *Config {
	return &Config{
		Cluster:           "rpi",
		Bind:              "0.0.0.0:7946",
		HTTP:              ":8080",
		RetryJoinInterval: 5 * time.Second,
		MDNS:              true,
		DataDir:           "/var/lib/rpi-agent",
		Profile:           "lan",
		MonitorInterval:   5 * time.Second,
		SSHHostKeys:       "/etc/ssh/ssh_host_*_key.pub",
		LogLevel:          "info",

		EventHandlerTimeout: hooks.DefaultTimeout,
		ReapFailedAfter:     cluster.DefaultReapFailedAfter,
		ReapLeftAfter:       cluster.DefaultReapLeftAfter,
	}
}

// LoadFile reads a YAML config file over c. Unknown keys are an error that
// names the key and the line.
func (c *Config) LoadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %w", path, nameKeys(data, err))
	}
	return nil
}

// nameKeys adds the key to each of a yaml.TypeError's "line N: cannot
// unmarshal ..." messages, which otherwise name only the line, and says how
// a duration is written when one was not.
func nameKeys(data []byte, err error) error {
	var te *yaml.TypeError
	var root yaml.Node
	if !errors.As(err, &te) || yaml.Unmarshal(data, &root) != nil || len(root.Content) == 0 {
		return err
	}
	top := root.Content[0].Content // key, value, key, value...
	keyAt := func(line int) string {
		key := ""
		for i := 0; i+1 < len(top); i += 2 {
			if top[i].Line <= line {
				key = top[i].Value
			}
		}
		return key
	}
	out := &yaml.TypeError{Errors: make([]string, len(te.Errors))}
	for i, msg := range te.Errors {
		var line int
		if _, scanErr := fmt.Sscanf(msg, "line %d:", &line); scanErr == nil {
			if key := keyAt(line); key != "" {
				prefix := fmt.Sprintf("line %d:", line)
				msg = prefix + " " + key + ":" + strings.TrimPrefix(msg, prefix)
			}
		}
		if strings.Contains(msg, "into time.Duration") {
			msg += " (write a duration with its unit, like 500ms, 5s or 2m)"
		}
		out.Errors[i] = msg
	}
	return out
}

// LoadDefaultFile loads DefaultConfigPath when it exists.
func (c *Config) LoadDefaultFile() error {
	if _, err := os.Stat(DefaultConfigPath); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return c.LoadFile(DefaultConfigPath)
}

// Validate checks every field and returns an error naming the first bad one.
func (c *Config) Validate() error {
	def := DefaultConfig()
	if c.Name != "" && !apitypes.ValidName(c.Name, true) {
		return fmt.Errorf("name %q: use letters, digits, '_', '.', '-' (at most 63), starting with a letter or digit; it becomes an Ansible host name", c.Name)
	}
	if !apitypes.ValidName(c.Cluster, true) {
		return fmt.Errorf("cluster %q: use letters, digits, '_', '.', '-' (at most 63)", c.Cluster)
	}
	if _, _, err := splitHostPort(c.Bind, 7946); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if c.Advertise != "" {
		host, _, err := splitHostPort(c.Advertise, 0)
		if err != nil || net.ParseIP(host) == nil {
			return fmt.Errorf("advertise %q: want an IP address, optionally with :PORT", c.Advertise)
		}
	}
	if _, _, err := splitHostPort(c.HTTP, 8080); err != nil {
		return fmt.Errorf("http: %w", err)
	}
	for _, j := range c.Join {
		if _, _, err := splitHostPort(j, 7946); err != nil {
			return fmt.Errorf("join %q: %w", j, err)
		}
	}
	if err := checkDuration("retry_join_interval", c.RetryJoinInterval, 10*time.Millisecond, 24*time.Hour, def.RetryJoinInterval); err != nil {
		return err
	}
	if c.RetryJoinMax < 0 || c.RetryJoinMax > maxRetryJoinMax {
		return fmt.Errorf("retry_join_max %d: want 0 (retry until a peer answers) up to %d", c.RetryJoinMax, maxRetryJoinMax)
	}
	if c.DataDir == "" {
		return errors.New("data_dir: must be set")
	}
	if _, err := c.SecretKey(); err != nil {
		return err
	}
	if _, err := cluster.ProfileByName(c.Profile); err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	// Written so that NaN, which compares false with everything, fails.
	if t := c.PhiThreshold; t != 0 && !(t >= minPhiThreshold && t <= maxPhiThreshold) {
		return fmt.Errorf("phi_threshold %v: want a number from %v to %v, or 0 for the profile's (8 with lan)",
			t, minPhiThreshold, maxPhiThreshold)
	}
	if err := checkDuration("monitor_interval", c.MonitorInterval, 100*time.Millisecond, time.Hour, def.MonitorInterval); err != nil {
		return err
	}
	if _, err := ParseLogLevel(c.LogLevel); err != nil {
		return err
	}
	for i, h := range c.EventHandlers {
		if err := h.Validate(); err != nil {
			return fmt.Errorf("event_handlers entry %d (event %q, command %q): %w", i+1, h.Event, h.Command, err)
		}
	}
	if err := checkDuration("event_handler_timeout", c.EventHandlerTimeout, 100*time.Millisecond, 24*time.Hour, def.EventHandlerTimeout); err != nil {
		return err
	}
	// Below a minute a Pi rebooting would be forgotten and come back as
	// new; past 30 days nothing is ever reaped in practice.
	if err := checkDuration("reap_failed_after", c.ReapFailedAfter, time.Minute, 30*24*time.Hour, def.ReapFailedAfter); err != nil {
		return err
	}
	if err := checkDuration("reap_left_after", c.ReapLeftAfter, time.Minute, 30*24*time.Hour, def.ReapLeftAfter); err != nil {
		return err
	}
	return nil
}

// Bounds of the numeric settings. Outside them a value is a typo or a unit
// slip (a threshold of 1e9, a retry count in the billions), not a choice,
// and an agent that accepted it would silently never suspect, never stop
// retrying or never sample.
const (
	// A phi below 1 calls a peer down at a 10% chance of being wrong; past
	// 100 the detector never fires in practice.
	minPhiThreshold = 1
	maxPhiThreshold = 100
	maxRetryJoinMax = 1_000_000
)

// checkDuration returns an error naming field unless lo <= d <= hi.
func checkDuration(field string, d, lo, hi, def time.Duration) error {
	if d < lo || d > hi {
		return fmt.Errorf("%s %v: want a duration from %v to %v (default %v)", field, d, lo, hi, def)
	}
	return nil
}

// SecretKey decodes Encrypt; nil when no key is configured.
func (c *Config) SecretKey() ([]byte, error) {
	if c.Encrypt == "" {
		return nil, nil
	}
	key, err := base64.StdEncoding.DecodeString(c.Encrypt)
	if err != nil {
		return nil, fmt.Errorf("encrypt: not valid base64: %w (make one with `rpi-agent keygen`)", err)
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("encrypt: key is %d bytes, want 16, 24 or 32 (make one with `rpi-agent keygen`)", len(key))
}

// splitHostPort parses "HOST:PORT", ":PORT" or "HOST"; defPort is returned
// when no port is given.
func splitHostPort(s string, defPort int) (string, int, error) {
	if s == "" {
		return "", 0, errors.New("empty address")
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		// No port: the whole thing is a host (IPv6 literals need brackets).
		if strings.Contains(err.Error(), "missing port") {
			return strings.Trim(s, "[]"), defPort, nil
		}
		return "", 0, fmt.Errorf("address %q: %w", s, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("address %q: port must be a number from 0 to 65535", s)
	}
	return host, port, nil
}

// factoryHostnames are hostnames that many cards share out of the box.
var factoryHostnames = map[string]bool{"": true, "raspberrypi": true, "localhost": true, "localhost.localdomain": true}

// DefaultNodeName returns hostname, or, when that is a factory default,
// "rpi-" followed by the last three octets of the primary interface's MAC.
func DefaultNodeName(hostname string, ifaces []net.Interface) (string, error) {
	short, _, _ := strings.Cut(hostname, ".")
	if !factoryHostnames[strings.ToLower(hostname)] && !factoryHostnames[strings.ToLower(short)] {
		return hostname, nil
	}
	mac := PrimaryMAC(ifaces)
	if mac == nil {
		return "", fmt.Errorf("hostname %q is a factory default and no network interface has a MAC address: set name", hostname)
	}
	return fmt.Sprintf("rpi-%02x%02x%02x", mac[len(mac)-3], mac[len(mac)-2], mac[len(mac)-1]), nil
}

// PrimaryMAC returns the MAC of eth0 if present, else wlan0, else the first
// non-loopback interface with a MAC by name; nil if none has one. The same
// rule is used by the image's first-boot step to set the hostname.
func PrimaryMAC(ifaces []net.Interface) net.HardwareAddr {
	byName := map[string]net.HardwareAddr{}
	var names []string
	for _, i := range ifaces {
		if i.Flags&net.FlagLoopback != 0 || len(i.HardwareAddr) < 3 {
			continue
		}
		byName[i.Name] = i.HardwareAddr
		names = append(names, i.Name)
	}
	for _, pref := range []string{"eth0", "wlan0"} {
		if mac, ok := byName[pref]; ok {
			return mac
		}
	}
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	return byName[names[0]]
}

// readHostKeys reads the SSH host public keys matching glob.
func readHostKeys(glob string) ([]string, error) {
	if glob == "" {
		return nil, nil
	}
	paths, err := filepath.Glob(glob)
	if err != nil {
		return nil, fmt.Errorf("ssh_host_keys %q: %w", glob, err)
	}
	sort.Strings(paths)
	var keys []string
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read ssh host key: %w", err)
		}
		fields := strings.Fields(string(data))
		if len(fields) < 2 {
			return nil, fmt.Errorf("read ssh host key %s: not an authorized_keys line", p)
		}
		// Keep type and key, drop the comment (often root@hostname).
		keys = append(keys, fields[0]+" "+fields[1])
	}
	return keys, nil
}

// ParseLogLevel maps debug, info, warn and error to slog levels.
func ParseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log_level %q: want debug, info, warn or error", s)
}

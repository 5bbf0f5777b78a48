// Package command is rpi-agent's command line: the daemon itself (flags,
// config layers, signals) and the small client subcommands that ask a running
// agent (members) or help set one up (keygen).
package command

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/rpi-cluster/rpi-cluster/agent"
	"github.com/rpi-cluster/rpi-cluster/internal/version"
)

// leaveTimeout bounds the graceful leave on SIGINT/SIGTERM; a second signal
// cuts it short.
const leaveTimeout = 5 * time.Second

// gcPercent is the agent's GC target unless GOGC says otherwise. An idle
// agent keeps well under 1 MB live and, since the cluster's transport stopped
// allocating 64 KB per received packet, makes little garbage (a collection
// every ten seconds or so in a 10-node cluster), so the heap's resident size
// is set by the runtime's minimum goal, 4 MB times GOGC/100, not by the
// collector's pace. A quarter of the default: measured with rpi-bench's
// footprint row (10 agents, 60 s idle) against 50, 0.55 MiB less RSS per
// agent (4.1-4.2 MiB anonymous against 4.7) for CPU within the runs' noise
// (0.52-0.67 % of a core against 0.50-0.55 %).
const gcPercent = 25

// setGCTarget applies gcPercent unless the user has tuned the collector with
// GOGC; a GOMEMLIMIT works as usual, the agent sets no limit of its own.
func setGCTarget(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

// App returns the rpi-agent command line application.
func App() *cli.App {
	return &cli.App{
		Name:    "rpi-agent",
		Usage:   "run the cluster agent of a Raspberry Pi: discovery, gossip, failure detection, API and status page",
		Version: version.String(),
		Flags:   runFlags(),
		Action:  run,
		Commands: []*cli.Command{
			membersCommand(),
			rekeyCommand(),
			{
				Name:  "keygen",
				Usage: "print a new gossip encryption key (base64, 32 bytes) for --encrypt",
				Action: func(c *cli.Context) error {
					key := make([]byte, 32)
					if _, err := rand.Read(key); err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, base64.StdEncoding.EncodeToString(key))
					return nil
				},
			},
			{
				Name:  "version",
				Usage: "print the agent version",
				Action: func(c *cli.Context) error {
					fmt.Fprintln(c.App.Writer, version.String())
					return nil
				},
			},
		},
	}
}

func runFlags() []cli.Flag {
	env := func(name string) []string { return []string{"RPI_" + name} }
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "YAML config `FILE` (keys as the flags, with _ for -)", EnvVars: env("CONFIG"), Value: agent.DefaultConfigPath},
		&cli.StringFlag{Name: "name", Usage: "node name (default: hostname, or rpi-<MAC> when the hostname is a factory default)", EnvVars: env("NAME")},
		&cli.StringFlag{Name: "cluster", Usage: "cluster name (default \"rpi\")", EnvVars: env("CLUSTER")},
		&cli.StringFlag{Name: "bind", Usage: "gossip `HOST:PORT` (default 0.0.0.0:7946)", EnvVars: env("BIND")},
		&cli.StringFlag{Name: "advertise", Usage: "address peers use to reach this node", EnvVars: env("ADVERTISE")},
		&cli.StringFlag{Name: "http", Usage: "API and status page `HOST:PORT` (default :8080)", EnvVars: env("HTTP")},
		&cli.StringSliceFlag{Name: "join", Usage: "gossip `ADDR` to join, retried until it answers (repeatable)", EnvVars: env("JOIN")},
		&cli.BoolFlag{Name: "mdns", Usage: "advertise and browse for peers with mDNS (default true)", EnvVars: env("MDNS")},
		&cli.BoolFlag{Name: "no-mdns", Usage: "turn mDNS off"},
		&cli.StringFlag{Name: "interface", Usage: "network interface for mDNS (default: all)", EnvVars: env("INTERFACE")},
		&cli.StringFlag{Name: "data-dir", Usage: "`DIR` holding meta-data.json (default /var/lib/rpi-agent)", EnvVars: env("DATA_DIR")},
		&cli.StringFlag{Name: "encrypt", Usage: "gossip encryption key, base64 (see `rpi-agent keygen`)", EnvVars: env("ENCRYPT")},
		&cli.StringFlag{Name: "api-token", Usage: "bearer `TOKEN` required for API writes", EnvVars: env("API_TOKEN")},
		&cli.StringFlag{Name: "profile", Usage: "gossip timing profile: lan, local, wan, memberlist-lan (default lan)", EnvVars: env("PROFILE")},
		&cli.Float64Flag{Name: "phi-threshold", Usage: "suspicion level that marks a peer unavailable (default 8)", EnvVars: env("PHI_THRESHOLD")},
		&cli.StringFlag{Name: "log-level", Usage: "debug, info, warn, error", EnvVars: env("LOG_LEVEL")},
	}
}

// loadConfig layers DefaultConfig, the config file, then the environment and
// flags (urfave/cli resolves those two, flags winning).
func loadConfig(c *cli.Context) (*agent.Config, error) {
	conf := agent.DefaultConfig()
	if c.IsSet("config") {
		if err := conf.LoadFile(c.String("config")); err != nil {
			return nil, err
		}
	} else if err := conf.LoadDefaultFile(); err != nil {
		return nil, err
	}
	str := func(flag string, dst *string) {
		if c.IsSet(flag) {
			*dst = c.String(flag)
		}
	}
	str("name", &conf.Name)
	str("cluster", &conf.Cluster)
	str("bind", &conf.Bind)
	str("advertise", &conf.Advertise)
	str("http", &conf.HTTP)
	str("interface", &conf.Interface)
	str("data-dir", &conf.DataDir)
	str("encrypt", &conf.Encrypt)
	str("api-token", &conf.APIToken)
	str("profile", &conf.Profile)
	str("log-level", &conf.LogLevel)
	if c.IsSet("join") {
		conf.Join = nil
		for _, j := range c.StringSlice("join") {
			for _, part := range strings.Split(j, ",") {
				if part = strings.TrimSpace(part); part != "" {
					conf.Join = append(conf.Join, part)
				}
			}
		}
	}
	if c.IsSet("mdns") {
		conf.MDNS = c.Bool("mdns")
	}
	if c.Bool("no-mdns") {
		if c.IsSet("mdns") && c.Bool("mdns") {
			return nil, errors.New("--mdns and --no-mdns contradict each other")
		}
		conf.MDNS = false
	}
	if c.IsSet("phi-threshold") {
		conf.PhiThreshold = c.Float64("phi-threshold")
	}
	if err := conf.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	return conf, nil
}

func run(c *cli.Context) error {
	if c.Args().Len() > 0 {
		return fmt.Errorf("unexpected argument %q: see rpi-agent --help", c.Args().First())
	}
	// Signals are caught from here on, so a SIGHUP or SIGTERM sent while
	// the agent starts is handled once it runs rather than killing it.
	sigCh := make(chan os.Signal, 4)
	signal.Notify(sigCh, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigCh)

	conf, err := loadConfig(c)
	if err != nil {
		return err
	}
	setGCTarget(os.Getenv)
	level := new(slog.LevelVar)
	l, _ := agent.ParseLogLevel(conf.LogLevel)
	level.Set(l)
	logger := slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: level}))

	a, err := agent.Create(conf, logger)
	if err != nil {
		return err
	}
	if err := a.Start(); err != nil {
		return err
	}
	logger.Info("agent running", "name", a.Name(), "version", version.String(), "status_page", "http://"+a.HTTPAddr()+"/")
	return handleSignals(c, sigCh, a, logger, level)
}

// handleSignals waits for a signal. SIGHUP reloads what is safe to reload
// (API token, log level, SSH host keys); SIGINT/SIGTERM leave gracefully, raced against
// leaveTimeout; a second SIGINT/SIGTERM forces the exit.
func handleSignals(c *cli.Context, sigCh <-chan os.Signal, a *agent.Agent, logger *slog.Logger, level *slog.LevelVar) error {
	for sig := range sigCh {
		if sig == syscall.SIGHUP {
			reload(c, a, logger, level)
			continue
		}
		logger.Info("leaving the cluster", "signal", sig.String())
		done := make(chan error, 1)
		go func() { done <- a.Leave(leaveTimeout) }()
		select {
		case err := <-done:
			if err != nil {
				logger.Warn("graceful leave failed", "err", err)
			}
		case <-time.After(leaveTimeout + time.Second):
			logger.Warn("graceful leave timed out")
		case sig := <-sigCh:
			logger.Warn("second signal: exiting without a graceful leave", "signal", sig.String())
			return cli.Exit("", 1)
		}
		return a.Shutdown()
	}
	return nil
}

// reload re-reads the configuration's layers and applies what can change
// while running. A file that cannot be read or does not validate changes
// nothing: the agent runs on with its current token, log level and keys.
func reload(c *cli.Context, a *agent.Agent, logger *slog.Logger, level *slog.LevelVar) {
	const kept = "configuration not applied: api_token, log_level and ssh_host_keys stay as they were"
	conf, err := loadConfig(c)
	if err != nil {
		logger.Error("reload: "+kept, "err", err)
		return
	}
	if err := a.Reload(conf); err != nil {
		logger.Error("reload: "+kept, "err", err)
		return
	}
	if l, err := agent.ParseLogLevel(conf.LogLevel); err == nil {
		level.Set(l)
	}
}

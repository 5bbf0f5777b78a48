// Package command is rpi-agent's command line: the daemon itself (flags,
// config layers, signals) and the small client subcommands that ask a running
// agent (members) or help set one up (keygen).
package command

import (
	"context"
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
	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/internal/cliapp"
	"github.com/rpi-cluster/rpi-cluster/internal/secretfile"
	"github.com/rpi-cluster/rpi-cluster/internal/version"
)

// envConfig names the agent's config file. The workstation tools' file has
// its own variable (RPI_WORKSTATION_CONFIG); RPI_CONFIG, which once meant
// either, is ignored here with a warning, since a shell that exports it for
// the tools would otherwise make the agent read the wrong file.
const (
	envConfig    = "RPI_AGENT_CONFIG"
	envConfigOld = "RPI_CONFIG"
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
	return cliapp.Prepare(&cli.App{
		Name:    "rpi-agent",
		Usage:   "run the cluster agent of a Raspberry Pi: discovery, gossip, failure detection, API and status page",
		Version: version.String(),
		Flags:   runFlags(),
		Action:  run,
		Commands: []*cli.Command{
			membersCommand(),
			rekeyCommand(),
			forceLeaveCommand(),
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
	})
}

func runFlags() []cli.Flag {
	env := func(name string) []string { return []string{"RPI_" + name} }
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "YAML config `FILE` (keys as the flags, with _ for -)", EnvVars: []string{envConfig}, Value: agent.DefaultConfigPath},
		&cli.StringFlag{Name: "name", Usage: "node `NAME`", DefaultText: "the hostname, or rpi-<MAC> when the hostname is a factory default", EnvVars: env("NAME")},
		&cli.StringFlag{Name: "cluster", Usage: "cluster `NAME`", DefaultText: "rpi", EnvVars: env("CLUSTER")},
		&cli.StringFlag{Name: "bind", Usage: "gossip `HOST:PORT`", DefaultText: "0.0.0.0:7946", EnvVars: env("BIND")},
		&cli.StringFlag{Name: "advertise", Usage: "`ADDRESS` peers use to reach this node", DefaultText: "from --bind, or the first private address when it is 0.0.0.0", EnvVars: env("ADVERTISE")},
		&cli.StringFlag{Name: "http", Usage: "API and status page `HOST:PORT`", DefaultText: ":8080", EnvVars: env("HTTP")},
		&cli.StringSliceFlag{Name: "join", Usage: "gossip `ADDR` to join, retried until it answers (repeatable)", EnvVars: env("JOIN")},
		// --no-mdns is the way to say no in a unit file or script; it is
		// described here, under --mdns, and hidden from the list.
		&cli.BoolFlag{Name: "mdns", Usage: "advertise and browse for peers with mDNS (--no-mdns turns it off)", Value: true, EnvVars: env("MDNS")},
		&cli.BoolFlag{Name: "no-mdns", Usage: "turn mDNS off", Hidden: true},
		&cli.StringFlag{Name: "interface", Usage: "network `INTERFACE` for mDNS", DefaultText: "every multicast interface", EnvVars: env("INTERFACE")},
		&cli.StringFlag{Name: "data-dir", Usage: "`DIR` holding meta-data.json, the node key and pins", DefaultText: "/var/lib/rpi-agent", EnvVars: env("DATA_DIR")},
		&cli.StringFlag{Name: "encrypt", Usage: "gossip encryption `KEY`, base64 (see 'rpi-agent keygen'; visible to ps: prefer --encrypt-file)", EnvVars: env("ENCRYPT")},
		&cli.StringFlag{Name: "encrypt-file", Usage: "read the gossip encryption key from `FILE` (not readable by every user)", EnvVars: env("ENCRYPT_FILE")},
		&cli.StringFlag{Name: "api-token", Usage: "bearer `TOKEN` required for API writes (visible to ps: prefer --api-token-file)", EnvVars: env("API_TOKEN")},
		&cli.StringFlag{Name: "api-token-file", Usage: "read the API token from `FILE` (not readable by every user)", EnvVars: env("API_TOKEN_FILE")},
		&cli.StringFlag{Name: "profile", Usage: "gossip timing `PROFILE`: lan, local, wan, memberlist-lan", DefaultText: "lan", EnvVars: env("PROFILE")},
		&cli.Float64Flag{Name: "phi-threshold", Usage: "suspicion `LEVEL` that marks a peer unavailable", DefaultText: "8", EnvVars: env("PHI_THRESHOLD")},
		&cli.StringFlag{Name: "log-level", Usage: "`LEVEL`: debug, info, warn, error", DefaultText: "info", EnvVars: env("LOG_LEVEL")},
	}
}

// tokenFileFlag is --token-file for the subcommands that write through an
// agent's API (rekey, force-leave), beside their --token.
func tokenFileFlag() cli.Flag {
	return &cli.StringFlag{Name: "token-file", Usage: "read the API token from `FILE` (not readable by every user)", EnvVars: []string{"RPI_TOKEN_FILE"}}
}

// clientToken is --token, else the content of --token-file.
func clientToken(c *cli.Context) (string, error) {
	return secretfile.Value("--token", "--token-file", c.String("token"), c.String("token-file"))
}

// writeFlags are the flags of a subcommand that writes through an agent's
// API: the agent to ask (agentUsage says what it is asked for) and the
// token.
func writeFlags(agentUsage string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "agent", Usage: agentUsage, Value: "http://127.0.0.1:8080", EnvVars: []string{"RPI_AGENT"}},
		&cli.StringFlag{Name: "token", Usage: "API `TOKEN` the agents require for writes (visible to ps: prefer --token-file)", EnvVars: []string{"RPI_TOKEN"}},
		tokenFileFlag(),
	}
}

// nodeArgAndClient checks the subcommand's one NAME argument against the
// node-name rule and returns it with a client of --agent carrying the token.
func nodeArgAndClient(c *cli.Context, op string) (string, *client.Client, error) {
	if c.NArg() != 1 {
		return "", nil, cliapp.Usagef("%s: give exactly one node name: rpi-agent %s NAME", op, op)
	}
	name := c.Args().First()
	if err := apitypes.ValidateNodeName(name); err != nil {
		return "", nil, cli.Exit(op+": "+err.Error(), 2)
	}
	token, err := clientToken(c)
	if err != nil {
		return "", nil, err
	}
	cl, err := client.New(c.String("agent"), token)
	if err != nil {
		return "", nil, err
	}
	return name, cl, nil
}

// loadConfig layers DefaultConfig, the config file, then the environment and
// flags (urfave/cli resolves those two, flags winning).
func loadConfig(c *cli.Context) (*agent.Config, error) {
	conf, _, err := loadConfigLayers(c)
	return conf, err
}

// tokenOverride says that the API token came from a flag or the
// environment while the config file gives another one, which is therefore
// not applied.
type tokenOverride struct {
	source string // "--api-token", "RPI_API_TOKEN_FILE", ...
	file   string // the file's setting: "api_token" or "api_token_file"
}

// loadConfigLayers is loadConfig, also saying when a flag or the
// environment overrides a different token in the config file (nil when
// not).
func loadConfigLayers(c *cli.Context) (*agent.Config, *tokenOverride, error) {
	conf := agent.DefaultConfig()
	if c.IsSet("config") {
		if err := conf.LoadFile(c.String("config")); err != nil {
			return nil, nil, err
		}
	} else if err := conf.LoadDefaultFile(); err != nil {
		return nil, nil, err
	}
	// The config file's own token, to tell when a flag overrides another.
	fileTokenKey := "api_token"
	if conf.APITokenFile != "" {
		fileTokenKey = "api_token_file"
	}
	fileToken, fileTokenErr := secretfile.Value("api_token", "api_token_file", conf.APIToken, conf.APITokenFile)
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
	// A secret given in a later layer replaces the earlier layer's file, and
	// a file the earlier layer's secret.
	secret := func(flag string, value, file *string) error {
		if c.IsSet(flag) && c.IsSet(flag+"-file") {
			return cliapp.Usagef("--%s and --%s: %w", flag, flag+"-file", secretfile.ErrBoth)
		}
		if c.IsSet(flag) {
			*value, *file = c.String(flag), ""
		}
		if c.IsSet(flag + "-file") {
			*value, *file = "", c.String(flag+"-file")
		}
		key := strings.ReplaceAll(flag, "-", "_")
		v, err := secretfile.Value(key, key+"_file", *value, *file)
		if err != nil {
			return fmt.Errorf("invalid configuration: %w", err)
		}
		*value = v
		return nil
	}
	if err := secret("encrypt", &conf.Encrypt, &conf.EncryptFile); err != nil {
		return nil, nil, err
	}
	if err := secret("api-token", &conf.APIToken, &conf.APITokenFile); err != nil {
		return nil, nil, err
	}
	var override *tokenOverride
	if flag := tokenFlagSet(c); flag != "" && (fileTokenErr != nil || fileToken != "") && fileToken != conf.APIToken {
		override = &tokenOverride{source: flag, file: fileTokenKey}
	}
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
			return nil, nil, errors.New("--mdns and --no-mdns contradict each other")
		}
		conf.MDNS = false
	}
	if c.IsSet("phi-threshold") {
		conf.PhiThreshold = c.Float64("phi-threshold")
	}
	if err := conf.Validate(); err != nil {
		return nil, nil, fmt.Errorf("invalid configuration: %w", err)
	}
	return conf, override, nil
}

// tokenFlagSet names where the token was given over the config file:
// --api-token, --api-token-file or their environment variables; "" when
// neither was given.
func tokenFlagSet(c *cli.Context) string {
	for _, flag := range []string{"api-token", "api-token-file"} {
		if !c.IsSet(flag) {
			continue
		}
		// urfave/cli reads the variable into the flag; a value equal to
		// the variable's came from it (or from both, alike).
		env := "RPI_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && v == c.String(flag) {
			return env
		}
		return "--" + flag
	}
	return ""
}

func run(c *cli.Context) error {
	if c.Args().Len() > 0 {
		return cliapp.Usagef("unexpected argument %q", c.Args().First())
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
	if os.Getenv(envConfigOld) != "" && os.Getenv(envConfig) == "" {
		logger.Warn(envConfigOld+" is ignored: it names the workstation tools' config; set "+envConfig+" for the agent's", "config", c.String("config"))
	}

	// Started at boot before the network is up, the agent waits for an
	// address (and a MAC to name itself after) instead of failing; a
	// SIGINT or SIGTERM ends the wait.
	waitCtx, stopWait := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err = agent.WaitForNetwork(waitCtx, conf, logger)
	stopWait()
	if err != nil {
		logger.Info("stopped while waiting for the network")
		return nil
	}
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
	conf, override, err := loadConfigLayers(c)
	if err != nil {
		logger.Error("reload: "+kept, "err", err)
		return
	}
	if override != nil {
		// Flags and the environment outrank the config file, at start and
		// at every reload alike; a changed token in the file would
		// otherwise be ignored without a word.
		logger.Warn("reload: the config file's api token is not applied: "+override.source+" gives the token, and flags and the environment outrank the config file",
			"token_from", override.source, "ignored", override.file,
			"fix", "remove "+override.source+" and restart to use the config file's "+override.file)
	}
	if err := a.Reload(conf); err != nil {
		logger.Error("reload: "+kept, "err", err)
		return
	}
	if l, err := agent.ParseLogLevel(conf.LogLevel); err == nil {
		level.Set(l)
	}
}

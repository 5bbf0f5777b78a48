// Package cli holds the rpi-launch and rpi-meta command lines. They write to
// injectable writers so tests capture the output.
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/internal/cliapp"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit"
	"github.com/rpi-cluster/rpi-cluster/inventory"
	"github.com/rpi-cluster/rpi-cluster/launcher"
)

// RunLaunch runs rpi-launch with args (args[0] is the program name).
// Arguments after "--" go to ansible-playbook.
func RunLaunch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var extra []string
	app := launchApp(stdout, stderr, &extra)
	args, extra = toolkit.Permute(app, args)
	return app.RunContext(ctx, args)
}

// LaunchApp returns the rpi-launch application, for the documentation
// generator; RunLaunch is how it runs.
func LaunchApp() *cli.App { return launchApp(io.Discard, io.Discard, new([]string)) }

// launchApp builds rpi-launch; *extraArgs holds the arguments after "--" by the
// time an action runs.
func launchApp(stdout, stderr io.Writer, extraArgs *[]string) *cli.App {
	app := &cli.App{
		Name:      "rpi-launch",
		Usage:     "deploy a service on the least busy nodes of the cluster",
		ArgsUsage: "N SERVICE [-- ANSIBLE-PLAYBOOK ARGS...]",
		Description: "Picks N alive nodes not running SERVICE (suspicion below the service's\n" +
			"phi_threshold, a first monitoring sample), spreading: off the nodes of its\n" +
			"depends_on and avoid services while others are free, then the less busy\n" +
			"(scores within 0.1 are equal), then those running fewer services. Before any\n" +
			"change it checks the token on every agent it writes to, SSH on every chosen\n" +
			"node (--ssh-port) and that the playbooks and templates are there and render.\n" +
			"It renders templates/SERVICE/ with the cluster after the change into\n" +
			"BUILD-DIR/SERVICE, runs playbooks/SERVICE/install.yml (or the old layout's\n" +
			"install_SERVICE.yml) on them and records SERVICE on the nodes where the play\n" +
			"succeeded, with a hash of what each was given. Services that depend on SERVICE\n" +
			"(SERVICE itself when its depends_on lists it) are re-applied.\n\n" +
			"The cluster's desired count for SERVICE (/v1/desired) is raised by N once the\n" +
			"play succeeded on at least one node (reconcile converges the rest); --remove N\n" +
			"lowers it by N before uninstalling; a launch records service.yaml with it.\n" +
			"`rpi-launch status` compares desired with actual and shows drift (nodes given\n" +
			"another render than the templates give now); `rpi-launch reconcile [--watch]`\n" +
			"replaces failed replicas and re-applies drifted nodes.\n\n" +
			"Launch, --remove and reconcile pin node identity keys on first sight and refuse\n" +
			"to act when a node offers another key (see rpi-inventory forget); status only\n" +
			"shows the cluster and pins nothing.",
		Flags: append(toolkit.CommonFlags(),
			&cli.IntFlag{Name: "remove", Usage: "remove SERVICE from the `N` busiest nodes running it (uninstall.yml)"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print the plan and the rendered files; run nothing"},
			&cli.StringFlag{Name: "playbooks", Value: "playbooks", EnvVars: []string{"RPI_PLAYBOOKS"}, Usage: "`DIR` holding SERVICE/install.yml"},
			&cli.StringFlag{Name: "templates", Value: "templates", EnvVars: []string{"RPI_TEMPLATES"}, Usage: "`DIR` holding SERVICE/ templates"},
			&cli.StringFlag{Name: "build-dir", Value: "build", Usage: "`DIR` where SERVICE/ renders are written"},
			&cli.StringFlag{Name: "ansible-playbook", Value: "ansible-playbook", EnvVars: []string{"RPI_ANSIBLE_PLAYBOOK"}, Usage: "ansible-playbook `PATH`"},
			&cli.IntFlag{Name: "ssh-port", Value: launcher.DefaultSSHPort, EnvVars: []string{"RPI_SSH_PORT"}, Usage: "`PORT` preflight checks answers SSH on every chosen node"},
		),
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		Action: func(c *cli.Context) error {
			var n int
			var service string
			remove := c.IsSet("remove")
			switch {
			case remove && c.NArg() == 1:
				n, service = c.Int("remove"), c.Args().First()
			case remove:
				return cliapp.Usagef("usage: rpi-launch --remove N SERVICE")
			case c.NArg() == 2:
				v, err := strconv.Atoi(c.Args().Get(0))
				if err != nil || v < 1 {
					return fmt.Errorf("node count %q: want a whole number of at least 1 (usage: rpi-launch N SERVICE)", c.Args().Get(0))
				}
				n, service = v, c.Args().Get(1)
			default:
				return cliapp.Usagef("usage: rpi-launch N SERVICE [-- ansible-playbook args], or rpi-launch --remove N SERVICE")
			}
			if n < 1 {
				return fmt.Errorf("--remove %d: want a whole number of at least 1", n)
			}
			s, err := toolkit.Connect(c.Context, c, toolkit.Pin)
			if err != nil {
				return err
			}
			l := newLauncher(c, s, *extraArgs, stdout, stderr)
			l.RecordDesired = true
			if remove {
				_, err = l.Remove(c.Context, service, n, c.Bool("dry-run"))
			} else {
				_, err = l.Launch(c.Context, service, n, c.Bool("dry-run"))
			}
			return err
		},
	}
	app.Commands = []*cli.Command{
		{
			Name:      "status",
			Usage:     "desired against actual replicas of every service",
			ArgsUsage: " ",
			Flags: []cli.Flag{toolkit.JSONFlag(),
				&cli.BoolFlag{Name: "check", Usage: "also run each service's install playbook in check mode (nothing changes) on its nodes, to find rendered files changed or deleted there"},
			},
			Action: func(c *cli.Context) error {
				if c.NArg() > 0 {
					return cliapp.Usagef("usage: rpi-launch status [--json]")
				}
				s, err := toolkit.Connect(c.Context, c, toolkit.NoPin)
				if err != nil {
					return err
				}
				l := newLauncher(c, s, nil, stdout, stderr)
				return status(c.Context, l, c.Bool(toolkit.FlagJSON), c.Bool("check"), stdout)
			},
		},
		{
			Name:      "reconcile",
			Usage:     "replace failed replicas and re-apply dependents, once or continuously",
			ArgsUsage: " ",
			Description: "Compares every service's desired count with the healthy nodes running it\n" +
				"(alive, suspicion below its phi_threshold) and acts on its on_failure policy:\n" +
				"relaunch starts missing replicas on the least busy nodes as rpi-launch does,\n" +
				"alert logs an alert, none does nothing. Dependents (the load balancer) are\n" +
				"re-applied when a service's node set changes. Once, nodes already down are\n" +
				"acted on at once; with --watch, a node gets its grace_period first, failed\n" +
				"relaunches back off, the event stream is followed (moving to another agent\n" +
				"when it breaks) and Ctrl-C stops it. Extra replicas are left running.",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "watch", Usage: "keep reconciling, on events and every --interval"},
				&cli.BoolFlag{Name: "check", Usage: "also find drift on the nodes: run each service's install playbook in check mode where it runs, every pass"},
				&cli.DurationFlag{Name: "interval", Value: launcher.DefaultReconcileInterval, Usage: "re-check every `DURATION` with --watch"},
				&cli.BoolFlag{Name: "debug", Usage: "log every event followed"},
			},
			Action: func(c *cli.Context) error {
				if c.NArg() > 0 {
					return cliapp.Usagef("usage: rpi-launch reconcile [--watch] [--interval 10s]")
				}
				if c.Duration("interval") <= 0 {
					return fmt.Errorf("--interval %v: must be positive, like 10s", c.Duration("interval"))
				}
				s, err := toolkit.Connect(c.Context, c, toolkit.Pin)
				if err != nil {
					return err
				}
				level := slog.LevelInfo
				if c.Bool("debug") {
					level = slog.LevelDebug
				}
				r := &launcher.Reconciler{
					Launcher:    newLauncher(c, s, *extraArgs, stdout, stderr),
					Agents:      append(toolkit.SplitList(c.StringSlice(toolkit.FlagAgent)), s.Config.Agents...),
					Interval:    c.Duration("interval"),
					IgnoreGrace: !c.Bool("watch"),
					ProbeNodes:  c.Bool("check"),
					Log:         slog.New(slog.NewTextHandler(stdout, &slog.HandlerOptions{Level: level})),
				}
				if c.Bool("watch") {
					return r.Watch(c.Context)
				}
				res, err := r.Reconcile(c.Context)
				if err != nil {
					return err
				}
				for _, st := range res.States {
					fmt.Fprintf(stdout, "%s: desired %d, running %d", apitypes.Printable(st.Service), st.Desired, len(st.Actual)+len(res.Launched[st.Service]))
					if n := res.Launched[st.Service]; len(n) > 0 {
						fmt.Fprintf(stdout, ", launched on %s", apitypes.Printable(strings.Join(n, ", ")))
					}
					if n := res.Repaired[st.Service]; len(n) > 0 {
						fmt.Fprintf(stdout, ", drift repaired on %s", apitypes.Printable(strings.Join(n, ", ")))
					}
					fmt.Fprintln(stdout)
				}
				return nil
			},
		},
	}
	return cliapp.Prepare(app)
}

func newLauncher(c *cli.Context, s *toolkit.Session, extra []string, stdout, stderr io.Writer) *launcher.Launcher {
	return &launcher.Launcher{
		Client:    s.Client,
		Cluster:   toolkit.ClusterName(s.Config),
		Playbooks: c.String("playbooks"),
		Templates: c.String("templates"),
		BuildDir:  c.String("build-dir"),
		Inventory: inventory.Options{User: s.Config.SSHUser, SSHKey: s.Config.SSHKey, KnownHosts: s.Config.KnownHosts},
		Runner:    &launcher.Runner{Path: c.String("ansible-playbook"), Stdout: stdout, Stderr: stderr},
		ExtraArgs: extra,
		Out:       stdout,
		SSHPort:   c.Int("ssh-port"),
	}
}

// status prints desired against actual for every service, with the nodes
// whose last render has drifted from what the templates give now.
func status(ctx context.Context, l *launcher.Launcher, asJSON, check bool, w io.Writer) error {
	nodes, err := l.Client.Nodes(ctx)
	if err != nil {
		return fmt.Errorf("status: list nodes: %w", err)
	}
	desired, err := l.Client.Desired(ctx)
	if err != nil {
		return fmt.Errorf("status: read desired state: %w", err)
	}
	states := launcher.ServiceStates(nodes, desired, func(svc string) (launcher.Policy, error) {
		return launcher.LoadPolicy(l.Playbooks, svc)
	})
	launcher.AddDrift(states, func(svc string) (string, bool, error) { return l.ExpectedRender(svc, nodes) })
	if check {
		hasTemplates := func(svc string) bool { _, ok, err := l.ExpectedRender(svc, nodes); return ok && err == nil }
		launcher.AddCheckedDrift(states, hasTemplates, func(svc string, names []string) ([]string, map[string]string, error) {
			return l.CheckNodes(ctx, svc, nodes, names)
		})
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(states)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tDESIRED\tACTUAL\tON FAILURE\tNODES\tDOWN\tDRIFT")
	for _, st := range states {
		want := "-"
		if st.HasDesired {
			want = strconv.Itoa(st.Desired)
		}
		var downs []string
		for _, d := range st.Down {
			downs = append(downs, d.Name+" ("+d.Reason+")")
		}
		onFailure := st.OnFailure
		if st.PolicyError != "" {
			onFailure = "bad policy"
		}
		drift := orDash(strings.Join(st.Drift, ","))
		if st.DriftError != "" {
			drift = "?"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", apitypes.Printable(st.Service), want, len(st.Actual), onFailure,
			apitypes.Printable(orDash(strings.Join(st.Actual, ","))), apitypes.Printable(orDash(strings.Join(downs, ", "))), apitypes.Printable(drift))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, st := range states {
		if st.PolicyError != "" {
			fmt.Fprintf(w, "warning: %s\n", apitypes.Printable(st.PolicyError))
		}
		if st.PolicySource == launcher.PolicyFromLocal && st.HasDesired && st.Desired > 0 {
			fmt.Fprintf(w, "warning: %s's policy is not recorded in the cluster; shown from %s (rpi-launch N %s records it)\n",
				apitypes.Printable(st.Service), apitypes.Printable(l.Playbooks), apitypes.Printable(st.Service))
		}
		if st.DriftError != "" {
			fmt.Fprintf(w, "warning: drift of %s unknown: %s\n", apitypes.Printable(st.Service), apitypes.Printable(st.DriftError))
		}
		if len(st.Drift) > 0 {
			fmt.Fprintf(w, "warning: drift: %s on %s was given another render than its templates give now; rpi-launch reconcile re-applies it\n",
				apitypes.Printable(st.Service), apitypes.Printable(strings.Join(st.Drift, ", ")))
		}
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Package cli holds the rpi-launch and rpi-meta command lines. They write to
// injectable writers so tests capture the output.
package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/rpi-cluster/rpi-cluster/internal/toolkit"
	"github.com/rpi-cluster/rpi-cluster/inventory"
	"github.com/rpi-cluster/rpi-cluster/launcher"
)

// RunLaunch runs rpi-launch with args (args[0] is the program name).
// Arguments after "--" go to ansible-playbook.
func RunLaunch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var extra []string
	app := &cli.App{
		Name:      "rpi-launch",
		Usage:     "deploy a service on the least busy nodes of the cluster",
		ArgsUsage: "N SERVICE [-- ANSIBLE-PLAYBOOK ARGS...]",
		Description: "Picks the N least busy alive nodes not running SERVICE (suspicion below the\n" +
			"service's phi_threshold), renders templates/SERVICE/ into BUILD-DIR/SERVICE,\n" +
			"runs playbooks/SERVICE/install.yml on them and records SERVICE on the nodes\n" +
			"where the play succeeded. Services that depend on SERVICE are re-applied.",
		Flags: append(toolkit.CommonFlags(),
			&cli.IntFlag{Name: "remove", Usage: "remove SERVICE from the `N` busiest nodes running it (uninstall.yml)"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print the plan and the rendered files; run nothing"},
			&cli.StringFlag{Name: "playbooks", Value: "playbooks", EnvVars: []string{"RPI_PLAYBOOKS"}, Usage: "`DIR` holding SERVICE/install.yml"},
			&cli.StringFlag{Name: "templates", Value: "templates", EnvVars: []string{"RPI_TEMPLATES"}, Usage: "`DIR` holding SERVICE/ templates"},
			&cli.StringFlag{Name: "build-dir", Value: "build", Usage: "`DIR` where SERVICE/ renders are written"},
			&cli.StringFlag{Name: "ansible-playbook", Value: "ansible-playbook", EnvVars: []string{"RPI_ANSIBLE_PLAYBOOK"}, Usage: "ansible-playbook `PATH`"},
		),
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		ExitErrHandler:  func(*cli.Context, error) {},
		Action: func(c *cli.Context) error {
			var n int
			var service string
			remove := c.IsSet("remove")
			switch {
			case remove && c.NArg() == 1:
				n, service = c.Int("remove"), c.Args().First()
			case remove:
				return fmt.Errorf("usage: rpi-launch --remove N SERVICE")
			case c.NArg() == 2:
				v, err := strconv.Atoi(c.Args().Get(0))
				if err != nil || v < 1 {
					return fmt.Errorf("node count %q: want a whole number of at least 1 (usage: rpi-launch N SERVICE)", c.Args().Get(0))
				}
				n, service = v, c.Args().Get(1)
			default:
				return fmt.Errorf("usage: rpi-launch N SERVICE [-- ansible-playbook args], or rpi-launch --remove N SERVICE")
			}
			if n < 1 {
				return fmt.Errorf("--remove %d: want a whole number of at least 1", n)
			}
			s, err := toolkit.Connect(c.Context, c)
			if err != nil {
				return err
			}
			l := &launcher.Launcher{
				Client:    s.Client,
				Cluster:   toolkit.ClusterName(s.Config),
				Playbooks: c.String("playbooks"),
				Templates: c.String("templates"),
				BuildDir:  c.String("build-dir"),
				Inventory: inventory.Options{User: s.Config.SSHUser, SSHKey: s.Config.SSHKey},
				Runner:    &launcher.Runner{Path: c.String("ansible-playbook"), Stdout: stdout, Stderr: stderr},
				ExtraArgs: extra,
				Out:       stdout,
			}
			if remove {
				_, err = l.Remove(c.Context, service, n, c.Bool("dry-run"))
			} else {
				_, err = l.Launch(c.Context, service, n, c.Bool("dry-run"))
			}
			return err
		},
	}
	args, extra = toolkit.Permute(app, args)
	return app.RunContext(ctx, args)
}

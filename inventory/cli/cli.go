// Package cli is the rpi-inventory command line: Ansible's dynamic-inventory
// protocol (--list, --host NAME), "hosts PLAYBOOK", "known-hosts" and
// "forget NODE". It writes to injectable writers so tests capture the
// output.
//
// Every command that reads the cluster pins node keys on first sight and
// refuses a changed one (toolkit.Pin); forget is how a reinstalled node's
// new key is accepted.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
	"github.com/rpi-cluster/rpi-cluster/internal/atomicfile"
	"github.com/rpi-cluster/rpi-cluster/internal/cliapp"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit"
	"github.com/rpi-cluster/rpi-cluster/inventory"
)

// Run runs rpi-inventory with args (args[0] is the program name).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	app := NewApp(stdout, stderr)
	args, extra := toolkit.Permute(app, args)
	if len(extra) > 0 {
		return cliapp.Usagef("rpi-inventory takes no arguments after --: %v", extra)
	}
	return app.RunContext(ctx, args)
}

// NewApp builds the rpi-inventory app writing to stdout and stderr.
func NewApp(stdout, stderr io.Writer) *cli.App {
	flags := append(toolkit.CommonFlags(),
		&cli.BoolFlag{Name: "list", Usage: "print the whole inventory as JSON (Ansible dynamic-inventory protocol)"},
		&cli.StringFlag{Name: "host", Usage: "print the variables of host `NAME` as JSON"},
	)
	return cliapp.Prepare(&cli.App{
		Name:  "rpi-inventory",
		Usage: "the live rpi-cluster as an Ansible inventory",
		Description: "Use as a dynamic inventory: ansible-playbook -i rpi-inventory site.yml.\n" +
			"Groups: all, alive, suspect, failed, left, and one per service (alive nodes only;\n" +
			"'.' and '-' in service names become '_', reserved names get the prefix service_).\n\n" +
			"Node identity keys are pinned on first sight in known_nodes.json beside the\n" +
			"workstation config; a node offering another key is refused (see forget).",
		Flags:           flags,
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return cliapp.Usagef("unexpected argument %q: use --list, --host NAME, hosts PLAYBOOK or known-hosts", c.Args().First())
			}
			if !c.Bool("list") && !c.IsSet("host") {
				return cliapp.Usagef("nothing to do: use --list, --host NAME, hosts PLAYBOOK or known-hosts")
			}
			s, nodes, err := toolkit.ConnectView(c, toolkit.Pin)
			if err != nil {
				return err
			}
			inv := inventory.Build(nodes, options(s))
			warn(stderr, inv.LeftOut)
			var data []byte
			if c.Bool("list") {
				data, err = inv.ListJSON()
			} else {
				data, err = inv.HostJSON(c.String("host"))
			}
			if err != nil {
				return err
			}
			_, err = stdout.Write(data)
			return err
		},
		Commands: []*cli.Command{
			{
				Name:      "hosts",
				Usage:     "write an INI hosts file for the groups PLAYBOOK's plays target",
				ArgsUsage: "PLAYBOOK",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write to `FILE` (atomically) instead of stdout"},
					&cli.StringSliceFlag{Name: "assign", Usage: "fill `GROUP=N` with the N least busy alive nodes (repeatable)"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return cliapp.Usagef("hosts: want exactly one PLAYBOOK, got %d arguments", c.NArg())
					}
					assign, err := inventory.ParseAssign(c.StringSlice("assign"))
					if err != nil {
						return err
					}
					groups, warnings, err := inventory.PlaybookGroups(c.Args().First())
					if err != nil {
						return err
					}
					s, nodes, err := toolkit.ConnectView(c, toolkit.Pin)
					if err != nil {
						return err
					}
					data, more := inventory.HostsFile(nodes, groups, assign, options(s))
					warn(stderr, append(warnings, more...))
					return output(stdout, c.String("output"), data, 0o644)
				},
			},
			{
				Name:  "known-hosts",
				Usage: "write the SSH host keys nodes signed for themselves in known_hosts format",
				Description: "Only keys from signed records that verify, name the node and give its address\n" +
					"are written, and only when the record's identity key is the one pinned for the\n" +
					"node (pinned on first sight). Nodes without a signed record (older agents) are\n" +
					"skipped with a warning.",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write to `FILE` (atomically); default: known_hosts from the workstation config, else stdout"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() != 0 {
						return cliapp.Usagef("known-hosts: unexpected argument %q", c.Args().First())
					}
					s, nodes, err := toolkit.ConnectView(c, toolkit.Pin)
					if err != nil {
						return err
					}
					data, warnings := inventory.KnownHosts(nodes, s.Pins)
					warn(stderr, warnings)
					path := c.String("output")
					if path == "" {
						path = s.Config.KnownHosts
					}
					return output(stdout, path, data, 0o644)
				},
			},
			{
				Name:      "forget",
				Usage:     "forget the identity keys pinned for NODEs, so the next command pins the key it sees",
				ArgsUsage: "NODE...",
				Description: "The tools pin every node's identity key on first sight and refuse to go on when\n" +
					"a node offers another key. If the node's card was reinstalled (a new key is\n" +
					"expected), forget it; otherwise find out which machine answers under its name.",
				Action: func(c *cli.Context) error {
					if c.NArg() == 0 {
						return cliapp.Usagef("usage: rpi-inventory forget NODE...")
					}
					return forget(c, stdout)
				},
			},
		},
	})
}

// forget removes the pins of the nodes named on the command line. A name
// that is not pinned is an error, after the others are forgotten.
func forget(c *cli.Context, stdout io.Writer) error {
	configPath := toolkit.ConfigPath(c)
	cfg, err := client.LoadWorkstationConfig(configPath)
	if err != nil {
		return err
	}
	pins, err := identity.OpenPins(toolkit.PinsPath(configPath, cfg))
	if err != nil {
		return err
	}
	var missing []string
	for _, name := range c.Args().Slice() {
		pub, ok := pins.Lookup(name)
		if !ok {
			missing = append(missing, apitypes.Quote(name))
			continue
		}
		if err := pins.Remove(name); err != nil {
			return fmt.Errorf("forget %s: %w", name, err)
		}
		fmt.Fprintf(stdout, "forgot node %s (key %s) in %s; the next command pins the key it sees\n", name, identity.Fingerprint(pub), pins.Path())
	}
	if len(missing) > 0 {
		return fmt.Errorf("forget: no key pinned for %s in %s; pinned: %s", strings.Join(missing, ", "), pins.Path(), orNone(pins.Names()))
	}
	return nil
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "(none)"
	}
	return strings.Join(names, ", ")
}

func options(s *toolkit.Session) inventory.Options {
	return inventory.Options{User: s.Config.SSHUser, SSHKey: s.Config.SSHKey, KnownHosts: s.Config.KnownHosts}
}

func warn(w io.Writer, warnings []string) {
	for _, m := range warnings {
		fmt.Fprintf(w, "warning: %s\n", m)
	}
}

func output(stdout io.Writer, path string, data []byte, perm os.FileMode) error {
	if path == "" || path == "-" {
		_, err := stdout.Write(data)
		return err
	}
	return atomicfile.WriteFile(path, data, perm)
}

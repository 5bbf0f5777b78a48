package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/internal/cliapp"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit"
)

// RunMeta runs rpi-meta with args (args[0] is the program name).
func RunMeta(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	app := metaApp(stdout)
	args, extra := toolkit.Permute(app, args)
	if len(extra) > 0 {
		return cliapp.Usagef("rpi-meta takes no arguments after --: %v", extra)
	}
	app.Writer, app.ErrWriter = stdout, stderr
	return app.RunContext(ctx, args)
}

// MetaApp returns the rpi-meta application, for the documentation
// generator; RunMeta is how it runs.
func MetaApp() *cli.App { return metaApp(io.Discard) }

func metaApp(stdout io.Writer) *cli.App {
	write := func(add bool) cli.ActionFunc {
		return func(c *cli.Context) error {
			if c.NArg() != 2 {
				return cliapp.Usagef("usage: rpi-meta %s NODE SERVICE", c.Command.Name)
			}
			target, service := c.Args().Get(0), c.Args().Get(1)
			if err := apitypes.ValidateServiceName(service); err != nil {
				return fmt.Errorf("%s: %w", c.Command.Name, err)
			}
			s, nodes, err := toolkit.ConnectView(c, toolkit.Pin)
			if err != nil {
				return err
			}
			node, err := resolveNode(nodes, target)
			if err != nil {
				return fmt.Errorf("%s: %w", c.Command.Name, err)
			}
			nc, err := toolkit.NodeClient(s.Client, node)
			if err != nil {
				return err
			}
			var res apitypes.ServiceResult
			if add {
				res, err = nc.AddService(c.Context, service)
			} else {
				res, err = nc.RemoveService(c.Context, service)
			}
			if err != nil {
				return fmt.Errorf("%s %s on %s: %w", c.Command.Name, service, apitypes.Quote(node.Name), err)
			}
			if c.Bool(toolkit.FlagJSON) {
				return json.NewEncoder(stdout).Encode(res)
			}
			state := "unchanged"
			if res.Changed {
				state = "changed"
			}
			fmt.Fprintf(stdout, "%s: %s (%s); services: %s\n", node.Name, service, state, apitypes.Printable(strings.Join(res.Services, ", ")))
			return nil
		}
	}
	app := cliapp.Prepare(&cli.App{
		Name:  "rpi-meta",
		Usage: "read and change which services each node records",
		Description: "add-service and remove-service pin node identity keys on first sight and refuse\n" +
			"a node that offers another key (see rpi-inventory forget); list pins nothing.",
		Flags:           append(toolkit.CommonFlags(), toolkit.JSONFlag()),
		Writer:          stdout,
		HideHelpCommand: true,
		Commands: []*cli.Command{
			{Name: "add-service", Usage: "record SERVICE on NODE (name or IP)", ArgsUsage: "NODE SERVICE", Action: write(true)},
			{Name: "remove-service", Usage: "remove SERVICE from NODE (name or IP)", ArgsUsage: "NODE SERVICE", Action: write(false)},
			{
				Name:  "list",
				Usage: "list the nodes and their services",
				Action: func(c *cli.Context) error {
					if c.NArg() != 0 {
						return cliapp.Usagef("list: unexpected argument %q", c.Args().First())
					}
					_, nodes, err := toolkit.ConnectView(c, toolkit.NoPin)
					if err != nil {
						return err
					}
					sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
					if c.Bool(toolkit.FlagJSON) {
						return json.NewEncoder(stdout).Encode(nodes)
					}
					tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "NAME\tADDRESS\tSTATUS\tSERVICES")
					for _, n := range nodes {
						svcs := strings.Join(n.Services, ",")
						if svcs == "" {
							svcs = "-"
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", apitypes.Printable(n.Name), apitypes.Printable(n.Address), apitypes.Printable(n.Status), apitypes.Printable(svcs))
					}
					return tw.Flush()
				},
			},
		},
	})
	return app
}

// resolveNode finds target by node name, else by address. An address shared
// by several nodes is ambiguous.
func resolveNode(nodes []apitypes.Node, target string) (apitypes.Node, error) {
	var byAddr []apitypes.Node
	for _, n := range nodes {
		if n.Name == target {
			return n, nil
		}
		if n.Address == target {
			byAddr = append(byAddr, n)
		}
	}
	switch len(byAddr) {
	case 1:
		return byAddr[0], nil
	case 0:
		names := make([]string, len(nodes))
		for i, n := range nodes {
			names[i] = n.Name
		}
		sort.Strings(names)
		return apitypes.Node{}, fmt.Errorf("no node named or addressed %s; known nodes: %s", apitypes.Quote(target), apitypes.Printable(strings.Join(names, ", ")))
	}
	var names []string
	for _, n := range byAddr {
		names = append(names, n.Name)
	}
	return apitypes.Node{}, fmt.Errorf("address %s is shared by %s; give the node name", apitypes.Quote(target), apitypes.Printable(strings.Join(names, ", ")))
}

package command

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
)

func membersCommand() *cli.Command {
	return &cli.Command{
		Name:  "members",
		Usage: "print the cluster as the local agent sees it",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "agent", Usage: "agent `URL` to ask", Value: "http://127.0.0.1:8080", EnvVars: []string{"RPI_AGENT"}},
			&cli.BoolFlag{Name: "json", Usage: "print the nodes as JSON"},
		},
		Action: func(c *cli.Context) error {
			cl, err := client.New(c.String("agent"), "")
			if err != nil {
				return err
			}
			nodes, err := cl.Nodes(c.Context)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(nodes)
			}
			return WriteMembersTable(c.App.Writer, nodes)
		},
	}
}

// WriteMembersTable prints nodes as an aligned table, one row per node.
func WriteMembersTable(w io.Writer, nodes []apitypes.Node) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tSTATUS\tPHI\tCPU\tMEM\tLOAD\tSERVICES")
	for _, n := range nodes {
		m := n.Monitoring
		mem := "-"
		if m.MemTotal > 0 {
			mem = fmt.Sprintf("%.0f%%", 100*float64(m.MemUsed)/float64(m.MemTotal))
		}
		name := apitypes.Printable(n.Name)
		if n.Self {
			name += "*"
		}
		// Everything here but the figures was gossiped: Printable keeps a
		// member's text from driving the terminal.
		fmt.Fprintf(tw, "%s\t%s:%d\t%s\t%.1f/%.0f\t%.0f%%\t%s\t%.2f %.2f %.2f\t%s\n",
			name, apitypes.Printable(n.Address), n.GossipPort, apitypes.Printable(n.Status), n.Phi, n.PhiThreshold,
			m.CPUPercent, mem, m.Load1, m.Load5, m.Load15, apitypes.Printable(strings.Join(n.Services, ",")))
	}
	return tw.Flush()
}

package command

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/urfave/cli/v2"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/internal/cliapp"
)

// forceLeaveCommand removes a failed or left node from the cluster's views
// now, rather than after reap_failed_after, as Serf's force-leave does.
func forceLeaveCommand() *cli.Command {
	return &cli.Command{
		Name:      "force-leave",
		Usage:     "remove a failed or left node from the cluster's views now",
		ArgsUsage: "NAME",
		Description: "Agents forget a failed node after reap_failed_after (24h by default) and a left one after\n" +
			"reap_left_after (1h). This removes NAME at once from the agent asked, which tells its peers to\n" +
			"remove it too. Only a node failed or left everywhere goes: an agent that holds NAME alive keeps it,\n" +
			"and a node alive at the agent asked is refused (stop it first). If it comes back it simply joins again.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "agent", Usage: "agent `URL` to ask", Value: "http://127.0.0.1:8080", EnvVars: []string{"RPI_AGENT"}},
			&cli.StringFlag{Name: "token", Usage: "API `TOKEN` the agent requires for writes (visible to ps: prefer --token-file)", EnvVars: []string{"RPI_TOKEN"}},
			tokenFileFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cliapp.Usagef("force-leave: give exactly one node name: rpi-agent force-leave NAME")
			}
			name := c.Args().First()
			if err := apitypes.ValidateNodeName(name); err != nil {
				return cli.Exit("force-leave: "+err.Error(), 2)
			}
			token, err := clientToken(c)
			if err != nil {
				return err
			}
			cl, err := client.New(c.String("agent"), token)
			if err != nil {
				return err
			}
			res, err := cl.ForceLeave(c.Context, name)
			var se *client.StatusError
			switch {
			case errors.As(err, &se) && se.Code == http.StatusUnauthorized:
				return cli.Exit(fmt.Sprintf("force-leave %s: refused: the agent at %s needs the API token: pass --token or set RPI_TOKEN", name, cl.BaseURL), 1)
			case errors.As(err, &se) && (se.Code == http.StatusNotFound || se.Code == http.StatusConflict):
				return cli.Exit(apitypes.Printable(se.Message), 1) // it says what to do
			case err != nil:
				return err
			}
			fmt.Fprintf(c.App.Writer, "%s: removed %s (%s at %s); its peers are asked to remove it too\n",
				apitypes.Printable(res.Agent), apitypes.Printable(res.Node.Name), apitypes.Printable(res.Node.Status),
				apitypes.Printable(res.Node.Address))
			return nil
		},
	}
}

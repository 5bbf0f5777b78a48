package command

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/urfave/cli/v2"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
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
		Flags: writeFlags("agent `URL` to ask"),
		Action: func(c *cli.Context) error {
			name, cl, err := nodeArgAndClient(c, "force-leave")
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

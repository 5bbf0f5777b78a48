package command

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/urfave/cli/v2"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit"
)

// rekeyCommand accepts a reinstalled node's new signing key on every agent
// of the cluster. Each agent pins a name to the key it first saw sign for
// it and refuses any other, as ssh does with host keys; after a card is
// reinstalled the node has a new key, and every peer must be told,
// explicitly and with the token, to accept it.
func rekeyCommand() *cli.Command {
	return &cli.Command{
		Name:      "rekey",
		Usage:     "accept a reinstalled node's new signing key on every agent of the cluster",
		ArgsUsage: "NAME",
		Description: "Every agent pins a node name to the signing key it first saw and refuses messages for that name\n" +
			"signed by another key (GET /v1/conflicts lists them). After a node's card is reinstalled its key is new:\n" +
			"start it, wait until the agents list the conflict, then run this to pin NAME to the key it now offers.\n" +
			"It asks each agent listed by --agent's /v1/nodes; agents that see no other key for NAME are left as they are.",
		Flags: writeFlags("agent `URL` whose member list says which agents to ask"),
		Action: func(c *cli.Context) error {
			name, base, err := nodeArgAndClient(c, "rekey")
			if err != nil {
				return err
			}
			nodes, err := base.Nodes(c.Context)
			if err != nil {
				return err
			}
			return rekeyAll(c, base, nodes, name)
		},
	}
}

// rekeyAll asks every alive agent but NAME's own to rekey NAME and prints
// what each answered. It fails if an agent could not be asked, or if none
// had a conflict to resolve.
func rekeyAll(c *cli.Context, base *client.Client, nodes []apitypes.Node, name string) error {
	w := c.App.Writer
	var rekeyed, failed int
	for _, n := range nodes {
		if n.Name == name || (n.Status != apitypes.StatusAlive && n.Status != apitypes.StatusSuspect) {
			continue
		}
		who := apitypes.Printable(n.Name)
		nc, err := toolkit.NodeClient(base, n)
		if err == nil {
			var res apitypes.RekeyResult
			res, err = nc.Rekey(c.Context, name)
			if err == nil {
				rekeyed++
				fmt.Fprintf(w, "%s: %s now pinned to %s (was %s)\n", who, name,
					apitypes.Printable(res.Conflict.OfferedFingerprint), apitypes.Printable(res.Conflict.PinnedFingerprint))
				continue
			}
		}
		var se *client.StatusError
		switch {
		case errors.As(err, &se) && se.Code == http.StatusConflict:
			fmt.Fprintf(w, "%s: no other key seen for %s; left as it is\n", who, name)
		case errors.As(err, &se) && se.Code == http.StatusUnauthorized:
			failed++
			fmt.Fprintf(w, "%s: refused: the agent needs the API token (--token or RPI_TOKEN)\n", who)
		default:
			failed++
			fmt.Fprintf(w, "%s: %v\n", who, err)
		}
	}
	switch {
	case failed > 0:
		return cli.Exit(fmt.Sprintf("rekey %s: %d agent(s) could not be asked; run it again once they answer", name, failed), 1)
	case rekeyed == 0:
		return cli.Exit(fmt.Sprintf("rekey %s: no agent sees another key for it: start the reinstalled node first, and check GET /v1/conflicts", name), 1)
	}
	return nil
}

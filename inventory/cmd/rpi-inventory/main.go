// Command rpi-inventory presents the live rpi-cluster to Ansible: a dynamic
// inventory (--list, --host), INI hosts files for a playbook's groups and a
// known_hosts file from the SSH host keys the nodes signed. It pins node
// identity keys on first sight; forget drops a pin.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/rpi-cluster/rpi-cluster/internal/cliapp"
	"github.com/rpi-cluster/rpi-cluster/inventory/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(cliapp.Exit("rpi-inventory", err, os.Stderr))
}

// Command rpi-inventory presents the live rpi-cluster to Ansible: a dynamic
// inventory (--list, --host), INI hosts files for a playbook's groups and a
// known_hosts file from the SSH host keys the nodes signed. It pins node
// identity keys on first sight; forget drops a pin.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rpi-cluster/rpi-cluster/inventory/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "rpi-inventory: %v\n", err)
		os.Exit(1)
	}
}

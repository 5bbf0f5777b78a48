// Command rpi-meta lists and changes the services each rpi-cluster node
// records in its metadata, writing through that node's own agent.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/rpi-cluster/rpi-cluster/internal/cliapp"
	"github.com/rpi-cluster/rpi-cluster/launcher/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.RunMeta(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(cliapp.Exit("rpi-meta", err, os.Stderr))
}

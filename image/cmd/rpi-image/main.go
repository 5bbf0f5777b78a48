// Command rpi-image prepares the image every Pi of an rpi-cluster is
// flashed with, and the node root filesystem of the virtual cluster.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/rpi-cluster/rpi-cluster/image/cli"
	"github.com/rpi-cluster/rpi-cluster/internal/cliapp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(cliapp.Exit("rpi-image", err, os.Stderr))
}

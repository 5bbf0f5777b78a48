// Command rpi-meta lists and changes the services each rpi-cluster node
// records in its metadata, writing through that node's own agent.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rpi-cluster/rpi-cluster/launcher/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.RunMeta(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "rpi-meta: %v\n", err)
		os.Exit(1)
	}
}

// Command rpi-launch deploys a service on the least busy nodes of an
// rpi-cluster: placement, templates rendered with the live cluster, the
// service's install playbook, and the result recorded on each node.
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
	// The first Ctrl-C stops cleanly (a running play is interrupted and
	// waited for); a second one exits at once.
	go func() {
		<-ctx.Done()
		stop()
	}()
	err := cli.RunLaunch(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(cliapp.Exit("rpi-launch", err, os.Stderr))
}

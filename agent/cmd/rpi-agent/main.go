// Command rpi-agent runs on every Raspberry Pi of the cluster.
package main

import (
	"os"

	"github.com/rpi-cluster/rpi-cluster/agent/command"
	"github.com/rpi-cluster/rpi-cluster/internal/cliapp"
)

func main() {
	os.Exit(cliapp.Exit("rpi-agent", command.App().Run(os.Args), os.Stderr))
}

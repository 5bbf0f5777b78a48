// Command rpi-agent runs on every Raspberry Pi of the cluster.
package main

import (
	"fmt"
	"os"

	"github.com/rpi-cluster/rpi-cluster/agent/command"
)

func main() {
	if err := command.App().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "rpi-agent:", err)
		os.Exit(1)
	}
}

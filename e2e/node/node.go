// Package node holds what is baked into the virtual Pi container image on top
// of the node root filesystem: the container entrypoint that stands in for
// systemd.
package node

import _ "embed"

// Entrypoint is the container's process 1 (entrypoint.sh): first-boot step,
// sshd, then rpi-agent with signals forwarded.
//
//go:embed entrypoint.sh
var Entrypoint []byte

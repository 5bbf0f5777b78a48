// Package toolkit is the glue shared by the workstation tools (rpi-inventory,
// rpi-meta, rpi-launch): the common flags, finding an agent, per-node
// clients, the busy score, atomic file writes and GNU-style argument order.
//
// It speaks to the cluster only through agent/client and finds agents on the
// LAN through internal/mdns, the schema it shares with the agent's discovery;
// it never imports agent internals.
package toolkit

// Package hooks runs the agent's event handlers: user commands started
// when a member joins, leaves, fails or changes, in the manner of Serf's
// event handlers.
//
// A Hook names an event (or "*"), optionally a service — the hook then runs
// only for nodes that run it — and a command. The command is run by
// /bin/sh -c, as Serf does: handlers are written by whoever writes the
// agent's configuration (root), so the shell grants nothing new, and it
// lets one line hold arguments with quotes, pipes and redirections. Event
// data is never put into the command line: it arrives in RPI_* environment
// variables and as JSON on stdin, so a node name cannot inject a command.
//
// Runs are serial, one at a time per agent, off the gossip path: Submit
// puts an event on a bounded queue and never blocks; when the queue is
// full the event is dropped and counted. Each run is bounded in time (the
// command's whole process group is killed when it overruns) and in
// captured output; the outcome is logged.
package hooks

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// Event names a hook can ask for.
const (
	MemberJoin   = "member-join"
	MemberLeave  = "member-leave"
	MemberFailed = "member-failed"
	MemberUpdate = "member-update"
	// MemberReap: a failed or left member was forgotten, after
	// reap_failed_after or reap_left_after, or by force-leave (Serf's
	// member-reap).
	MemberReap = "member-reap"
	// Any matches every event.
	Any = "*"
)

// Hook is one configured event handler, a list entry of the agent's
// event_handlers key.
type Hook struct {
	// Event is member-join, member-leave, member-failed, member-update,
	// member-reap or "*" for all of them.
	Event string `yaml:"event" json:"event"`
	// Service, when set, limits the hook to nodes that run this service
	// (as last gossiped: a failed node still lists what it ran).
	Service string `yaml:"service,omitempty" json:"service,omitempty"`
	// Command is run with /bin/sh -c.
	Command string `yaml:"command" json:"command"`
}

// Validate says what is wrong with the hook, if anything.
func (h Hook) Validate() error {
	switch h.Event {
	case MemberJoin, MemberLeave, MemberFailed, MemberUpdate, MemberReap, Any:
	case "":
		return fmt.Errorf("event is missing: want %s, %s, %s, %s, %s or \"*\"", MemberJoin, MemberLeave, MemberFailed, MemberUpdate, MemberReap)
	default:
		return fmt.Errorf("unknown event %q: want %s, %s, %s, %s, %s or \"*\"", h.Event, MemberJoin, MemberLeave, MemberFailed, MemberUpdate, MemberReap)
	}
	if strings.TrimSpace(h.Command) == "" {
		return fmt.Errorf("command is empty: give the script to run, e.g. /usr/local/bin/on-%s", strings.Trim(h.Event, "*"))
	}
	if h.Service != "" {
		if err := apitypes.ValidateServiceName(h.Service); err != nil {
			return fmt.Errorf("service: %w", err)
		}
	}
	return nil
}

// Matches reports whether the hook wants ev.
func (h Hook) Matches(ev Event) bool {
	if h.Event != Any && h.Event != ev.Type {
		return false
	}
	return h.Service == "" || slices.Contains(ev.Node.Services, h.Service)
}

// Node is the member an event is about.
type Node struct {
	Name       string   `json:"name"`
	Address    string   `json:"address"`
	GossipPort int      `json:"gossip_port"`
	HTTPPort   int      `json:"http_port"`
	Status     string   `json:"status"`
	Services   []string `json:"services"`
}

// Event is a membership change as handed to hooks.
type Event struct {
	// Type is one of the Member* event names.
	Type string    `json:"event"`
	Node Node      `json:"node"`
	Time time.Time `json:"time"`
	// HasRecord is false while the node's gossiped record (its services,
	// HTTP port) has not arrived yet, as is usual when memberlist reports
	// a join. Submit holds such a join back until the record comes.
	HasRecord bool `json:"-"`
}

// digest is what makes a member-update worth reporting: monitoring
// samples change every few seconds and are not.
func (n Node) digest() string {
	s := slices.Clone(n.Services)
	slices.Sort(s)
	return fmt.Sprintf("%s|%d|%d|%s", n.Address, n.GossipPort, n.HTTPPort, strings.Join(s, ","))
}

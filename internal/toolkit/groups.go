package toolkit

import (
	"strings"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// ServiceGroupPrefix is prepended to a service's inventory group that would
// collide with a reserved group name or start with a digit.
const ServiceGroupPrefix = "service_"

var reservedGroups = map[string]bool{
	"all": true, "ungrouped": true,
	apitypes.StatusAlive: true, apitypes.StatusSuspect: true, apitypes.StatusFailed: true, apitypes.StatusLeft: true,
}

// ReservedGroup reports whether g is one of the groups every inventory has:
// Ansible's all and ungrouped, and the status groups.
func ReservedGroup(g string) bool { return reservedGroups[g] }

// GroupName is the Ansible group of service in the inventories the tools
// write. Every character other than a lowercase letter, digit or '_'
// becomes '_', and a name that would collide with a reserved group or
// starts with a digit gets ServiceGroupPrefix: "web.api-v2" is group
// "web_api_v2", "alive" is "service_alive", "9p" is "service_9p". It lives
// here, beside the Gate, because a node named like a group must be left out
// before any tool sees it (Ansible would take "--limit web" for the group).
func GroupName(service string) string {
	var b strings.Builder
	for _, r := range service {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_':
			b.WriteRune(r)
		case r >= 'A' && r <= 'Z':
			b.WriteRune(r - 'A' + 'a')
		default:
			b.WriteByte('_')
		}
	}
	g := b.String()
	if g == "" || reservedGroups[g] || (g[0] >= '0' && g[0] <= '9') {
		g = ServiceGroupPrefix + g
	}
	return g
}

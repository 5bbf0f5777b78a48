package inventory

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// KnownHosts writes the nodes' gossiped SSH host keys in known_hosts format,
// one line per key naming the node by name and address, so Ansible can keep
// host-key checking on. Keys that do not parse are skipped and reported in
// warnings, as are nodes that gossip no key at all.
func KnownHosts(nodes []apitypes.Node) (data []byte, warnings []string) {
	sorted := append([]apitypes.Node{}, nodes...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	var b bytes.Buffer
	for _, n := range sorted {
		if len(n.SSHHostKeys) == 0 {
			warnings = append(warnings, fmt.Sprintf("node %s (%s): no SSH host keys gossiped; is its agent older, or sshd missing?", n.Name, n.Address))
			continue
		}
		var names []string
		for _, h := range []string{n.Name, n.Address} {
			if h != "" && !contains(names, h) {
				names = append(names, h)
			}
		}
		for _, k := range n.SSHHostKeys {
			key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k))
			if err != nil {
				warnings = append(warnings, fmt.Sprintf("node %s: invalid SSH host key %q: %v", n.Name, abbreviate(k), err))
				continue
			}
			b.WriteString(knownhosts.Line(names, key))
			b.WriteByte('\n')
		}
	}
	return b.Bytes(), warnings
}

func abbreviate(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}

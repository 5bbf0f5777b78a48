package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit"
)

// KnownHosts writes, in known_hosts format, the SSH host keys nodes signed
// for themselves: one line per key naming the node by name and address, so
// Ansible can keep host-key checking on. A node's keys are taken from its
// signed record, and only when the record verifies, is the node's (name and
// address, toolkit.VerifyRecord) and carries the key pinned for the node in
// pins; the unsigned ssh_host_keys an agent reports are never written.
// Every node left out, and every key that does not parse, is reported in
// warnings.
func KnownHosts(nodes []apitypes.Node, pins *identity.Pins) (data []byte, warnings []string) {
	sorted := append([]apitypes.Node{}, nodes...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	var b bytes.Buffer
	for _, n := range sorted {
		if err := toolkit.CheckNode(n); err != nil {
			warnings = append(warnings, fmt.Sprintf("node %s left out: %v", apitypes.Quote(n.Name), err))
			continue
		}
		name := n.Name
		rec, pub, err := toolkit.VerifyRecord(n)
		switch {
		case errors.Is(err, toolkit.ErrNoRecord):
			warnings = append(warnings, fmt.Sprintf("node %s: no signed record (its agent predates signed records, or the agent asked does not pass them on); its SSH host keys are not written", name))
			continue
		case err != nil:
			warnings = append(warnings, fmt.Sprintf("node %s: %v; its SSH host keys are not written", name, err))
			continue
		}
		if pinned, ok := pins.Lookup(n.Name); !ok || !identity.Equal(pinned, pub) {
			warnings = append(warnings, fmt.Sprintf("node %s: its record's key %s is not the one pinned for it; its SSH host keys are not written", name, identity.Fingerprint(pub)))
			continue
		}
		if len(rec.SSHHostKeys) == 0 {
			warnings = append(warnings, fmt.Sprintf("node %s (%s): no SSH host keys in its signed record; is sshd missing?", name, n.Address))
			continue
		}
		hosts := []string{n.Name}
		if n.Address != n.Name {
			hosts = append(hosts, n.Address)
		}
		for _, k := range rec.SSHHostKeys {
			key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k))
			if err != nil {
				warnings = append(warnings, fmt.Sprintf("node %s: invalid SSH host key %s: %v", name, apitypes.Quote(abbreviate(k)), err))
				continue
			}
			b.WriteString(knownhosts.Line(hosts, key))
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

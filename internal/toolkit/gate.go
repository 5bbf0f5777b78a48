package toolkit

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
)

// Gate is the one check between what an agent reports and what the
// workstation tools do with it. Every node list a session's client
// receives passes it (client.Client.Gate), so nothing gossiped reaches an
// INI file, a known_hosts line, an inventory, a --limit, a template or a
// terminal without it. A node is left out, with one warning, when:
//
//   - its name fails apitypes.ValidateNodeName (spaces, '=', ',', control
//     characters, more than 63 characters, Ansible's reserved names);
//   - its address is not a plain IP address;
//   - one of its services fails apitypes.ValidateServiceName;
//   - another node in the same answer has its name;
//   - its name is the inventory group of a service in the view (GroupName),
//     which Ansible would take for the group.
//
// Free text a node reports (status, model, arch, version) is made
// printable (apitypes.Printable) for the templates and tables it reaches.
//
// With Pins set, the Gate also trusts keys, not names. A node that carries
// a signed record must have a record that verifies (VerifyRecord), names
// it and gives its address; its identity key is then pinned on first
// sight, and a key other than the pinned one fails the whole answer with
// an error wrapping identity.ErrKeyChanged that says how to accept it. A
// pinned node whose record is missing is left out. A node of an older
// agent, without a record and never pinned, passes on its name alone.
//
// A Gate is safe for concurrent use.
type Gate struct {
	// Pins are the workstation's pinned node keys; nil checks names only.
	Pins *identity.Pins
	// Warn receives the warnings ("warning: ...") and first-sight notes
	// ("note: ..."), each distinct line once; nil discards them.
	Warn io.Writer

	mu   sync.Mutex
	said map[string]bool
}

// say writes one line to Warn unless it was written before.
func (g *Gate) say(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.said[line] {
		return
	}
	if g.said == nil {
		g.said = map[string]bool{}
	}
	g.said[line] = true
	if g.Warn != nil {
		fmt.Fprintln(g.Warn, line)
	}
}

func (g *Gate) leaveOut(name string, why error) {
	g.say("warning: node %s left out: %v", quoteShort(name), why)
}

// quoteShort is apitypes.Quote of s, cut short when s is longer than any
// valid name: a warning about a 64 KiB name need not print it.
func quoteShort(s string) string {
	if len(s) <= 64 {
		return apitypes.Quote(s)
	}
	return fmt.Sprintf("%s... (%d bytes)", apitypes.Quote(s[:40]), len(s))
}

// Nodes returns the nodes the tools may use, in their order. The error is
// a refusal: a pinned node offered another key.
func (g *Gate) Nodes(nodes []apitypes.Node) ([]apitypes.Node, error) {
	seen := make(map[string]int, len(nodes))
	for _, n := range nodes {
		seen[n.Name]++
	}
	valid := make([]apitypes.Node, 0, len(nodes))
	for _, n := range nodes {
		if err := CheckNode(n); err != nil {
			g.leaveOut(n.Name, err)
			continue
		}
		if seen[n.Name] > 1 {
			g.leaveOut(n.Name, fmt.Errorf("%d nodes in the agent's answer have that name", seen[n.Name]))
			continue
		}
		valid = append(valid, n)
	}
	groups := map[string]string{}
	for _, n := range valid {
		for _, s := range n.Services {
			groups[GroupName(s)] = s
		}
	}
	out := valid[:0]
	var refusals []error
	pinned := false
	for _, n := range valid {
		if svc, ok := groups[strings.ToLower(n.Name)]; ok {
			g.leaveOut(n.Name, fmt.Errorf("it is named like the inventory group of service %s, which Ansible would take for the group; rename the node", svc))
			continue
		}
		if g.Pins != nil {
			keep, first, err := g.trust(n)
			pinned = pinned || first
			if err != nil {
				refusals = append(refusals, err)
				continue
			}
			if !keep {
				continue
			}
		}
		n.Status = apitypes.Printable(n.Status)
		n.Model = apitypes.Printable(n.Model)
		n.Arch = apitypes.Printable(n.Arch)
		n.Version = apitypes.Printable(n.Version)
		out = append(out, n)
	}
	if pinned {
		if err := g.flush(); err != nil {
			return nil, err
		}
	}
	if len(refusals) > 0 {
		return nil, errors.Join(refusals...)
	}
	return out, nil
}

// flush saves the pins, making their directory first (0700, as ssh makes
// ~/.ssh): a workstation that names its agents with --agent alone may
// have no config directory yet.
func (g *Gate) flush() error {
	if dir := filepath.Dir(g.Pins.Path()); g.Pins.Path() != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("save pinned node keys: %w", err)
		}
	}
	return g.Pins.Flush()
}

// CheckNode applies the Gate's rules for one node on its own: its name,
// its address and its services.
func CheckNode(n apitypes.Node) error {
	if err := apitypes.ValidateNodeName(n.Name); err != nil {
		return err
	}
	if addr, err := netip.ParseAddr(n.Address); err != nil || addr.Zone() != "" {
		return fmt.Errorf("address %s is not an IP address", apitypes.Quote(n.Address))
	}
	for _, s := range n.Services {
		if err := apitypes.ValidateServiceName(s); err != nil {
			return err
		}
	}
	return nil
}

// trust checks n's signed record against the pins: keep says whether n
// may be used, first whether its key was pinned now; err is a refusal.
func (g *Gate) trust(n apitypes.Node) (keep, first bool, err error) {
	pinned, isPinned := g.Pins.Lookup(n.Name)
	_, pub, err := VerifyRecord(n)
	switch {
	case errors.Is(err, ErrNoRecord) && isPinned:
		g.leaveOut(n.Name, fmt.Errorf("its key is pinned (%s) but the agent's answer carries no signed record for it; ask another agent with --agent", identity.Fingerprint(pinned)))
		return false, false, nil
	case errors.Is(err, ErrNoRecord):
		return true, false, nil // an agent from before signed records
	case err != nil:
		g.leaveOut(n.Name, err)
		return false, false, nil
	case n.IdentityKey != "" && n.IdentityKey != identity.EncodePublicKey(pub):
		g.leaveOut(n.Name, errors.New("the agent vouches for another identity key than the one its record carries"))
		return false, false, nil
	}
	first, err = g.Pins.Check(n.Name, pub)
	if errors.Is(err, identity.ErrKeyChanged) {
		return false, false, fmt.Errorf("refuse node %s: %w: if its card was reinstalled, run `rpi-inventory forget %s` (or remove %q from %s) and run this again; if not, another machine is answering as %s",
			n.Name, err, n.Name, n.Name, g.Pins.Path(), n.Name)
	}
	if err != nil {
		return false, false, fmt.Errorf("pin node %s: %w", n.Name, err)
	}
	if first {
		g.say("note: pinned node %s to key %s (first sight) in %s", n.Name, identity.Fingerprint(pub), g.Pins.Path())
	}
	return true, first, nil
}

// Desired returns the desired-state entries whose service names are valid,
// leaving the others out with a warning.
func (g *Gate) Desired(ds []apitypes.DesiredService) []apitypes.DesiredService {
	out := make([]apitypes.DesiredService, 0, len(ds))
	for _, d := range ds {
		if err := apitypes.ValidateServiceName(d.Service); err != nil {
			g.say("warning: desired state of %s left out: %v", quoteShort(d.Service), err)
			continue
		}
		d.UpdatedBy = apitypes.Printable(d.UpdatedBy)
		out = append(out, d)
	}
	return out
}

// ErrNoRecord is VerifyRecord's answer for a node without a signed record
// (its agent, or the agent asked, is older than signed records).
var ErrNoRecord = errors.New("no signed record")

// VerifyRecord opens n's signed record (identity.OpenRecord: the signature
// against the key the record carries) and checks that it is n's: same
// name, same address. It returns the record's claims and key; whether that
// key is the one pinned for n is the caller's question.
func VerifyRecord(n apitypes.Node) (identity.RecordClaims, ed25519.PublicKey, error) {
	if n.SignedRecord == nil {
		return identity.RecordClaims{}, nil, ErrNoRecord
	}
	claims, pub, err := identity.OpenRecord(n.SignedRecord.Body, n.SignedRecord.Sig)
	if err != nil {
		return claims, nil, fmt.Errorf("its signed record does not verify (%v)", err)
	}
	if claims.Name != n.Name {
		return claims, nil, fmt.Errorf("its signed record is of node %s", apitypes.Quote(claims.Name))
	}
	if !sameAddr(claims.Addr, n.Address) {
		return claims, nil, fmt.Errorf("its signed record gives address %s, the agent %s", apitypes.Quote(claims.Addr), apitypes.Quote(n.Address))
	}
	return claims, pub, nil
}

func sameAddr(a, b string) bool {
	pa, errA := netip.ParseAddr(a)
	pb, errB := netip.ParseAddr(b)
	if errA != nil || errB != nil {
		return a == b
	}
	return pa.Unmap() == pb.Unmap()
}

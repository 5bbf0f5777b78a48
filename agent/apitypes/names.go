package apitypes

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ValidName reports whether name matches ^[a-z0-9][a-z0-9_.-]{0,62}$, or
// with upper ^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$: 1 to 63 ASCII characters,
// letters, digits, '_', '.' and '-', starting with a letter or digit. It
// is written out rather than compiled: the regexp's 62 repetitions cost
// every binary that links this package some 700 allocations at start.
func ValidName(name string, upper bool) bool {
	if len(name) == 0 || len(name) > 63 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case upper && 'A' <= c && c <= 'Z':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// ValidateServiceName returns an error that says what is wrong with name
// unless it matches ^[a-z0-9][a-z0-9_.-]{0,62}$ (so no path separators, no
// "..", at most 63 ASCII characters). It is the one rule for service names,
// used by the API, the metadata store, gossip receive and the workstation
// tools.
func ValidateServiceName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("invalid service name: empty")
	case len(name) > 63:
		return fmt.Errorf("invalid service name %s...: %d characters, at most 63 allowed", Quote(name[:20]), len(name))
	case !ValidName(name, false):
		return fmt.Errorf("invalid service name %s: use lowercase letters, digits, '_', '.', '-', starting with a letter or digit", Quote(name))
	}
	return nil
}

// reservedNodeNames are names Ansible gives a meaning of their own (a host
// named "all" in --limit selects every host) and the inventory's status
// groups: a node under one of them would be taken for the group.
var reservedNodeNames = map[string]bool{
	"all": true, "ungrouped": true, "localhost": true,
	StatusAlive: true, StatusSuspect: true, StatusFailed: true, StatusLeft: true,
}

// ValidateNodeName returns an error that says what is wrong with name unless
// it matches ^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$ and is not one of the names
// reserved for Ansible's and the inventory's groups (all, ungrouped,
// localhost, alive, suspect, failed, left). It is the one rule for node
// names: nothing else is ever taken as one, from config, gossip or the API,
// so a name is always safe as an INI host, a known_hosts entry, an ssh
// argument and an ansible-playbook --limit.
func ValidateNodeName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("invalid node name: empty")
	case len(name) > 63:
		return fmt.Errorf("invalid node name %s...: %d characters, at most 63 allowed", Quote(name[:20]), len(name))
	case !ValidName(name, true):
		return fmt.Errorf("invalid node name %s: use letters, digits, '_', '.', '-', starting with a letter or digit", Quote(name))
	case reservedNodeNames[strings.ToLower(name)]:
		return fmt.Errorf("invalid node name %q: reserved for a group of the inventory; pick another", name)
	}
	return nil
}

// Quote returns s in double quotes with every control character, invalid
// byte and invisible format character (bidirectional overrides included)
// escaped, so whatever a peer gossiped cannot move a terminal's cursor,
// change its colours or reorder what is shown. Use it wherever text from
// the cluster reaches an error message.
func Quote(s string) string { return strconv.QuoteToGraphic(s) }

// Printable returns s unchanged when it holds no control, format or invalid
// characters, and Quote(s) otherwise: the form for a table cell or a log
// line a person reads in a terminal. Every workstation CLI passes gossiped
// text through it before printing.
func Printable(s string) string {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return Quote(s)
			}
		}
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || (!unicode.IsGraphic(r) && r != ' ') {
			return Quote(s)
		}
	}
	return s
}

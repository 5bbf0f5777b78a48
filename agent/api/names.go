package api

import "fmt"

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
// used by the API, the metadata store and the workstation tools.
func ValidateServiceName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("invalid service name: empty")
	case len(name) > 63:
		return fmt.Errorf("invalid service name %.20q...: %d characters, at most 63 allowed", name, len(name))
	case name == "." || name == "..":
		return fmt.Errorf("invalid service name %q", name)
	case !ValidName(name, false):
		return fmt.Errorf("invalid service name %q: use lowercase letters, digits, '_', '.', '-', starting with a letter or digit", name)
	}
	return nil
}

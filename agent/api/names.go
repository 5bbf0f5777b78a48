package api

import (
	"fmt"
	"regexp"
)

var serviceNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

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
	case !serviceNameRE.MatchString(name):
		return fmt.Errorf("invalid service name %q: use lowercase letters, digits, '_', '.', '-', starting with a letter or digit", name)
	}
	return nil
}

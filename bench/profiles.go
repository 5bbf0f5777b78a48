package bench

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
)

// Contender is one set of timings compared side by side.
type Contender struct {
	// Label names the column in the report.
	Label   string
	Profile cluster.Profile
}

// Contenders returns the timings compared in every row, by agent profile
// name: our lan profile and memberlist-lan, memberlist's DefaultLANConfig,
// or either alone.
func Contenders(names []string) ([]Contender, error) {
	labels := map[string]string{"lan": "lan", "memberlist-lan": "memberlist DefaultLANConfig"}
	var out []Contender
	for _, name := range names {
		name = strings.TrimSpace(name)
		label, ok := labels[name]
		if !ok {
			return nil, fmt.Errorf("contenders: unknown profile %q: use lan, memberlist-lan or both", name)
		}
		if slices.ContainsFunc(out, func(c Contender) bool { return c.Label == label }) {
			return nil, fmt.Errorf("contenders: %s named twice", name)
		}
		p, err := cluster.ProfileByName(name)
		if err == nil {
			err = p.Validate()
		}
		if err != nil {
			return nil, fmt.Errorf("contenders: %s: %w", label, err)
		}
		out = append(out, Contender{Label: label, Profile: p})
	}
	if len(out) == 0 {
		return nil, errors.New("contenders: none named")
	}
	return out, nil
}

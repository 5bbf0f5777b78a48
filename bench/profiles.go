package bench

import (
	"errors"
	"fmt"

	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
)

// Contender is one set of timings compared side by side.
type Contender struct {
	// Label names the column in the report.
	Label   string
	Profile cluster.Profile
}

// Contenders returns the timings compared in every row: our lan profile
// and memberlist's DefaultLANConfig.
func Contenders() ([]Contender, error) {
	lan, err1 := cluster.ProfileByName("lan")
	ml, err2 := cluster.ProfileByName("memberlist-lan")
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("contenders: %w", err)
	}
	out := []Contender{
		{Label: "lan", Profile: lan},
		{Label: "memberlist DefaultLANConfig", Profile: ml},
	}
	for _, c := range out {
		if err := c.Profile.Validate(); err != nil {
			return nil, fmt.Errorf("contenders: %s: %w", c.Label, err)
		}
	}
	return out, nil
}

package command

import (
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// loadWith runs the command line's config layers (file, environment,
// flags) over args and returns what loadConfig says.
func loadWith(t *testing.T, args ...string) error {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	writeConfig(t, cfg, "ssh_host_keys: ''\n")
	app := App()
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	app.Action = func(c *cli.Context) error {
		_, err := loadConfig(c)
		return err
	}
	return app.Run(append([]string{"rpi-agent", "--config", cfg}, args...))
}

// Numeric settings given as flags or RPI_ variables pass the same checks as
// the file: NaN and infinities parse as floats, so only Validate stops them.
func TestNumericFlagsAndEnvStrict(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  string
		args []string
	}{
		{name: "flag NaN", args: []string{"--phi-threshold", "NaN"}},
		{name: "flag -Inf", args: []string{"--phi-threshold=-Inf"}},
		{name: "flag +Inf", args: []string{"--phi-threshold", "+Inf"}},
		{name: "flag huge", args: []string{"--phi-threshold", "1e308"}},
		{name: "flag negative", args: []string{"--phi-threshold=-2"}},
		{name: "env nan", env: "nan"},
		{name: "env inf", env: "inf"},
		{name: "env tiny", env: "1e-9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("RPI_PHI_THRESHOLD", tc.env)
			}
			err := loadWith(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), "phi_threshold") {
				t.Fatalf("want an error naming phi_threshold, got %v", err)
			}
		})
	}
	t.Run("sane", func(t *testing.T) {
		t.Setenv("RPI_PHI_THRESHOLD", "9")
		if err := loadWith(t); err != nil {
			t.Fatal(err)
		}
		if err := loadWith(t, "--phi-threshold", "12.5"); err != nil {
			t.Fatal(err)
		}
	})
}

package cliapp_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/agent/command"
	imagecli "github.com/rpi-cluster/rpi-cluster/image/cli"
	"github.com/rpi-cluster/rpi-cluster/internal/cliapp"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit"
	"github.com/rpi-cluster/rpi-cluster/internal/version"
	invcli "github.com/rpi-cluster/rpi-cluster/inventory/cli"
	launchcli "github.com/rpi-cluster/rpi-cluster/launcher/cli"
)

func TestMain(m *testing.M) {
	toolkit.Browse = nil // never multicast from a test
	os.Exit(m.Run())
}

type runFunc func(ctx context.Context, args []string, stdout, stderr io.Writer) error

func agentRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	app := command.App()
	app.Writer, app.ErrWriter = stdout, stderr
	return app.RunContext(ctx, args)
}

var tools = map[string]runFunc{
	"rpi-agent":     agentRun,
	"rpi-inventory": invcli.Run,
	"rpi-launch":    launchcli.RunLaunch,
	"rpi-meta":      launchcli.RunMeta,
	"rpi-image":     imagecli.Run,
}

// run runs a tool as its main does and returns the exit status and what it
// wrote.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	t.Setenv("RPI_WORKSTATION_CONFIG", t.TempDir()+"/none.yaml")
	t.Setenv("RPI_AGENT", "")
	var out, errw bytes.Buffer
	err := tools[args[0]](context.Background(), args, &out, &errw)
	code = cliapp.Exit(args[0], err, &errw)
	return code, out.String(), errw.String()
}

// TestUsageErrors: a command line that cannot run is one short error on
// stderr naming what was wrong, a pointer to --help and exit status 2;
// nothing on stdout (no help page).
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the error line
		help string // the command whose --help is suggested
	}{
		{[]string{"rpi-agent", "--bogus"}, "flag provided but not defined: -bogus", "rpi-agent"},
		{[]string{"rpi-agent", "extra"}, `unexpected argument "extra"`, "rpi-agent"},
		{[]string{"rpi-agent", "members", "--bogus"}, "-bogus", "rpi-agent members"},
		{[]string{"rpi-inventory", "--bogus"}, "-bogus", "rpi-inventory"},
		{[]string{"rpi-inventory"}, "nothing to do", "rpi-inventory"},
		{[]string{"rpi-inventory", "hosts"}, "want exactly one PLAYBOOK, got 0", "rpi-inventory hosts"},
		{[]string{"rpi-inventory", "hosts", "a.yml", "b.yml"}, "got 2", "rpi-inventory hosts"},
		{[]string{"rpi-inventory", "known-hosts", "x"}, `unexpected argument "x"`, "rpi-inventory known-hosts"},
		{[]string{"rpi-inventory", "--list", "--", "x"}, "no arguments after --", "rpi-inventory"},
		{[]string{"rpi-launch", "1"}, "usage: rpi-launch N SERVICE", "rpi-launch"},
		{[]string{"rpi-launch", "status", "x"}, "usage: rpi-launch status", "rpi-launch status"},
		{[]string{"rpi-launch", "--dry-run=maybe", "1", "web"}, "invalid boolean value", "rpi-launch"},
		{[]string{"rpi-meta", "frobnicate"}, `unknown command "frobnicate"`, "rpi-meta"},
		{[]string{"rpi-meta", "add-service", "pi1"}, "usage: rpi-meta add-service NODE SERVICE", "rpi-meta add-service"},
		{[]string{"rpi-meta", "list", "--bogus"}, "-bogus", "rpi-meta"},
		{[]string{"rpi-image", "nope"}, `unknown command "nope"`, "rpi-image"},
		{[]string{"rpi-image", "build"}, "build needs --base", "rpi-image build"},
		{[]string{"rpi-image", "rootfs"}, "exactly one argument", "rpi-image rootfs"},
		{[]string{"rpi-image", "rootfs", "--bogus", "dir"}, "-bogus", "rpi-image"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := run(t, tc.args...)
			if code != cliapp.ExitUsage {
				t.Errorf("exit status %d, want %d; stderr %q", code, cliapp.ExitUsage, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing (the help page is for --help)", stdout)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], tc.args[0]+": ") || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("stderr %q, want %q: ...%s... and one line of hint", stderr, tc.args[0], tc.want)
			}
			if want := "see '" + tc.help + " --help'"; lines[1] != want {
				t.Errorf("hint %q, want %q", lines[1], want)
			}
		})
	}
}

// TestVersion: --version prints the build's version on stdout, exit 0.
func TestVersion(t *testing.T) {
	for name := range tools {
		t.Run(name, func(t *testing.T) {
			code, stdout, stderr := run(t, name, "--version")
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			if want := name + " version " + version.String() + "\n"; stdout != want {
				t.Errorf("stdout %q, want %q", stdout, want)
			}
		})
	}
}

// TestOtherErrors: a failure that is not about the command line is one line
// on stderr and exit status 1.
func TestOtherErrors(t *testing.T) {
	code, stdout, stderr := run(t, "rpi-inventory", "--list", "--agent", "http://127.0.0.1:1")
	if code != cliapp.ExitFailure || stdout != "" || !strings.HasPrefix(stderr, "rpi-inventory: ") || strings.Contains(stderr, "--help") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 1 and one error line", code, stdout, stderr)
	}
}

// TestHelpTruthful: every help page of every tool says each default at most
// once, never "(default: false)" after a switch, and shows --mdns and its
// --no-mdns counterpart as one entry.
func TestHelpTruthful(t *testing.T) {
	for name := range tools {
		t.Run(name, func(t *testing.T) {
			pages := [][]string{{name, "--help"}}
			_, stdout, _ := run(t, name, "--help")
			for _, cmd := range commandsIn(stdout) {
				pages = append(pages, []string{name, cmd, "--help"})
			}
			if len(pages) < 3 {
				t.Fatalf("found %d commands in the help page:\n%s", len(pages)-1, stdout)
			}
			for _, args := range pages {
				code, stdout, stderr := run(t, args...)
				if code != 0 || stderr != "" {
					t.Fatalf("%v: exit %d, stderr %q", args, code, stderr)
				}
				for _, line := range strings.Split(stdout, "\n") {
					if strings.Count(line, "(default") > 1 || strings.Contains(line, "(default: false)") {
						t.Errorf("%v: %q", args, strings.TrimSpace(line))
					}
				}
				if name == "rpi-agent" && len(args) == 2 && (!strings.Contains(stdout, "--mdns") || strings.Count(stdout, "--no-mdns") != 1) {
					t.Errorf("rpi-agent --help shows --mdns/--no-mdns %d times as entries:\n%s", strings.Count(stdout, "--no-mdns"), stdout)
				}
			}
		})
	}
}

// commandsIn lists the commands of a help page's COMMANDS section.
func commandsIn(help string) []string {
	var cmds []string
	in := false
	for _, line := range strings.Split(help, "\n") {
		switch {
		case strings.HasPrefix(line, "COMMANDS:"):
			in = true
		case in && strings.HasPrefix(line, "   ") && !strings.HasPrefix(line, "    "):
			f := strings.Fields(line)
			cmds = append(cmds, strings.TrimSuffix(f[0], ","))
		case in && strings.TrimSpace(line) != "" && !strings.HasPrefix(line, " "):
			in = false
		}
	}
	return cmds
}

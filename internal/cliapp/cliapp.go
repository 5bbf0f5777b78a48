// Package cliapp gives every rpi-cluster command line the same manners, the
// ones Unix tools have: --version, a usage error (unknown flag, missing or
// extra argument, unknown command) as one short line on stderr and "see
// --help" with exit status 2, any other failure as one line with exit status
// 1. The tools build their urfave/cli apps as before and pass them through
// Prepare; their mains end with Exit.
package cliapp

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/rpi-cluster/rpi-cluster/internal/version"
)

// Exit statuses, as BSD sysexits and GNU tools use them.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// UsageError is a command line that cannot be run as written. Command is the
// full command name ("rpi-inventory hosts") whose --help explains it; Prepare
// fills it in when an action leaves it empty.
type UsageError struct {
	Command string
	Err     error
}

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError with a formatted message, for an action that
// finds its arguments wrong: "want exactly one PLAYBOOK, got 2".
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// Prepare sets app up for Exit: its version (internal/version) behind
// --version, usage errors from flag parsing and from every action turned
// into UsageErrors naming their command, no exit from inside urfave/cli, and
// an unknown subcommand of a tool without a root action reported as a usage
// error rather than a help page. It returns app.
func Prepare(app *cli.App) *cli.App {
	if app.Version == "" {
		app.Version = version.String()
	}
	app.ExitErrHandler = func(*cli.Context, error) {}
	app.OnUsageError = onUsageError
	if app.Action == nil && len(app.Commands) > 0 {
		app.Action = func(c *cli.Context) error {
			if c.NArg() > 0 {
				return Usagef("unknown command %q", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		}
	}
	app.Action = wrapAction(app.Action)
	quietSwitches(app.Flags)
	prepareCommands(app.Commands)
	return app
}

func prepareCommands(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = onUsageError
		c.Action = wrapAction(c.Action)
		quietSwitches(c.Flags)
		prepareCommands(c.Subcommands)
	}
}

// quietSwitches drops the "(default: false)" urfave/cli prints after every
// bool flag: a switch is off unless given, and for a setting whose default
// comes from elsewhere (a config file) "false" would be untrue. A bool that
// defaults to true keeps saying so.
func quietSwitches(flags []cli.Flag) {
	for _, f := range flags {
		if b, ok := f.(*cli.BoolFlag); ok && !b.Value && b.DefaultText == "" {
			b.DisableDefaultText = true
		}
	}
}

func onUsageError(c *cli.Context, err error, _ bool) error {
	return &UsageError{Command: commandName(c), Err: err}
}

// wrapAction names the command in a UsageError its action returns.
func wrapAction(a cli.ActionFunc) cli.ActionFunc {
	if a == nil {
		return nil
	}
	return func(c *cli.Context) error {
		err := a(c)
		var ue *UsageError
		if errors.As(err, &ue) && ue.Command == "" {
			ue.Command = commandName(c)
		}
		return err
	}
}

// commandName is the full name of the command c runs: "rpi-meta list".
func commandName(c *cli.Context) string {
	if c.Command != nil && c.Command.HelpName != "" && !strings.EqualFold(c.Command.HelpName, c.App.Name) {
		return c.Command.HelpName
	}
	return c.App.Name
}

// Exit prints err for a person on stderr, prefixed with the program name,
// and returns the exit status: 0 for nil, 2 for a usage error (with a hint
// to --help), the code of a cli.ExitCoder, else 1.
func Exit(name string, err error, stderr io.Writer) int {
	if err == nil {
		return ExitOK
	}
	var ue *UsageError
	if errors.As(err, &ue) {
		cmd := ue.Command
		if cmd == "" {
			cmd = name
		}
		fmt.Fprintf(stderr, "%s: %v\nsee '%s --help'\n", name, err, cmd)
		return ExitUsage
	}
	code := ExitFailure
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		code = ec.ExitCode()
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintf(stderr, "%s: %s\n", name, msg)
	}
	return code
}

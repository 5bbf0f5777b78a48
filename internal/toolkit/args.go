package toolkit

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// Permute rearranges a command line so that flags may follow positional
// arguments, as users of GNU tools expect ("rpi-inventory hosts site.yml -o
// hosts.ini", "rpi-launch 2 web --dry-run"): urfave/cli stops parsing flags at
// the first positional argument. Root flags written after the subcommand are
// moved before it. Everything after a literal "--" is returned as extra,
// untouched, for tools that pass it on (rpi-launch hands it to
// ansible-playbook).
//
// args[0] is the program name. Unknown flags are left in place for cli to
// report.
func Permute(app *cli.App, args []string) (out, extra []string) {
	if len(args) == 0 {
		return args, nil
	}
	rootFlags := flagArity(app.Flags)
	var (
		cmd         *cli.Command
		rootArgs    []string
		cmdArgs     []string
		positionals []string
		cmdFlags    map[string]bool
	)
	rest := args[1:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			extra = append([]string{}, rest[i+1:]...)
			break
		}
		if len(a) > 1 && strings.HasPrefix(a, "-") {
			name, hasValue := flagName(a)
			takesValue, inCmd := false, false
			if cmd != nil {
				takesValue, inCmd = cmdFlags[name]
			}
			if !inCmd {
				takesValue = rootFlags[name]
			}
			group := []string{a}
			if takesValue && !hasValue && i+1 < len(rest) {
				group = append(group, rest[i+1])
				i++
			}
			if cmd != nil && inCmd {
				cmdArgs = append(cmdArgs, group...)
			} else {
				rootArgs = append(rootArgs, group...)
			}
			continue
		}
		if cmd == nil && len(positionals) == 0 {
			if c := findCommand(app.Commands, a); c != nil {
				cmd = c
				cmdFlags = flagArity(c.Flags)
				continue
			}
		}
		positionals = append(positionals, a)
	}
	out = append(out, args[0])
	out = append(out, rootArgs...)
	if cmd != nil {
		out = append(out, cmd.Name)
		out = append(out, cmdArgs...)
	}
	out = append(out, positionals...)
	return out, extra
}

// flagArity maps every name and alias of flags to whether it takes a value.
func flagArity(flags []cli.Flag) map[string]bool {
	m := map[string]bool{"help": false, "h": false}
	for _, f := range flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			m[n] = !isBool
		}
	}
	return m
}

func flagName(a string) (name string, hasValue bool) {
	a = strings.TrimLeft(a, "-")
	if i := strings.IndexByte(a, '='); i >= 0 {
		return a[:i], true
	}
	return a, false
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

//go:build !urfave_cli_no_docs

// Command gendocs writes the man pages and the bash and zsh completion of
// every rpi-cluster command line into dist/, from the urfave/cli apps
// themselves, so they cannot drift from the flags: `make docs` runs it, and a
// test fails when dist/ is not what it would write. The generators live only
// here (built without the urfave_cli_no_docs tag); the binaries keep the tag
// and carry none of it.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/agent/command"
	imagecli "github.com/rpi-cluster/rpi-cluster/image/cli"
	invcli "github.com/rpi-cluster/rpi-cluster/inventory/cli"
	launchcli "github.com/rpi-cluster/rpi-cluster/launcher/cli"
)

// tool is one command line and the man section it belongs in: 8 for the
// daemon, 1 for the workstation's commands.
type tool struct {
	app     *cli.App
	section int
	// permute: the tool takes its root flags after a command too
	// (toolkit.Permute), so completion offers them there.
	permute bool
}

func tools() []tool {
	return []tool{
		{command.App(), 8, false},
		{invcli.NewApp(nil, nil), 1, true},
		{launchcli.LaunchApp(), 1, true},
		{launchcli.MetaApp(), 1, true},
		{imagecli.App(), 1, false},
	}
}

func main() {
	out := flag.String("o", "dist", "write into `DIR` (man/, completion/bash/, completion/zsh/)")
	flag.Parse()
	files, err := Generate()
	if err == nil {
		err = write(*out, files)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}

// Generate returns every generated file by its path under dist/.
func Generate() (map[string][]byte, error) {
	files := make(map[string][]byte)
	for _, t := range tools() {
		stableDefaults(t.app)
		name := t.app.Name
		man, err := t.app.ToManWithSection(t.section)
		if err != nil {
			return nil, fmt.Errorf("man page of %s: %w", name, err)
		}
		files[filepath.Join("man", fmt.Sprintf("%s.%d", name, t.section))] = []byte(man)
		files[filepath.Join("completion", "bash", name)] = bashCompletion(t.app, t.permute)
		files[filepath.Join("completion", "zsh", "_"+name)] = zshCompletion(t.app, t.permute)
	}
	return files, nil
}

func write(dir string, files map[string][]byte) error {
	for p, data := range files {
		path := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// stableDefaults replaces defaults that depend on who generates the pages
// (the workstation config under the generating user's home) with what a
// reader's machine will use.
func stableDefaults(app *cli.App) {
	home := client.DefaultWorkstationConfigPath()
	fix := func(flags []cli.Flag) {
		for _, f := range flags {
			if s, ok := f.(*cli.StringFlag); ok && s.Value == home {
				s.DefaultText = "$XDG_CONFIG_HOME/rpi-cluster/config.yaml, else ~/.config/rpi-cluster/config.yaml"
			}
		}
	}
	fix(app.Flags)
	for _, c := range app.Commands {
		fix(c.Flags)
	}
}

// flagInfo is what completion needs of a flag.
type flagInfo struct {
	names []string // with dashes: --agent, -o
	usage string   // first sentence, for zsh
	value string   // "" for a switch, "file", "dir" or "word"
}

var placeholderRE = regexp.MustCompile("`([^`]+)`")

// fileish says how to complete a value or argument whose placeholder is p.
func fileish(p string) string {
	switch {
	case strings.Contains(p, "DIR"):
		return "dir"
	case strings.Contains(p, "FILE"), strings.Contains(p, "PATH"), strings.Contains(p, ".pub"),
		strings.Contains(p, ".img"), strings.Contains(p, "PLAYBOOK"), strings.Contains(p, "IMG"):
		return "file"
	}
	return "word"
}

// argKind says how to complete a command's first argument, from its
// ArgsUsage ("PLAYBOOK", "DIR", "N SERVICE"): "file", "dir" or "" for
// nothing in particular.
func argKind(argsUsage string) string {
	f := strings.Fields(argsUsage)
	if len(f) == 0 {
		return ""
	}
	if k := fileish(f[0]); k != "word" {
		return k
	}
	return ""
}

func flags(fs []cli.Flag, withVersion bool) []flagInfo {
	var out []flagInfo
	for _, f := range fs {
		if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
			continue
		}
		d, ok := f.(cli.DocGenerationFlag)
		if !ok {
			continue
		}
		fi := flagInfo{usage: d.GetUsage()}
		for _, n := range f.Names() {
			if len(n) == 1 {
				fi.names = append(fi.names, "-"+n)
			} else {
				fi.names = append(fi.names, "--"+n)
			}
		}
		if d.TakesValue() {
			fi.value = "word"
			if m := placeholderRE.FindStringSubmatch(fi.usage); m != nil {
				fi.value = fileish(m[1])
			}
		}
		fi.usage = strings.ReplaceAll(fi.usage, "`", "")
		out = append(out, fi)
	}
	out = append(out, flagInfo{names: []string{"--help", "-h"}, usage: "show help"})
	if withVersion {
		out = append(out, flagInfo{names: []string{"--version", "-v"}, usage: "print the version"})
	}
	return out
}

// commandFlags are the flags a person may give after command c: its own,
// and the root's too when the tool permutes its arguments.
func commandFlags(app *cli.App, c *cli.Command, permute bool) []flagInfo {
	if !permute {
		return flags(c.Flags, false)
	}
	own := flags(c.Flags, false)
	root := flags(app.Flags, false)
	return append(own[:len(own)-1], root...) // one --help
}

// visibleCommands are app's commands a person is meant to type.
func visibleCommands(app *cli.App) []*cli.Command {
	var out []*cli.Command
	for _, c := range app.Commands {
		if !c.Hidden {
			out = append(out, c)
		}
	}
	return out
}

// funcName turns a tool name into a shell function name.
func funcName(name string) string { return "_" + strings.ReplaceAll(name, "-", "_") }

// bashCompletion is a static bash completion for app: commands, each
// level's flags, and files or directories where a flag or argument names
// one. It needs nothing from the binary at completion time.
func bashCompletion(app *cli.App, permute bool) []byte {
	var b bytes.Buffer
	fn := funcName(app.Name)
	root := flags(app.Flags, true)
	cmds := visibleCommands(app)
	fmt.Fprintf(&b, "# bash completion for %s. Generated by internal/gendocs (make docs); do not edit.\n", app.Name)
	fmt.Fprintf(&b, "# Install: copy to /usr/share/bash-completion/completions/%s, or source it.\n\n", app.Name)
	fmt.Fprintf(&b, "%s() {\n", fn)
	b.WriteString("\tlocal cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"${COMP_WORDS[COMP_CWORD-1]}\" cmd=\"\" i\n")
	if len(cmds) > 0 {
		b.WriteString("\tfor ((i = 1; i < COMP_CWORD; i++)); do\n\t\tcase \"${COMP_WORDS[i]}\" in\n")
		var names []string
		for _, c := range cmds {
			names = append(names, c.Names()...)
		}
		fmt.Fprintf(&b, "\t\t%s) cmd=\"${COMP_WORDS[i]}\"; break ;;\n", strings.Join(names, "|"))
		b.WriteString("\t\tesac\n\tdone\n")
	}
	// Values of flags: files, directories, or nothing to offer.
	byKind := map[string][]string{}
	seen := map[string]bool{}
	addValues := func(fs []flagInfo) {
		for _, f := range fs {
			for _, n := range f.names {
				if f.value != "" && !seen[n] {
					seen[n] = true
					byKind[f.value] = append(byKind[f.value], n)
				}
			}
		}
	}
	addValues(root)
	for _, c := range cmds {
		addValues(flags(c.Flags, false))
	}
	b.WriteString("\tcase \"$prev\" in\n")
	for _, kind := range []string{"file", "dir", "word"} {
		if len(byKind[kind]) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\t%s)\n", strings.Join(byKind[kind], "|"))
		switch kind {
		case "file":
			b.WriteString("\t\tmapfile -t COMPREPLY < <(compgen -f -- \"$cur\"); return ;;\n")
		case "dir":
			b.WriteString("\t\tmapfile -t COMPREPLY < <(compgen -d -- \"$cur\"); return ;;\n")
		default:
			b.WriteString("\t\tCOMPREPLY=(); return ;;\n")
		}
	}
	b.WriteString("\tesac\n")
	b.WriteString("\tlocal words=\"\" files=\"\"\n\tcase \"$cmd\" in\n")
	var rootWords []string
	for _, f := range root {
		rootWords = append(rootWords, f.names[0])
	}
	for _, c := range cmds {
		rootWords = append(rootWords, c.Name)
	}
	rootFiles := argKind(app.ArgsUsage)
	fmt.Fprintf(&b, "\t\"\") words=%q files=%q ;;\n", strings.Join(rootWords, " "), rootFiles)
	for _, c := range cmds {
		var words []string
		for _, f := range commandFlags(app, c, permute) {
			words = append(words, f.names[0])
		}
		files := argKind(c.ArgsUsage)
		fmt.Fprintf(&b, "\t%s) words=%q files=%q ;;\n", strings.Join(c.Names(), "|"), strings.Join(words, " "), files)
	}
	b.WriteString("\tesac\n")
	b.WriteString("\tif [[ $cur != -* && $files == file ]]; then\n\t\tmapfile -t COMPREPLY < <(compgen -f -- \"$cur\")\n")
	b.WriteString("\telif [[ $cur != -* && $files == dir ]]; then\n\t\tmapfile -t COMPREPLY < <(compgen -d -- \"$cur\")\n")
	b.WriteString("\telse\n\t\tmapfile -t COMPREPLY < <(compgen -W \"$words\" -- \"$cur\")\n\tfi\n")
	b.WriteString("}\n")
	fmt.Fprintf(&b, "complete -F %s %s\n", fn, app.Name)
	return b.Bytes()
}

// zq quotes s for a zsh single-quoted _arguments spec or _describe entry.
func zq(s string) string {
	s = strings.ReplaceAll(s, "'", `'\''`)
	s = strings.NewReplacer("[", `\[`, "]", `\]`, ":", `\:`).Replace(s)
	return s
}

func firstSentence(s string) string {
	if i := strings.Index(s, "; "); i > 0 {
		s = s[:i]
	}
	if i := strings.Index(s, " ("); i > 0 {
		s = s[:i]
	}
	return s
}

func zshSpecs(fs []flagInfo) []string {
	var specs []string
	for _, f := range fs {
		action := ""
		switch f.value {
		case "file":
			action = ":file:_files"
		case "dir":
			action = ":directory:_files -/"
		case "word":
			action = ":value: "
		}
		desc := "[" + zq(firstSentence(f.usage)) + "]"
		if len(f.names) == 1 {
			specs = append(specs, "'"+f.names[0]+desc+action+"'")
			continue
		}
		excl := "(" + strings.Join(f.names, " ") + ")"
		specs = append(specs, "'"+excl+"'{"+strings.Join(f.names, ",")+"}'"+desc+action+"'")
	}
	return specs
}

// zshCompletion is a static zsh completion (#compdef) for app, with the
// flags' and commands' descriptions.
func zshCompletion(app *cli.App, permute bool) []byte {
	var b bytes.Buffer
	fn := funcName(app.Name)
	cmds := visibleCommands(app)
	fmt.Fprintf(&b, "#compdef %s\n# zsh completion for %s. Generated by internal/gendocs (make docs); do not edit.\n", app.Name, app.Name)
	fmt.Fprintf(&b, "# Install: copy as _%s into a directory of $fpath.\n\n", app.Name)
	fmt.Fprintf(&b, "%s() {\n\tlocal context state state_descr line\n\ttypeset -A opt_args\n\t_arguments -C \\\n", fn)
	for _, s := range zshSpecs(flags(app.Flags, true)) {
		fmt.Fprintf(&b, "\t\t%s \\\n", s)
	}
	if len(cmds) == 0 {
		b.WriteString("\t\t'*: :_files'\n}\n")
	} else {
		b.WriteString("\t\t'1: :->command' \\\n\t\t'*:: :->args'\n")
		b.WriteString("\tcase $state in\n\tcommand)\n\t\tlocal -a commands=(\n")
		for _, c := range cmds {
			fmt.Fprintf(&b, "\t\t\t'%s:%s'\n", zq(c.Name), zq(c.Usage))
		}
		b.WriteString("\t\t)\n\t\t_describe command commands")
		if argKind(app.ArgsUsage) != "" {
			b.WriteString(" || _files")
		}
		b.WriteString(" ;;\n\targs)\n\t\tcase $line[1] in\n")
		for _, c := range cmds {
			fmt.Fprintf(&b, "\t\t%s)\n\t\t\t_arguments \\\n", strings.Join(c.Names(), "|"))
			for _, s := range zshSpecs(commandFlags(app, c, permute)) {
				fmt.Fprintf(&b, "\t\t\t\t%s \\\n", s)
			}
			arg := "'*: :'"
			switch argKind(c.ArgsUsage) {
			case "file":
				arg = "'*: :_files'"
			case "dir":
				arg = "'*: :_files -/'"
			}
			fmt.Fprintf(&b, "\t\t\t\t%s ;;\n", arg)
		}
		b.WriteString("\t\tesac ;;\n\tesac\n}\n")
	}
	fmt.Fprintf(&b, "\n%s \"$@\"\n", fn)
	return b.Bytes()
}

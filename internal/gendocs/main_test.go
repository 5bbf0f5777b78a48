//go:build !urfave_cli_no_docs

package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestDistCurrent: the man pages and completions committed under dist/ are
// exactly what gendocs writes from the apps now, so a flag changed without
// `make docs` fails here.
func TestDistCurrent(t *testing.T) {
	files, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	dist := filepath.Join("..", "..", "dist")
	for p, want := range files {
		got, err := os.ReadFile(filepath.Join(dist, p))
		if err != nil {
			t.Errorf("dist/%s: %v: run make docs and commit dist/", p, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("dist/%s is stale: run make docs and commit dist/", p)
		}
	}
	for _, dir := range []string{"man", "completion/bash", "completion/zsh"} {
		entries, _ := os.ReadDir(filepath.Join(dist, dir))
		for _, e := range entries {
			if _, ok := files[filepath.Join(dir, e.Name())]; !ok {
				t.Errorf("dist/%s/%s is not generated any more: remove it", dir, e.Name())
			}
		}
	}
	for _, name := range []string{"rpi-agent.8", "rpi-inventory.1", "rpi-launch.1", "rpi-meta.1", "rpi-image.1"} {
		if _, ok := files[filepath.Join("man", name)]; !ok {
			t.Errorf("no man page %s", name)
		}
	}
}

// complete runs the generated bash completion for words (the last one is
// being completed) in a real bash, from dir, and returns the candidates.
func complete(t *testing.T, script []byte, dir string, words ...string) []string {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	f := filepath.Join(t.TempDir(), "completion.bash")
	if err := os.WriteFile(f, script, 0o644); err != nil {
		t.Fatal(err)
	}
	fn := "_" + strings.ReplaceAll(words[0], "-", "_")
	var q []string
	for _, w := range words {
		q = append(q, "'"+w+"'")
	}
	prog := "source " + f + "\nCOMP_WORDS=(" + strings.Join(q, " ") + ")\nCOMP_CWORD=" +
		strconv.Itoa(len(words)-1) + "\n" + fn + "\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
	cmd := exec.Command(bash, "--norc", "--noprofile", "-c", prog)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	return strings.Fields(string(out))
}

// TestBashCompletion: the generated scripts load in bash and complete
// commands, flags after a command (where the tool takes them there), and
// files for a flag that names one.
func TestBashCompletion(t *testing.T) {
	files, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, name := range []string{"site.yml", "key.pub"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bashOf := func(tool string) []byte { return files[filepath.Join("completion", "bash", tool)] }
	for _, tc := range []struct {
		words []string
		want  []string
	}{
		{[]string{"rpi-meta", "re"}, []string{"remove-service"}},
		{[]string{"rpi-meta", "list", "--j"}, []string{"--json"}},
		{[]string{"rpi-inventory", "--to"}, []string{"--token", "--token-file"}},
		{[]string{"rpi-inventory", "hosts", "si"}, []string{"site.yml"}},
		{[]string{"rpi-inventory", "--config", "k"}, []string{"key.pub"}},
		{[]string{"rpi-agent", "--no"}, nil}, // --no-mdns is described under --mdns, not offered
		{[]string{"rpi-agent", "--mdn"}, []string{"--mdns"}},
		{[]string{"rpi-agent", "--version"}, []string{"--version"}},
		{[]string{"rpi-image", "build", "--ssh-key", "k"}, []string{"key.pub"}},
		{[]string{"rpi-image", "build", "--wifi-psk-"}, []string{"--wifi-psk-file"}},
		{[]string{"rpi-launch", "st"}, []string{"status"}},
	} {
		got := complete(t, bashOf(tc.words[0]), dir, tc.words...)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: completions %q, want %q", tc.words, got, tc.want)
		}
	}
}

// TestZshCompletion runs each generated zsh completion in a real zsh: it
// must parse, and, with zsh's completion helpers replaced by stubs that
// print what they are given, offer every subcommand of its tool.
func TestZshCompletion(t *testing.T) {
	zsh, err := exec.LookPath("zsh")
	if err != nil {
		t.Skip("zsh not installed (apt-get install zsh)")
	}
	files, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	for tool, want := range map[string][]string{
		"rpi-meta":      {"add-service", "remove-service", "list"},
		"rpi-inventory": {"hosts", "known-hosts", "forget"},
		"rpi-agent":     {"members", "keygen", "rekey", "force-leave"},
		"rpi-launch":    {"status", "reconcile"},
		"rpi-image":     {"build", "rootfs", "reset-identity"},
	} {
		f := filepath.Join(t.TempDir(), "_"+tool)
		if err := os.WriteFile(f, files[filepath.Join("completion", "zsh", "_"+tool)], 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(zsh, "-n", f).CombinedOutput(); err != nil {
			t.Fatalf("%s: zsh -n: %v\n%s", tool, err, out)
		}
		prog := `_arguments() { state=command; return 0 }
_describe() { print -l -- "${(@P)2}" }
words=(` + tool + ` ""); CURRENT=2
source ` + f + "\n"
		out, err := exec.Command(zsh, "-f", "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: zsh: %v\n%s", tool, err, out)
		}
		var offered []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			name, _, _ := strings.Cut(l, ":")
			offered = append(offered, name)
		}
		for _, w := range want {
			if !slices.Contains(offered, w) {
				t.Errorf("%s: zsh completion offers %q, want %q among them", tool, offered, w)
			}
		}
	}
}

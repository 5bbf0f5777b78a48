package apitypes

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// ValidName agrees with the regexps it stands for, on hand-picked names
// and on a hundred thousand random ones built from the characters that
// matter.
func TestValidNameMatchesItsRegexps(t *testing.T) {
	lower := regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)
	mixed := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	check := func(name string) {
		t.Helper()
		if got, want := ValidName(name, false), lower.MatchString(name); got != want {
			t.Fatalf("ValidName(%q, false) = %v, the regexp says %v", name, got, want)
		}
		if got, want := ValidName(name, true), mixed.MatchString(name); got != want {
			t.Fatalf("ValidName(%q, true) = %v, the regexp says %v", name, got, want)
		}
	}
	for _, name := range []string{
		"", "a", "A", "0", "_", ".", "-", "..", "a.", "a..b", "nginx_webserver", "Nginx", "pi-1",
		"rpi-d5070b", "a/b", "a b", "a\n", "\na", "é", "aé", strings.Repeat("a", 63), strings.Repeat("a", 64),
		"a" + strings.Repeat("-", 62), "-a", "a\x00",
	} {
		check(name)
	}
	const chars = "aZ09_.-/ é\n\x00"
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		b := make([]byte, r.IntN(66))
		for i := range b {
			b[i] = chars[r.IntN(len(chars))]
		}
		check(string(b))
	}
}

// The names an attacker used against the workstation tools are refused,
// and each refusal names the trouble.
func TestValidateNodeNameRefusesHostileNames(t *testing.T) {
	for _, name := range []string{
		"evil ansible_connection=local", "all", "ALL", "ungrouped", "localhost", "alive", "failed",
		"s1,127.0.20.1", "a\nb", "a\x1b[31m", strings.Repeat("n", 300), "", "-x", "a:b", "a*", "!a", "a/b",
	} {
		if err := ValidateNodeName(name); err == nil {
			t.Errorf("ValidateNodeName(%q) = nil, want an error", name)
		} else if strings.ContainsAny(err.Error(), "\n\x1b") {
			t.Errorf("ValidateNodeName(%q) error carries a control character: %q", name, err)
		}
	}
	for _, name := range []string{"pi-1", "rpi-d5070b", "Pi.Kitchen", "all-pis", "n_1", strings.Repeat("a", 63)} {
		if err := ValidateNodeName(name); err != nil {
			t.Errorf("ValidateNodeName(%q) = %v, want nil", name, err)
		}
	}
}

func TestPrintableEscapesWhatATerminalWouldObey(t *testing.T) {
	for in, want := range map[string]string{
		"nginx_webserver":   "nginx_webserver",
		"plain text, ok":    "plain text, ok",
		"\x1b[2Jgone":       `"\x1b[2Jgone"`,
		"a\nb":              `"a\nb"`,
		"evil\u202etxt":     `"evil\u202etxt"`,
		"\xff":              `"\xff"`,
		"bell\a":            `"bell\a"`,
		"résumé":            "résumé",
		"\u009b31m(C1 CSI)": `"\u009b31m(C1 CSI)"`,
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %s, want %s", in, got, want)
		}
	}
}

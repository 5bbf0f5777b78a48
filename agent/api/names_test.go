package api

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

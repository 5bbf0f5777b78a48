package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/internal/version"
)

// TestCommandLine: rpi-bench has the other tools' manners: -version, -h on
// stdout, and a bad command line as one line on stderr with exit status 2.
func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string // substrings; "" = must be empty
		stderrLines    int
	}{
		{[]string{"-version"}, 0, "rpi-bench version " + version.String(), "", 0},
		{[]string{"-h"}, 0, "-quick", "", 0},
		{[]string{"-bogus"}, 2, "", "rpi-bench: flag provided but not defined: -bogus", 2},
		{[]string{"-trials", "many"}, 2, "", "invalid value", 2},
		{[]string{"extra"}, 2, "", `unexpected argument "extra"`, 2},
		{[]string{"-dilate", "0.5"}, 2, "", "rpi-bench: --dilate: bad dilation \"0.5\": want a number from 1 to 100", 1},
		{[]string{"-cap-quota", "2"}, 2, "", "rpi-bench: --cap-quota 2: want a share of one core above 0 and at most 1", 1},
		{[]string{"-rows", "scale,bogus"}, 2, "", "unknown row \"bogus\": use scale, procs, falsepos, footprint, inventory, cpucap", 1},
		{[]string{"-dilate", "4", "-rows", "scale,procs"}, 2, "", "--dilate works on the in-process scale rows only", 1},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errw bytes.Buffer
			code := run(tc.args, &out, &errw)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tc.code, errw.String())
			}
			if (tc.stdout == "") != (out.Len() == 0) || !strings.Contains(out.String(), tc.stdout) {
				t.Errorf("stdout %q, want %q", out.String(), tc.stdout)
			}
			if (tc.stderr == "") != (errw.Len() == 0) || !strings.Contains(errw.String(), tc.stderr) {
				t.Errorf("stderr %q, want %q", errw.String(), tc.stderr)
			}
			if tc.stderrLines > 0 && strings.Count(errw.String(), "\n") != tc.stderrLines {
				t.Errorf("stderr has %d lines, want %d: %q", strings.Count(errw.String(), "\n"), tc.stderrLines, errw.String())
			}
		})
	}
}

package secretfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, data string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return p
}

func TestRead(t *testing.T) {
	for _, mode := range []os.FileMode{0o600, 0o400, 0o640} {
		got, err := Read(write(t, "s3cret\n", mode))
		if err != nil || got != "s3cret" {
			t.Errorf("mode %04o: %q, %v; want s3cret", mode, got, err)
		}
	}
}

// TestRefused: a world-readable file, an empty one and a directory are
// refused with what to do.
func TestRefused(t *testing.T) {
	for _, tc := range []struct {
		name, path, want string
	}{
		{"world-readable", write(t, "s3cret\n", 0o644), "chmod o-r"},
		{"world-readable-writable", write(t, "s3cret\n", 0o666), "mode 0666"},
		{"empty", write(t, " \n", 0o600), "empty"},
		{"directory", t.TempDir(), "not a regular file"},
		{"missing", filepath.Join(t.TempDir(), "none"), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Read(tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "read secret file") {
				t.Fatalf("Read = %q, %v; want an error with %q", got, err, tc.want)
			}
			if got != "" || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the secret leaked: %q, %v", got, err)
			}
		})
	}
}

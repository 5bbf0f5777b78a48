// Package secretfile reads a secret (API token, gossip key, WiFi passphrase)
// from a file, so it need not be given on a command line or in the
// environment, where ps and /proc show it to every user of the machine.
package secretfile

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// maxSize bounds what is read: a secret is a line, not a file to slurp.
const maxSize = 64 << 10

// Read returns the secret in path, without surrounding whitespace (a
// trailing newline is usual). A file that every user may read is refused,
// since the point of the file is to keep the secret from them, as is an
// empty one or something that is not a regular file.
func Read(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read secret file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("read secret file: %w", err)
	}
	if !info.Mode().IsRegular() {
		return "", fmt.Errorf("read secret file %s: not a regular file", path)
	}
	if perm := info.Mode().Perm(); perm&0o004 != 0 {
		return "", fmt.Errorf("read secret file %s: every user of this machine may read it (mode %04o): run chmod o-r %s (or chmod 600)", path, perm, path)
	}
	if info.Size() > maxSize {
		return "", fmt.Errorf("read secret file %s: %d bytes is not a secret (at most %d)", path, info.Size(), maxSize)
	}
	data := make([]byte, info.Size())
	if _, err := f.ReadAt(data, 0); err != nil && info.Size() > 0 {
		return "", fmt.Errorf("read secret file %s: %w", path, err)
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return "", fmt.Errorf("read secret file %s: it is empty", path)
	}
	return s, nil
}

// ErrBoth is wrapped by Value when a secret is given both ways.
var ErrBoth = errors.New("give the secret or the file, not both")

// Value resolves a secret given as value or in file (settings named
// valueName and fileName, for the error): value, else the file's content,
// else "". Both at once is an error naming the two.
func Value(valueName, fileName, value, file string) (string, error) {
	if file == "" {
		return value, nil
	}
	if value != "" {
		return "", fmt.Errorf("%s and %s: %w", valueName, fileName, ErrBoth)
	}
	return Read(file)
}

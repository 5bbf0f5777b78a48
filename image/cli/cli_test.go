package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecretFilesRefused: the key, token and WiFi passphrase files are read
// only when not every user may read them; the refusal comes before the
// image or directory is touched.
func TestSecretFilesRefused(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte("s3cret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "rootfs")
	for _, args := range [][]string{
		{"rootfs", root, "--encrypt-file", open},
		{"rootfs", root, "--token-file", open},
		{"build", "--base", filepath.Join(dir, "base.img"), "--out", filepath.Join(dir, "out.img"), "--ssh-key", filepath.Join(dir, "k.pub"), "--wifi-psk-file", open},
	} {
		t.Run(args[0]+" "+args[len(args)-2], func(t *testing.T) {
			var out bytes.Buffer
			err := Run(context.Background(), append([]string{"rpi-image"}, args...), &out, &out)
			if err == nil || !strings.Contains(err.Error(), "every user") || !strings.Contains(err.Error(), open) {
				t.Fatalf("err %v; want a refusal of %s", err, open)
			}
			if _, err := os.Stat(root); err == nil {
				t.Errorf("%s was written before the refusal", root)
			}
		})
	}
}

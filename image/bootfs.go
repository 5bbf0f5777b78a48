package image

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BootFS is the FAT boot partition of a Raspberry Pi OS image (mounted at
// /boot/firmware, or /boot before Bookworm, on the running system). Names
// are relative to its root ("cmdline.txt").
type BootFS interface {
	// ReadFile returns the content of name; a missing file wraps
	// fs.ErrNotExist.
	ReadFile(name string) ([]byte, error)
	// WriteFile creates or replaces name.
	WriteFile(name string, data []byte) error
}

// FATFS is a FAT filesystem inside an image file, read and written with
// mtools (mcopy) at a byte offset: no mount, no root.
type FATFS struct {
	image  string
	offset int64
}

var _ BootFS = (*FATFS)(nil)

// OpenFAT opens the FAT filesystem that starts offset bytes into image.
// It needs mtools.
func OpenFAT(image string, offset int64) (*FATFS, error) {
	if _, err := exec.LookPath("mcopy"); err != nil {
		return nil, errors.New("open FAT boot partition: mcopy not found: install mtools (apt-get install mtools)")
	}
	return &FATFS{image: image, offset: offset}, nil
}

func (f *FATFS) mtools(stdout *bytes.Buffer, args ...string) error {
	args = append([]string{"-i", fmt.Sprintf("%s@@%d", f.image, f.offset)}, args...)
	var stderr bytes.Buffer
	cmd := exec.Command("mcopy", args...)
	// The partition geometry of disk images rarely matches what mtools
	// expects of a floppy; that is fine.
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	cmd.Stderr = &stderr
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "not found") {
			return fmt.Errorf("%w: %s", fs.ErrNotExist, msg)
		}
		return fmt.Errorf("mcopy on %s: %w: %s", f.image, err, msg)
	}
	return nil
}

func checkFATName(name string) error {
	if name == "" || strings.ContainsAny(name, "/\\:*?\"<>|\x00\n") || strings.HasPrefix(name, ".") {
		return fmt.Errorf("boot partition file %q: only plain file names in the partition's root", name)
	}
	return nil
}

// ReadFile implements BootFS.
func (f *FATFS) ReadFile(name string) ([]byte, error) {
	if err := checkFATName(name); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := f.mtools(&out, "-n", "::/"+name, "-"); err != nil {
		return nil, fmt.Errorf("read boot partition %s: %w", name, err)
	}
	return out.Bytes(), nil
}

// WriteFile implements BootFS.
func (f *FATFS) WriteFile(name string, data []byte) error {
	if err := checkFATName(name); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "rpi-image-fat-")
	if err != nil {
		return fmt.Errorf("write boot partition %s: %w", name, err)
	}
	defer os.RemoveAll(dir)
	local := filepath.Join(dir, name)
	if err := os.WriteFile(local, data, 0o600); err != nil {
		return fmt.Errorf("write boot partition %s: %w", name, err)
	}
	if err := f.mtools(nil, "-o", "-n", local, "::/"+name); err != nil {
		return fmt.Errorf("write boot partition %s: %w", name, err)
	}
	return nil
}

// Package qemu boots the SD-card image on emulated ARM: a Raspberry-Pi-shaped
// arm64 base image built from Debian's packages (cached by content), cards
// written from one `rpi-image build` output, and qemu-system-aarch64 virtual
// machines that load kernel, initrd and command line from each card's own
// boot partition, as the Pi firmware does, on a bridge with a DHCP server the
// harness runs.
package qemu

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/rpi-cluster/rpi-cluster/e2e/vcluster"
)

// pibaseScript builds the base image; its text is part of the cache key.
//
//go:embed pibase.sh
var pibaseScript []byte

// BasePackages are the Debian arm64 packages of the base image: systemd as
// process 1 (with systemd-networkd as the DHCP client), udev, dbus for
// networkctl, the OpenSSH server and python3 that Ansible needs, sudo (the
// login user administers the node with it), the kernel and an initramfs,
// and the tools the boot uses (fsck of both partitions).
var BasePackages = []string{
	"dbus", "dosfstools", "e2fsprogs", "initramfs-tools", "iproute2", "kmod",
	"linux-image-arm64", "openssh-server", "procps", "python3", "sudo",
	"systemd", "systemd-sysv", "udev",
}

// BaseOptions say which base image to build.
type BaseOptions struct {
	// CacheDir holds the built images under pibase/ (see
	// vcluster.DefaultCacheDir). Required.
	CacheDir string
	// Mirror is the Debian mirror; empty: this machine's apt mirror.
	Mirror string
	// Suite is the Debian release; empty: vcluster.DefaultSuite.
	Suite string
	// Packages; nil: BasePackages.
	Packages []string
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

func (o *BaseOptions) defaults() error {
	if o.CacheDir == "" {
		return errors.New("pi base image: no cache directory")
	}
	if o.Suite == "" {
		o.Suite = vcluster.DefaultSuite
	}
	if o.Packages == nil {
		o.Packages = BasePackages
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Mirror == "" {
		m, err := vcluster.AptMirror("/etc/apt")
		if err != nil {
			return fmt.Errorf("pi base image: %w", err)
		}
		o.Mirror = m
	}
	return nil
}

// Key names a base image by everything that determines it: the build
// script, suite, mirror and package list.
func (o *BaseOptions) Key() string {
	pkgs := append([]string(nil), o.Packages...)
	sort.Strings(pkgs)
	h := sha256.New()
	fmt.Fprintf(h, "arch=arm64\nsuite=%s\nmirror=%s\npackages=%s\nscript=", o.Suite, o.Mirror, strings.Join(pkgs, ","))
	h.Write(pibaseScript)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// binfmtEntry is where binfmt_misc lists the emulator for arm64 binaries;
// the packages' maintainer scripts run under it while the base is built.
var binfmtEntry = "/proc/sys/fs/binfmt_misc/qemu-aarch64"

// EnsureBase returns the path of the cached base image for o, building it
// when missing (a few minutes: every package's maintainer script runs
// under qemu-user). A machine that built it once never builds it again
// until something that goes into it changes.
func EnsureBase(ctx context.Context, o BaseOptions) (string, error) {
	if err := o.defaults(); err != nil {
		return "", err
	}
	dir := filepath.Join(o.CacheDir, "pibase")
	path := filepath.Join(dir, "pibase-arm64-"+o.Suite+"-"+o.Key()+".img")
	if _, err := os.Stat(path); err == nil {
		o.Logger.Info("pi base image cached", "path", path)
		return path, nil
	}
	for _, tool := range []string{"mmdebstrap", "arch-test", "mkfs.vfat", "mcopy", "mke2fs", "sfdisk"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", fmt.Errorf("build pi base image: %s not found: apt-get install mmdebstrap arch-test dosfstools mtools e2fsprogs fdisk", tool)
		}
	}
	if os.Geteuid() != 0 {
		return "", errors.New("build pi base image: mmdebstrap needs root here: run as root")
	}
	if _, err := os.Stat(binfmtEntry); err != nil {
		return "", fmt.Errorf("build pi base image: binfmt_misc does not know qemu-aarch64 (%s missing), so arm64 maintainer scripts cannot run: run under scripts/with-binfmt.sh (apt-get install qemu-user-static)", binfmtEntry)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("build pi base image: %w", err)
	}
	script, err := os.CreateTemp(dir, "pibase-*.sh")
	if err != nil {
		return "", fmt.Errorf("build pi base image: %w", err)
	}
	defer os.Remove(script.Name())
	if _, err := script.Write(pibaseScript); err != nil {
		script.Close()
		return "", fmt.Errorf("build pi base image: %w", err)
	}
	script.Close()
	tmp := path + ".tmp"
	defer os.Remove(tmp)
	o.Logger.Info("building the pi base image with mmdebstrap (arm64, a few minutes)", "suite", o.Suite, "mirror", o.Mirror, "cache", path)
	start := time.Now()
	cmd := exec.CommandContext(ctx, "sh", append([]string{script.Name(), o.Mirror, o.Suite, tmp}, o.Packages...)...)
	var out tail
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build pi base image: %v\n%s", err, out.String())
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("build pi base image: %w", err)
	}
	o.Logger.Info("pi base image cached", "path", path, "took", time.Since(start).Round(time.Second))
	return path, nil
}

// tail keeps the last 16 KiB written to it: enough of a failed build's
// output to say why.
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if over := len(t.b) - 16<<10; over > 0 {
		t.b = t.b[over:]
	}
	return len(p), nil
}

func (t *tail) String() string { return string(t.b) }

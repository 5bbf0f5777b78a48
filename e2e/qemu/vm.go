package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// VMConfig says how to boot one card.
type VMConfig struct {
	// Name names the machine in errors and its files in Dir.
	Name string
	// Card is the card image the machine boots from (its virtio disk).
	Card string
	// MAC is the virtio NIC's address; Tap the host tap device it uses.
	MAC string
	Tap string
	// Dir holds the boot files read from the card and the console log.
	Dir string
	// MemoryMB is the machine's memory (default 768).
	MemoryMB int
}

// VM is one emulated Raspberry Pi: qemu-system-aarch64 -M virt with a
// Cortex-A53 under TCG (no KVM on an amd64 host), the card as a virtio
// disk, a virtio NIC on a tap, its serial console in a file.
type VM struct {
	cfg     VMConfig
	console string
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{}
	waitErr error
}

// Boot reads the boot files from the card's boot partition and starts the
// machine. The machine runs until it powers itself off, Kill is called or
// ctx ends.
func Boot(ctx context.Context, cfg VMConfig) (*VM, error) {
	if cfg.MemoryMB == 0 {
		cfg.MemoryMB = 768
	}
	if _, err := exec.LookPath("qemu-system-aarch64"); err != nil {
		return nil, errors.New("boot: qemu-system-aarch64 not found: apt-get install qemu-system-arm")
	}
	bootDir := filepath.Join(cfg.Dir, cfg.Name+"-boot")
	if err := os.MkdirAll(bootDir, 0o755); err != nil {
		return nil, fmt.Errorf("boot %s: %w", cfg.Name, err)
	}
	bf, err := ReadBootFiles(cfg.Card, bootDir)
	if err != nil {
		return nil, fmt.Errorf("boot %s: %w", cfg.Name, err)
	}
	v := &VM{cfg: cfg, console: filepath.Join(cfg.Dir, cfg.Name+"-console.log"), done: make(chan struct{})}
	// Each boot appends to the console log, as a screen shows every boot.
	args := []string{
		"-M", "virt", "-cpu", "cortex-a53", "-smp", "1", "-m", fmt.Sprint(cfg.MemoryMB),
		"-nodefaults", "-display", "none", "-no-reboot",
		"-kernel", bf.Kernel, "-append", bf.Cmdline,
		"-drive", "file=" + cfg.Card + ",format=raw,if=none,id=card,cache=unsafe",
		"-device", "virtio-blk-pci,drive=card",
		"-netdev", "tap,id=net0,ifname=" + cfg.Tap + ",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=net0,romfile=,mac=" + cfg.MAC,
		"-device", "virtio-rng-pci",
		"-chardev", "file,id=console,path=" + v.console + ",append=on",
		"-serial", "chardev:console",
	}
	if bf.Initrd != "" {
		args = append(args, "-initrd", bf.Initrd)
	}
	v.cmd = exec.CommandContext(ctx, "qemu-system-aarch64", args...)
	var stderr testutil.SyncBuffer
	v.cmd.Stderr = &stderr
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	v.started = time.Now()
	if err := v.cmd.Start(); err != nil {
		return nil, fmt.Errorf("boot %s: %w", cfg.Name, err)
	}
	go func() {
		err := v.cmd.Wait()
		if msg := strings.TrimSpace(stderr.String()); err != nil && msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		v.waitErr = err
		close(v.done)
	}()
	return v, nil
}

// Name is the machine's name.
func (v *VM) Name() string { return v.cfg.Name }

// MAC is the machine's NIC address.
func (v *VM) MAC() string { return v.cfg.MAC }

// Started is when qemu was started: power-on.
func (v *VM) Started() time.Time { return v.started }

// Kill cuts the power: qemu is killed, the guest gets no shutdown.
func (v *VM) Kill() {
	if v.cmd.Process != nil {
		_ = v.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-v.done
}

// WaitOff waits up to timeout for the machine to power itself off.
func (v *VM) WaitOff(timeout time.Duration) error {
	select {
	case <-v.done:
		return v.waitErr
	case <-time.After(timeout):
		return fmt.Errorf("%s still running %s after it was told to power off", v.cfg.Name, timeout)
	}
}

// Running reports whether qemu still runs.
func (v *VM) Running() bool {
	select {
	case <-v.done:
		return false
	default:
		return true
	}
}

// Console returns everything the machine printed on its serial console.
func (v *VM) Console() string {
	data, _ := os.ReadFile(v.console)
	return string(data)
}

// ConsoleTail returns the last n lines of the console, for failure messages.
func (v *VM) ConsoleTail(n int) string {
	lines := strings.Split(strings.TrimRight(v.Console(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitConsole waits up to timeout for the console to match re (after the
// first from bytes), failing early when qemu exits.
func (v *VM) WaitConsole(re *regexp.Regexp, from int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if c := v.Console(); len(c) > from && re.MatchString(c[from:]) {
			return nil
		}
		if !v.Running() {
			return fmt.Errorf("%s: qemu exited (%v) before its console showed %q; console:\n%s", v.cfg.Name, v.waitErr, re, v.ConsoleTail(30))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: console has not shown %q after %s; last lines:\n%s", v.cfg.Name, re, timeout, v.ConsoleTail(15))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

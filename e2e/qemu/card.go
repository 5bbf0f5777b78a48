package qemu

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/rpi-cluster/rpi-cluster/image"
)

// BootFiles are what the Raspberry Pi firmware loads from a card's boot
// partition: the kernel and initramfs that config.txt names, and the kernel
// command line in cmdline.txt.
type BootFiles struct {
	Kernel  string // a host file holding the kernel
	Initrd  string // a host file holding the initramfs; "" when none
	Cmdline string
}

// ReadBootFiles reads the boot files of the card image card into dir, as
// the Pi firmware would: config.txt's kernel= (default kernel8.img, the
// firmware's name for a 64-bit kernel) and initramfs lines, and
// cmdline.txt. Booting from what the card holds proves the card, not the
// harness, decides what boots.
func ReadBootFiles(card, dir string) (BootFiles, error) {
	f, err := os.Open(card)
	if err != nil {
		return BootFiles{}, fmt.Errorf("card: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return BootFiles{}, fmt.Errorf("card: %w", err)
	}
	layout, err := image.ReadLayout(f, info.Size(), card)
	if err != nil {
		return BootFiles{}, err
	}
	boot, err := image.OpenFAT(card, layout.Boot.Offset)
	if err != nil {
		return BootFiles{}, err
	}
	config, err := boot.ReadFile("config.txt")
	if err != nil {
		return BootFiles{}, fmt.Errorf("card %s: %w", card, err)
	}
	kernel, initrd := parseConfigTxt(config)
	cmdline, err := boot.ReadFile("cmdline.txt")
	if err != nil {
		return BootFiles{}, fmt.Errorf("card %s: %w", card, err)
	}
	bf := BootFiles{Cmdline: strings.TrimSpace(string(cmdline))}
	copyOut := func(name string) (string, error) {
		data, err := boot.ReadFile(name)
		if err != nil {
			return "", fmt.Errorf("card %s: config.txt names %s: %w", card, name, err)
		}
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, data, 0o644)
	}
	if bf.Kernel, err = copyOut(kernel); err != nil {
		return BootFiles{}, err
	}
	if initrd != "" {
		if bf.Initrd, err = copyOut(initrd); err != nil {
			return BootFiles{}, err
		}
	}
	return bf, nil
}

// parseConfigTxt returns the kernel and initramfs a config.txt names.
// Conditional sections ([pi4], [all]...) are not evaluated: the last
// setting wins, which is what a config.txt without sections means.
func parseConfigTxt(data []byte) (kernel, initrd string) {
	kernel = "kernel8.img"
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if v, ok := strings.CutPrefix(line, "kernel="); ok {
			kernel = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "initramfs "); ok {
			if f := strings.Fields(v); len(f) > 0 {
				initrd = f[0]
			}
		}
	}
	return kernel, initrd
}

// WriteCards copies the image src to n card files in dir (card1.img ...),
// keeping holes, and returns their paths: one image written to n SD cards.
func WriteCards(src, dir string, n int) ([]string, error) {
	var cards []string
	for i := 1; i <= n; i++ {
		dst := filepath.Join(dir, fmt.Sprintf("card%d.img", i))
		if err := copySparse(src, dst); err != nil {
			return nil, fmt.Errorf("write card %d: %w", i, err)
		}
		cards = append(cards, dst)
	}
	return cards, nil
}

// copySparse copies src to dst, seeking over zero blocks so that dst stays
// as sparse as an SD card image written with dd conv=sparse.
func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	var size int64
	for {
		n, rerr := io.ReadFull(in, buf)
		if n > 0 {
			if bytes.Equal(buf[:n], zero[:n]) {
				_, err = out.Seek(int64(n), io.SeekCurrent)
			} else {
				_, err = out.Write(buf[:n])
			}
			if err != nil {
				out.Close()
				return err
			}
			size += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			out.Close()
			return rerr
		}
	}
	if err := out.Truncate(size); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
